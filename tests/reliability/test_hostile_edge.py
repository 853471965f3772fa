"""Hostile clients at the real edge (`gatemesh up`: Envoy, auth, billing, proxy on
PostgreSQL and Redis): oversized bodies, deeply nested JSON, invalid UTF-8, huge headers,
slow clients (slowloris, trickled bodies) and floods of idle connections are refused or
timed out early, in OpenAI's error shape with the right status, write nothing, and never
keep a normal client waiting. Then the gRPC ports themselves, which trust no edge: an
oversized message and oversized metadata are refused and the service goes on serving.

The edge runs with short timeouts (`edge_request_headers_timeout_s` and the others in
`services/edge/settings.py`) so that each refusal happens within the test's seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest

from gatemesh.auth.v1 import auth_pb2, auth_pb2_grpc
from services.edge.config import DRAIN_S
from tests.e2e.edge_mesh import MODEL, Mesh, User, running_mesh
from tests.edge.edge_support import running_edge
from tests.reliability.results import Row, record
from tests.support import free_port

pytestmark = pytest.mark.e2e

BODY_LIMIT = 1024 * 1024
HEADERS_KB, HEADERS_MAX = 16, 60
HEADERS_TIMEOUT_S, REQUEST_TIMEOUT_S, IDLE_TIMEOUT_S = 1.0, 3.0, 2.0
GRPC_HANDSHAKE_S, GRPC_IDLE_S = 1.0, 2.0
# A normal call during a flood must come back within this (it takes ~10 ms alone).
PROMPT_S = 1.0
LIMITS = {
    "GATEMESH_EDGE_MAX_REQUEST_BODY_BYTES": str(BODY_LIMIT),
    "GATEMESH_EDGE_MAX_REQUEST_HEADERS_KB": str(HEADERS_KB),
    "GATEMESH_EDGE_MAX_REQUEST_HEADERS": str(HEADERS_MAX),
    "GATEMESH_EDGE_REQUEST_HEADERS_TIMEOUT_S": str(HEADERS_TIMEOUT_S),
    "GATEMESH_EDGE_REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S),
    "GATEMESH_EDGE_IDLE_TIMEOUT_S": str(IDLE_TIMEOUT_S),
    "GATEMESH_GRPC_HANDSHAKE_TIMEOUT_S": str(GRPC_HANDSHAKE_S),
    "GATEMESH_GRPC_MAX_CONNECTION_IDLE_S": str(GRPC_IDLE_S),
}


@dataclass
class Hostile:
    mesh: Mesh
    user: User
    host: str
    port: int

    @property
    def url(self) -> str:
        return self.mesh.url

    def chat(self, content: bytes, **headers: str) -> httpx.Response:
        merged = {"authorization": f"Bearer {self.user.api_key}", "content-type": "application/json", **headers}
        return httpx.post(f"{self.url}/v1/chat/completions", content=content, headers=merged, timeout=30)

    def normal_call_s(self) -> float:
        """Seconds a well-behaved client's `GET /v1/models` takes (asserting it succeeds)."""
        started = time.monotonic()
        reply = httpx.get(f"{self.url}/v1/models", headers={"authorization": f"Bearer {self.user.api_key}"})
        assert reply.status_code == 200, reply.text
        return time.monotonic() - started

    def connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    with running_mesh(tmp_path_factory.mktemp("hostile-edge"), LIMITS) as mesh:
        user = mesh.rest_user(credit_micros=10_000_000)
        yield Hostile(mesh, user, "127.0.0.1", int(mesh.env["GATEMESH_EDGE_PORT"]))


def assert_openai_error(reply: httpx.Response, status: int) -> dict[str, object]:
    """The documented error shape, and no gRPC header leaking through."""
    assert reply.status_code == status, (reply.status_code, reply.text[:500])
    assert reply.headers["content-type"].startswith("application/json"), reply.headers
    error = reply.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    assert not any(name.startswith(("grpc-", "gm-")) for name in reply.headers), reply.headers
    return error


def raw_reply(sock: socket.socket, within: float) -> bytes:
    """Everything the edge sends on `sock` until it closes it (or `within` seconds pass)."""
    sock.settimeout(within)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        return data + b"<still open>"
    except ConnectionResetError:
        return data + b"<reset>"
    return data


