"""A JSON-RPC node over HTTP on tests/billing's real EVM (py-evm through eth-tester, the
`Chain` of test_chain.py), so that billing running as its own process can watch a chain.

The node answers through the tester provider's own middleware (JSON-RPC parameters in,
JSON-RPC shaped results out), so a `Web3(HTTPProvider(url))` in another process sees what
an in-process `Web3(EthereumTesterProvider())` sees. eth-tester is not thread-safe: the
server thread and the test's own transfers and mining share one lock (`pay`, `mine`)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from web3 import Web3
from web3.middleware import combine_middleware

from tests.billing.test_chain import Chain


class ChainNode:
    """`Chain` served at `url`; `pay` and `mine` act on it under the server's lock."""

    def __init__(self, chain: Chain, url: str, lock: threading.Lock) -> None:
        self.chain, self.url, self.lock = chain, url, lock

    @property
    def chain_id(self) -> int:
        with self.lock:
            return int(self.chain.w3.eth.chain_id)

    @property
    def token(self) -> str:
        return str(self.chain.token.address)

    def pay(self, to: str, amount: int) -> str:
        """Transfer `amount` base units of the token to `to`; the transaction hash (0x...)."""
        with self.lock:
            transfer = self.chain.token.functions.transfer(Web3.to_checksum_address(to), amount)
            return "0x" + bytes(transfer.transact({"from": self.chain.owner})).hex()

    def mine(self, n: int) -> None:
        with self.lock:
            self.chain.mine(n)


def _handler(chain: Chain, lock: threading.Lock) -> type[BaseHTTPRequestHandler]:
    provider = chain.w3.provider
    call = combine_middleware(
        middleware=tuple(provider._middleware),  # type: ignore[attr-defined]
        w3=chain.w3,
        provider_request_fn=provider.make_request,
    )

    def answer(request: dict[str, Any]) -> dict[str, Any]:
        with lock:
            reply = dict(call(request["method"], request.get("params", [])))
        reply["id"] = request.get("id")
        return reply

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            replies = [answer(r) for r in body] if isinstance(body, list) else answer(body)
            data = Web3.to_json(replies).encode()  # type: ignore[arg-type]
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args: Any) -> None:
            """Quiet: the watcher polls several times a second."""

    return Handler


@contextmanager
def chain_node() -> Iterator[ChainNode]:
    """A fresh chain with the test ERC-20 deployed, served on a free loopback port."""
    chain, lock = Chain(), threading.Lock()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(chain, lock))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ChainNode(chain, f"http://127.0.0.1:{server.server_address[1]}", lock)
    finally:
        server.shutdown()
        server.server_close()
