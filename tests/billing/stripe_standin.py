"""A local stand-in for the card processor's API (checkout session creation only), and
webhook signing exactly as the processor does it: `Stripe-Signature: t=<unix>,v1=<hex
HMAC-SHA256(secret, f"{t}.{payload}")>`."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

WEBHOOK_SECRET = "whsec_test_secret"


class StandIn:
    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self.idempotency_keys: list[str] = []
        self.sessions: dict[str, dict[str, Any]] = {}


@contextmanager
def processor() -> Iterator[tuple[str, StandIn]]:
    state = StandIn()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            form = dict(parse_qsl(body))
            if self.path != "/v1/checkout/sessions" or not self.headers.get("Authorization", "").startswith("Bearer "):
                self.send_response(404)
                self.end_headers()
                return
            state.requests.append(form)
            state.idempotency_keys.append(self.headers.get("Idempotency-Key", ""))
            session_id = f"cs_test_{len(state.requests)}"
            session = {
                "id": session_id,
                "object": "checkout.session",
                "url": f"https://checkout.example/{session_id}",
                "amount_total": int(form["line_items[0][price_data][unit_amount]"]),
                "currency": "usd",
                "metadata": {k[9:-1]: v for k, v in form.items() if k.startswith("metadata[")},
                "payment_status": "unpaid",
            }
            state.sessions[session_id] = session
            payload = json.dumps(session).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()


def sign(payload: bytes, secret: str = WEBHOOK_SECRET, at: int | None = None) -> str:
    t = int(time.time()) if at is None else at
    digest = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def event(event_id: str, kind: str, obj: dict[str, Any]) -> bytes:
    return json.dumps(
        {"id": event_id, "object": "event", "type": kind, "api_version": "2024-06-20", "data": {"object": obj}}
    ).encode()


def completed(session: dict[str, Any], intent: str = "pi_1") -> dict[str, Any]:
    return {**session, "payment_status": "paid", "status": "complete", "payment_intent": intent, "customer": "cus_1"}


def refunded(session: dict[str, Any], cents: int, intent: str = "pi_1") -> dict[str, Any]:
    return {
        "id": "ch_1",
        "object": "charge",
        "payment_intent": intent,
        "amount": session["amount_total"],
        "amount_refunded": cents,
        "metadata": session["metadata"],
    }