def account_count(mesh: Mesh) -> int:
    return asyncio.run(mesh.table_dump()).count("'email_hash'")


def test_oversized_bodies_are_413_and_write_nothing(hostile: Hostile) -> None:
    before = asyncio.run(hostile.mesh.table_dump())
    big = b'{"model": "' + MODEL.encode() + b'", "messages": [{"role": "user", "content": "' + b"x" * (2 * BODY_LIMIT)
    error = assert_openai_error(hostile.chat(big + b'"}]}'), 413)
    assert error["code"] == "request_too_large"
    account = b'{"email": "' + b"a" * (2 * BODY_LIMIT) + b'@example.com", "password": "correct horse battery"}'
    reply = httpx.post(f"{hostile.url}/api/v1/accounts", content=account, headers={"content-type": "application/json"})
    assert_openai_error(reply, 413)
    assert asyncio.run(hostile.mesh.table_dump()) == before
    record(Row("hostile edge: oversized bodies (413)", inputs=2, checks=3, passed=3))


def test_deeply_nested_json_is_a_400_not_a_crash(hostile: Hostile) -> None:
    """Nesting past any parser's recursion limit: the proxy's raw body and the transcoded
    /api routes alike answer 400 in OpenAI's shape, and the services keep serving."""
    depth = 100_000
    nested = b"[" * depth + b"]" * depth
    inputs = [
        b'{"model": "' + MODEL.encode() + b'", "messages": ' + nested + b"}",
        b'{"model": "'
        + MODEL.encode()
        + b'", "messages": [{"role": "user", "content": "hi", "x": '
        + b'{"a":' * depth
        + b"1"
        + b"}" * depth
        + b"}]}",
    ]
    for body in inputs:
        assert_openai_error(hostile.chat(body), 400)
    reply = httpx.post(f"{hostile.url}/api/v1/sessions", content=b'{"email": ' + nested + b"}", timeout=30)
    assert_openai_error(reply, 400)
    assert hostile.normal_call_s() < PROMPT_S
    record(Row("hostile edge: JSON nested 100,000 deep (400)", inputs=3, checks=4, passed=4))


def test_invalid_utf8_in_bodies_and_headers_is_refused_cleanly(hostile: Hostile) -> None:
    before = asyncio.run(hostile.mesh.table_dump())
    chat = b'{"model": "' + MODEL.encode() + b'", "messages": [{"role": "user", "content": "caf\xc3\x28 \xff"}]}'
    assert_openai_error(hostile.chat(chat), 400)
    sign_up = (
        b'{"email": "\xff\xfe@example.com", "password": "correct horse \xc0\xaf battery", "age_attested": true,'
        b' "accepted_policy_version": "2026-11-01"}'
    )
    reply = httpx.post(f"{hostile.url}/api/v1/accounts", content=sign_up, headers={"content-type": "application/json"})
    assert_openai_error(reply, 400)
    bad_key = httpx.get(f"{hostile.url}/v1/models", headers={"authorization": b"Bearer gm-\xff\xfe\x80"})
    assert_openai_error(bad_key, 401)
    bad_other = httpx.get(
        f"{hostile.url}/api/v1/balance",
        headers={"authorization": f"Bearer {hostile.user.api_key}", "x-note": b"\xc3\x28\xff"},
    )
    assert bad_other.status_code == 200, bad_other.text
    assert asyncio.run(hostile.mesh.table_dump()) == before
    record(Row("hostile edge: invalid UTF-8 in bodies and headers", inputs=4, checks=5, passed=5))


