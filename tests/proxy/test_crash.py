"""A proxy that dies after answering, before billing confirmed the settle: the call is still
billed, exactly once, by the next proxy replaying the settle outbox in Redis.

The proxy reaches billing through a TCP relay that the test can cut, so that the settle
demonstrably never reached billing before the crash."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from redis import Redis

from services.proxy.outbox import OUTBOX_KEY
from tests.support import REDIS_SERVER, create_database, drop_database, free_port, service_process

from .mesh import Mesh, chat_body, cost, start_mesh

pytestmark = pytest.mark.e2e


class Relay:
    """A TCP relay to `target` on its own thread; `cut()` silently drops all traffic after it."""

    def __init__(self, target: str) -> None:
        self.host, port = target.rsplit(":", 1)
        self.target_port = int(port)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.cut_off = False
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait(10)

    def cut(self) -> None:
        self.cut_off = True

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", self.port))
        ready.set()
        self.loop.run_until_complete(server.serve_forever())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if not self.cut_off:
                writer.write(data)
                await writer.drain()
        writer.close()


@pytest.fixture
def crash_mesh(tmp_path: Path, upstreams: Callable[[str], str]) -> Iterator[tuple[Mesh, ExitStack, Relay]]:
    loop = asyncio.new_event_loop()
    urls = {name: loop.run_until_complete(create_database(f"crash_{name}")) for name in ("auth", "billing", "proxy")}
    Redis.from_url(f"{REDIS_SERVER}/11").flushdb()
    billing_port = free_port()
    relay = Relay(f"127.0.0.1:{billing_port}")
    proxy_env = {"GATEMESH_PROXY_OUTBOX_STALE_S": "1", "GATEMESH_BILLING_ADDR": relay.address}
    try:
        with ExitStack() as stack:
            mesh = start_mesh(stack, tmp_path, urls, upstreams, proxy_env=proxy_env, billing_port=billing_port)
            yield mesh, stack, relay
    finally:
        for url in urls.values():
            loop.run_until_complete(drop_database(url))
        loop.close()


async def test_settle_of_a_crashed_proxy_is_replayed_and_charged_once(
    crash_mesh: tuple[Mesh, ExitStack, Relay], tmp_path: Path
) -> None:
    mesh, stack, relay = crash_mesh
    user = await mesh.user()
    before, _ = await user.balance()
    call = asyncio.create_task(user.chat(chat_body(max_tokens=50, fake_mode="slow", fake_delay_ms=1500)))
    for _ in range(200):  # the hold is placed; the upstream is still thinking
        if (await user.balance())[1] > 0:
            break
        await asyncio.sleep(0.02)
    relay.cut()  # from here on nothing the proxy sends reaches billing
    (message,) = await call
    usage = json.loads(message.data)["usage"]
    redis = Redis.from_url(f"{REDIS_SERVER}/11")
    for _ in range(100):  # the background settle writes its outbox entry, then waits on billing
        if redis.hlen(OUTBOX_KEY):
            break
        await asyncio.sleep(0.02)
    os.kill(mesh.pids["proxy"], signal.SIGKILL)
    await asyncio.sleep(0.5)
    assert (await user.balance())[1] > 0  # nobody settled it: the hold is still open
    assert redis.hlen(OUTBOX_KEY) == 1

    env = {**mesh.envs["proxy"], "GATEMESH_BILLING_ADDR": mesh.billing_addr}
    stack.enter_context(service_process("services.proxy", env, mesh.proxy_addr, tmp_path / "proxy2.log"))
    expected = cost(usage["prompt_tokens"], usage["completion_tokens"])
    assert before - await user.settled_balance(polls=200) == expected
    (record,) = await user.usage()
    assert (record.input_tokens, record.output_tokens, record.cost_micros) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
        expected,
    )
    assert redis.hlen(OUTBOX_KEY) == 0
