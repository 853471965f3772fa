"""A proxy that dies after answering, before billing confirmed the settle: the call is still
billed, exactly once, by the next proxy replaying the settle outbox in Redis.

The proxy reaches billing, and Redis, through TCP relays that the test can cut or pause, so
that the settle demonstrably never reached billing before the crash, and so that the
instant between the answer's last byte and the outbox write can be held open: a proxy
killed right after a complete answer must still have the settle in its outbox."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis import Redis

from services.proxy.outbox import OUTBOX_KEY
from tests.support import REDIS_PROXY, REDIS_SERVER, create_database, drop_database, free_port, service_process

from .mesh import Mesh, User, chat_body, cost, sse_payloads, start_mesh

pytestmark = pytest.mark.e2e


class Relay:
    """A TCP relay to `target` on its own thread; `cut()` silently drops all traffic after it;
    `pause()` holds traffic (in both directions) until `resume()`."""

    def __init__(self, target: str) -> None:
        self.host, port = target.rsplit(":", 1)
        self.target_port = int(port)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.cut_off = False
        self.flowing = asyncio.Event()
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait(10)

    def cut(self) -> None:
        self.cut_off = True

    def pause(self) -> None:
        self._on_loop(self.flowing.clear)

    def resume(self) -> None:
        self._on_loop(self.flowing.set)

    def _on_loop(self, action: Callable[[], None]) -> None:
        async def run() -> None:
            action()

        asyncio.run_coroutine_threadsafe(run(), self.loop).result(5)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.flowing.set()
        server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", self.port))
        ready.set()
        self.loop.run_until_complete(server.serve_forever())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            await self.flowing.wait()
            if not self.cut_off:
                writer.write(data)
                await writer.drain()
        writer.close()


@dataclass
class CrashMesh:
    mesh: Mesh
    stack: ExitStack
    billing: Relay  # between the proxy and billing
    redis: Relay  # between the proxy and Redis (the outbox)


@pytest.fixture
def crash_mesh(tmp_path: Path, upstreams: Callable[[str], str]) -> Iterator[CrashMesh]:
    loop = asyncio.new_event_loop()
    urls = {name: loop.run_until_complete(create_database(f"crash_{name}")) for name in ("auth", "billing", "proxy")}
    Redis.from_url(REDIS_PROXY).flushdb()
    billing_port = free_port()
    relay = Relay(f"127.0.0.1:{billing_port}")
    redis_relay = Relay(REDIS_SERVER.removeprefix("redis://").split("/")[0])
    proxy_env = {
        "GATEMESH_PROXY_OUTBOX_STALE_S": "1",
        "GATEMESH_BILLING_ADDR": relay.address,
        "GATEMESH_REDIS_URL": f"redis://{redis_relay.address}/{REDIS_PROXY.rsplit('/', 1)[1]}",
        "GATEMESH_PROXY_OUTBOX_WRITE_TIMEOUT_S": "30",
    }
    try:
        with ExitStack() as stack:
            mesh = start_mesh(stack, tmp_path, urls, upstreams, proxy_env=proxy_env, billing_port=billing_port)
            yield CrashMesh(mesh, stack, relay, redis_relay)
    finally:
        for url in urls.values():
            loop.run_until_complete(drop_database(url))
        loop.close()


async def wait_for_hold(user: User) -> None:
    for _ in range(200):  # the hold is placed; the upstream is still thinking
        if (await user.balance())[1] > 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("no hold was placed")


def restart_proxy(crash: CrashMesh, tmp_path: Path) -> None:
    """A new proxy, straight to billing and Redis, that replays the dead one's outbox."""
    mesh = crash.mesh
    env = {**mesh.envs["proxy"], "GATEMESH_BILLING_ADDR": mesh.billing_addr, "GATEMESH_REDIS_URL": REDIS_PROXY}
    crash.stack.enter_context(service_process("services.proxy", env, mesh.proxy_addr, tmp_path / "proxy2.log"))


async def test_settle_of_a_crashed_proxy_is_replayed_and_charged_once(crash_mesh: CrashMesh, tmp_path: Path) -> None:
    mesh, relay = crash_mesh.mesh, crash_mesh.billing
    user = await mesh.user()
    before, _ = await user.balance()
    call = asyncio.create_task(user.chat(chat_body(max_tokens=50, fake_mode="slow", fake_delay_ms=1500)))
    await wait_for_hold(user)
    relay.cut()  # from here on nothing the proxy sends reaches billing
    (message,) = await call
    usage = json.loads(message.data)["usage"]
    redis = Redis.from_url(REDIS_PROXY)
    for _ in range(100):  # the background settle writes its outbox entry, then waits on billing
        if redis.hlen(OUTBOX_KEY):
            break
        await asyncio.sleep(0.02)
    os.kill(mesh.pids["proxy"], signal.SIGKILL)
    await asyncio.sleep(0.5)
    assert (await user.balance())[1] > 0  # nobody settled it: the hold is still open
    assert redis.hlen(OUTBOX_KEY) == 1

    restart_proxy(crash_mesh, tmp_path)
    expected = cost(usage["prompt_tokens"], usage["completion_tokens"])
    assert before - await user.settled_balance(polls=200) == expected
    (record,) = await user.usage()
    assert (record.input_tokens, record.output_tokens, record.cost_micros) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
        expected,
    )
    assert redis.hlen(OUTBOX_KEY) == 0


@pytest.mark.parametrize(
    ("stream", "mode"), [(False, "slow"), (True, "slow"), (True, "slow,one_read")], ids=["json", "stream", "one_read"]
)
async def test_an_answer_completes_only_once_its_settle_is_in_the_outbox(
    crash_mesh: CrashMesh, tmp_path: Path, stream: bool, mode: str
) -> None:
    """The proxy is killed the moment the client has the whole answer (the JSON body, or
    the stream's [DONE], also when the upstream's whole stream arrived in one read) while
    its Redis connection is held: the settle must already be stored, so the next proxy
    bills the call exactly once."""
    mesh = crash_mesh.mesh
    user = await mesh.user()
    before, _ = await user.balance()
    body = chat_body(max_tokens=50, fake_mode=mode, fake_delay_ms=150 if stream else 1000, stream=stream)
    if stream:
        body["stream_options"] = {"include_usage": True}
    call = asyncio.create_task(user.chat(body))
    await wait_for_hold(user)
    crash_mesh.billing.cut()  # the settle can only be billed through the outbox
    crash_mesh.redis.pause()  # the outbox write cannot complete for now
    done, _ = await asyncio.wait({call}, timeout=2.5)
    answered_while_paused = bool(done)
    if not answered_while_paused:
        crash_mesh.redis.resume()
        await call
    os.kill(mesh.pids["proxy"], signal.SIGKILL)  # right after the client had the whole answer
    crash_mesh.redis.cut()
    crash_mesh.redis.resume()
    messages = call.result()
    if stream:
        payloads = sse_payloads(messages)
        assert payloads[-1] == "[DONE]"
        usage = next(p["usage"] for p in payloads if isinstance(p, dict) and p.get("usage"))
    else:
        usage = json.loads(messages[0].data)["usage"]

    restart_proxy(crash_mesh, tmp_path)
    expected = cost(usage["prompt_tokens"], usage["completion_tokens"])
    assert before - await user.settled_balance(polls=200) == expected
    assert [r.cost_micros for r in await user.usage()] == [expected]
    assert not answered_while_paused  # the answer waited for the outbox write