def test_huge_headers_are_431(hostile: Hostile) -> None:
    auth = {"authorization": f"Bearer {hostile.user.api_key}"}
    one_big = httpx.get(f"{hostile.url}/v1/models", headers={**auth, "x-big": "b" * (HEADERS_KB * 1024 * 2)})
    error = assert_openai_error(one_big, 431)
    assert error["code"] == "request_headers_too_large"
    many = {f"x-h{i}": "v" for i in range(HEADERS_MAX + 20)}
    assert_openai_error(httpx.get(f"{hostile.url}/v1/models", headers={**auth, **many}), 431)
    big_key = httpx.get(f"{hostile.url}/v1/models", headers={"authorization": "Bearer " + "k" * (HEADERS_KB * 2048)})
    assert_openai_error(big_key, 431)
    # Within the limits, a call with many ordinary headers is served.
    fine = {f"x-h{i}": "v" for i in range(HEADERS_MAX // 2)}
    assert httpx.get(f"{hostile.url}/v1/models", headers={**auth, **fine}).status_code == 200
    record(Row("hostile edge: huge and too many headers (431)", inputs=4, checks=4, passed=4))


def test_headers_grpc_cannot_carry_or_that_are_the_meshs_own_are_dropped(hostile: Hostile) -> None:
    """HTTP allows header names gRPC metadata does not (`a*b`), `-bin` headers must be
    base64, `grpc-timeout` must parse: forwarded, each made the service refuse the whole
    call (a 500). They mean nothing to the API, so the edge drops them, with the mesh's own
    `x-gatemesh-*` (the service credential's header)."""
    auth = {"authorization": f"Bearer {hostile.user.api_key}"}
    hostile_headers = [
        {"a*b": "x"},
        {"q~z": "t"},
        {"dn3prov$4": ")li"},
        {"x-note-bin": "!!! not base64"},
        {"grpc-timeout": "abc"},
        {"grpc-timeout": "1n"},
        {"x-gatemesh-service-token": "guess"},
    ]
    for extra in hostile_headers:
        served = httpx.get(f"{hostile.url}/api/v1/balance", headers={**auth, **extra})
        assert served.status_code == 200, (extra, served.text)
        refused = httpx.get(f"{hostile.url}/api/v1/me", headers=extra)
        assert_openai_error(refused, 401)
    record(Row("hostile edge: headers gRPC cannot carry", inputs=len(hostile_headers) * 2, checks=14, passed=14))


class Flood:
    """Connections held open by a background thread: each sends `step`, then a byte of
    `trickle` every `every` seconds (slowloris), or nothing at all (idle). Records when the
    edge closed each one and what it answered first."""

    def __init__(self, hostile: Hostile, count: int, step: bytes, trickle: bytes = b"", every: float = 0.2) -> None:
        self.socks = [hostile.connect() for _ in range(count)]
        self.trickle, self.every = trickle, every
        self.closed_after: list[float] = []
        self.received = {sock: b"" for sock in self.socks}
        self.started = time.monotonic()
        self.stop = threading.Event()
        for sock in self.socks:
            if step:
                sock.sendall(step)
            sock.setblocking(False)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def replies(self) -> list[bytes]:
        return [data for data in self.received.values() if data]

    def _run(self) -> None:
        open_socks, position = list(self.socks), 0
        while open_socks and not self.stop.is_set():
            for sock in list(open_socks):
                if self.trickle:
                    with contextlib.suppress(OSError):
                        sock.send(self.trickle[position % len(self.trickle) :][:1])
                if self._closed(sock):
                    open_socks.remove(sock)
                    self.closed_after.append(time.monotonic() - self.started)
            position += 1
            self.stop.wait(self.every)

    def _closed(self, sock: socket.socket) -> bool:
        while True:
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                return False
            except OSError:
                return True
            if not chunk:
                return True
            self.received[sock] += chunk

    def wait_closed(self, within: float) -> None:
        deadline = time.monotonic() + within
        while len(self.closed_after) < len(self.socks) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.stop.set()
        self.thread.join(timeout=5)
        for sock in self.socks:
            sock.close()


def calls_during(hostile: Hostile, seconds: float) -> list[float]:
    """Normal calls, one after another, for `seconds`: how long each took."""
    deadline = time.monotonic() + seconds
    taken = []
    while time.monotonic() < deadline:
        taken.append(hostile.normal_call_s())
    return taken


def test_slowloris_headers_are_timed_out_and_others_are_served(hostile: Hostile) -> None:
    count = 200
    trickle = b"x-slow: " + b"a" * 1000
    flood = Flood(hostile, count, b"GET /v1/models HTTP/1.1\r\nHost: edge\r\n", trickle, every=0.1)
    taken = calls_during(hostile, HEADERS_TIMEOUT_S * 0.8)
    flood.wait_closed(HEADERS_TIMEOUT_S + 5)
    assert len(flood.closed_after) == count, f"{count - len(flood.closed_after)} slow clients still connected"
    assert max(flood.closed_after) < HEADERS_TIMEOUT_S + 2.5, max(flood.closed_after)
    assert max(taken) < PROMPT_S, taken
    timed_out = [reply for reply in flood.replies if reply.startswith(b"HTTP/1.1 408")]
    assert timed_out, flood.replies[:3]
    for reply in timed_out:
        assert b'"type":"api_error"' in reply and b'"code":"timeout"' in reply, reply
    record(
        Row(
            f"hostile edge: slowloris, {count} clients trickling headers",
            calls=len(taken),
            inputs=count,
            checks=3,
            passed=3,
        )
    )
    print(f"slowloris: normal call median {statistics.median(taken) * 1000:.1f} ms, max {max(taken) * 1000:.1f} ms")


def test_a_trickled_body_is_408_after_the_request_timeout(hostile: Hostile) -> None:
    head = (
        b"POST /api/v1/sessions HTTP/1.1\r\nHost: edge\r\ncontent-type: application/json\r\n"
        b"content-length: 100000\r\n\r\n"
    )
    flood = Flood(hostile, 50, head, b'{"email": "slow', every=0.2)
    taken = calls_during(hostile, 1.0)
    flood.wait_closed(REQUEST_TIMEOUT_S + 5)
    assert len(flood.closed_after) == 50
    assert max(flood.closed_after) < REQUEST_TIMEOUT_S + 2.5, max(flood.closed_after)
    assert all(reply.startswith(b"HTTP/1.1 408") for reply in flood.replies), flood.replies[:3]
    assert b'"code":"timeout"' in flood.replies[0]
    assert max(taken) < PROMPT_S, taken
    record(Row("hostile edge: 50 bodies trickled (408)", calls=len(taken), inputs=50, checks=3, passed=3))


def test_idle_connections_are_closed_and_do_not_starve_others(hostile: Hostile) -> None:
    count = 500
    flood = Flood(hostile, count, b"", every=0.1)
    taken = calls_during(hostile, 1.0)
    flood.wait_closed(IDLE_TIMEOUT_S + 5)
    assert len(flood.closed_after) == count
    assert max(flood.closed_after) < IDLE_TIMEOUT_S + 2.5, max(flood.closed_after)
    assert min(flood.closed_after) > IDLE_TIMEOUT_S * 0.5
    assert max(taken) < PROMPT_S, taken
    # A kept-alive connection that finished its request is closed after the same time.
    sock = hostile.connect()
    sock.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: edge\r\n\r\n")
    started = time.monotonic()
    assert raw_reply(sock, IDLE_TIMEOUT_S + 3).startswith(b"HTTP/1.1 200")
    # Closed after idle_timeout, the drain (DRAIN_S) and Envoy's 1 s delayed close.
    assert time.monotonic() - started < IDLE_TIMEOUT_S + DRAIN_S + 2
    sock.close()
    record(Row(f"hostile edge: {count} idle connections", calls=len(taken), inputs=count, checks=4, passed=4))


def test_grpc_ports_refuse_oversized_messages_and_metadata_and_keep_serving(hostile: Hostile) -> None:
    """Straight at auth's gRPC port: a message over grpc_max_message_bytes and metadata over
    grpc_max_metadata_bytes are refused with RESOURCE_EXHAUSTED (never INTERNAL), and the
    next ordinary call on a fresh channel succeeds."""
    address = hostile.mesh.env["GATEMESH_AUTH_ADDR"]
    outcomes = []
    with grpc.insecure_channel(address, options=[("grpc.max_send_message_length", -1)]) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        huge = auth_pb2.SignInRequest(email="a@example.com", password="p" * (17 * 1024 * 1024))
        with pytest.raises(grpc.RpcError) as caught:
            stub.SignIn(huge, timeout=30)
        outcomes.append(caught.value.code())
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetMe(auth_pb2.GetMeRequest(), metadata=[("authorization", "Bearer " + "m" * 64 * 1024)], timeout=30)
        outcomes.append(caught.value.code())
    assert outcomes == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2, outcomes
    with grpc.insecure_channel(address) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            auth_pb2_grpc.AuthServiceStub(channel).GetMe(auth_pb2.GetMeRequest(), timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert hostile.normal_call_s() < PROMPT_S
    record(Row("hostile gRPC port: 17 MiB message, 64 KiB metadata", inputs=2, checks=3, passed=3))


def grpc_call_s(address: str) -> float:
    """Seconds an ordinary call to auth's gRPC port takes on a fresh channel (refused for
    want of a credential: the answer, not the credential, is what is timed)."""
    started = time.monotonic()
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as caught:
        auth_pb2_grpc.AuthServiceStub(channel).GetMe(auth_pb2.GetMeRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    return time.monotonic() - started


def test_grpc_ports_close_silent_and_idle_connections_without_starving_calls(hostile: Hostile) -> None:
    """Straight at auth's gRPC port: 300 connections that never start HTTP/2 are closed
    after grpc_handshake_timeout_s, 50 that finish the handshake and then call nothing are
    sent away after grpc_max_connection_idle_s, and ordinary calls meanwhile are prompt."""
    address = hostile.mesh.env["GATEMESH_AUTH_ADDR"]
    host, port = address.rsplit(":", 1)
    target = Hostile(hostile.mesh, hostile.user, host, int(port))
    silent = Flood(target, 300, b"", every=0.1)
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    idle = Flood(target, 50, preface, every=0.1)
    taken = []
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        taken.append(grpc_call_s(address))
    silent.wait_closed(GRPC_HANDSHAKE_S + 5)
    idle.wait_closed(GRPC_IDLE_S + 5)
    assert len(silent.closed_after) == 300, len(silent.closed_after)
    assert max(silent.closed_after) < GRPC_HANDSHAKE_S + 2.5, max(silent.closed_after)
    assert len(idle.closed_after) == 50, len(idle.closed_after)
    assert max(idle.closed_after) < GRPC_IDLE_S + 2.5, max(idle.closed_after)
    assert max(taken) < PROMPT_S, taken
    assert hostile.normal_call_s() < PROMPT_S  # the mesh's own channels reconnected
    record(Row("hostile gRPC port: 300 silent, 50 idle connections", calls=len(taken), inputs=350, checks=5, passed=5))


def test_connections_past_the_limit_are_refused_and_the_edge_recovers(hostile: Hostile, tmp_path: Path) -> None:
    """A second edge on the same services with edge_max_connections=30: 30 idle clients
    fill it, the next connection is closed at once without an answer (the process does not
    run out of descriptors), and when idle_timeout has sent the idle ones away a new client
    is served."""
    limit, port = 30, free_port()
    env = {
        **hostile.mesh.env,
        "GATEMESH_DATA_DIR": str(tmp_path / "data"),
        "GATEMESH_EDGE_PORT": str(port),
        "GATEMESH_EDGE_ADMIN_PORT": "0",
        "GATEMESH_EDGE_METRICS_PORT": "0",
        "GATEMESH_EDGE_MAX_CONNECTIONS": str(limit),
    }
    url = f"http://127.0.0.1:{port}"
    with running_edge(env, url, tmp_path / "edge.log", ["auth", "billing", "proxy"]):
        limited = Hostile(hostile.mesh, hostile.user, "127.0.0.1", port)
        flood = Flood(limited, limit, b"", every=0.1)
        time.sleep(0.3)
        extra = limited.connect()
        extra.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: edge\r\n\r\n")
        assert raw_reply(extra, 3) in (b"", b"<reset>")
        extra.close()
        flood.wait_closed(IDLE_TIMEOUT_S + 5)
        assert len(flood.closed_after) == limit
        reply = httpx.get(f"{url}/v1/models", headers={"authorization": f"Bearer {hostile.user.api_key}"})
        assert reply.status_code == 200, reply.text
    record(Row(f"hostile edge: connections past a limit of {limit}", inputs=limit + 1, checks=3, passed=3))
