"""Secrets and content found nowhere (P3.2, P6.2): canaries driven through every path of
the whole mesh (auth, billing, proxy, privacy and the edge, as real processes), then looked
for in every row of every table of every service database (each row cast to text, in
every schema), every key and value in Redis, every log line the processes wrote (at
DEBUG), every file under the data directory, and every byte of every exported span
(names, attributes, events).

The canaries, fresh each run: a prompt (a system message and an earlier turn) and a
completion (the fake upstream echoes the last user message), as JSON, streamed and as an
embeddings input; the account's password, its new password after a change and a wrong
password tried at sign-in; the session token; the API key and the key it was rotated to;
the card processor's API key and webhook signing secret (a checkout paid by a signed
webhook, and a webhook with a forged signature); a redemption code, redeemed; the deposit
mnemonic (a deposit address derived from it); the operator and service credentials, the
API-key HMAC secret and privacy's export and certificate-signing keys. A privacy export of the
account is made and downloaded too.

The scan proves it sees: the account's email is in auth's tables, the key's public prefix
in its key rows, the trace id in the exported spans and the account id in the logs.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from collections.abc import Iterator

import httpx
import pytest
from bip_utils import Bip39MnemonicGenerator, Bip39WordsNum

from gatemesh.billing.v1 import billing_pb2, billing_pb2_grpc
from tests.billing.stripe_standin import StandIn, completed, event, processor, sign
from tests.reliability.full_mesh import MESH, OPERATOR, FullMesh, full_mesh
from tests.reliability.harness import ADMIN_TOKEN, SERVICE_TOKEN
from tests.reliability.results import Row, record
from tests.reliability.scan import everything, where

pytestmark = pytest.mark.e2e

RUN = secrets.token_hex(6)
CANARIES = {
    "prompt": f"CANARYprompt{RUN}",
    "completion": f"CANARYcompletion{RUN}",
    "embedded": f"CANARYembedded{RUN}",
    "password": f"CANARY password {RUN}",
    "new password": f"CANARY new password {RUN}",
    "wrong password": f"CANARY wrong password {RUN}",
    "webhook secret": f"whsec_CANARY{RUN}",
    "card api key": f"sk_test_CANARY{RUN}",
    "mnemonic": str(Bip39MnemonicGenerator().FromWordsNumber(Bip39WordsNum.WORDS_NUM_12)),
    "admin token": ADMIN_TOKEN,
    "service token": SERVICE_TOKEN,
    "key hmac secret": f"CANARYhmac{RUN}",
    "export key": base64.b64encode(secrets.token_bytes(32)).decode(),
    "signing key": base64.b64encode(secrets.token_bytes(32)).decode(),
}
POLICY = "2026-11-01"
MODEL, EMBED = "gm-test", "gm-embed"
SPAN_SERVICES = {"gatemesh-edge", "gatemesh-auth", "gatemesh-billing", "gatemesh-proxy", "gatemesh-privacy"}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FullMesh, StandIn]]:
    with processor() as (api_base, standin):
        extra = {
            "GATEMESH_BILLING_STRIPE_API_KEY": CANARIES["card api key"],
            "GATEMESH_BILLING_STRIPE_API_BASE": api_base,
            "GATEMESH_BILLING_STRIPE_WEBHOOK_SECRET": CANARIES["webhook secret"],
            "GATEMESH_BILLING_DEPOSIT_MNEMONIC": CANARIES["mnemonic"],
            "GATEMESH_KEY_HMAC_SECRET": CANARIES["key hmac secret"],
            "GATEMESH_PRIVACY_EXPORT_KEY": CANARIES["export key"],
            "GATEMESH_PRIVACY_SIGNING_KEY": CANARIES["signing key"],
            "GATEMESH_BILLING_CHAIN_TOKENS": '[{"symbol": "USDC", "contract": "0x' + "ab" * 20 + '", "decimals": 6}]',
        }
        with full_mesh(tmp_path_factory.mktemp("canaries"), extra) as running:
            yield running, standin


async def create_codes(mesh: FullMesh, request: billing_pb2.CreateCodesRequest) -> billing_pb2.CreateCodesResponse:
    async with mesh.channel("billing") as channel:
        return await billing_pb2_grpc.BillingServiceStub(channel).CreateCodes(request, metadata=OPERATOR)


def ok(reply: httpx.Response) -> dict:
    assert reply.status_code == 200, reply.text
    return reply.json()


def bearer(credential: str) -> dict[str, str]:
    return {"authorization": f"Bearer {credential}"}


class Journey:
    """One person's whole use of the mesh through the edge, canaries everywhere."""

    def __init__(self, mesh: FullMesh, standin: StandIn, client: httpx.Client) -> None:
        self.mesh, self.standin, self.client = mesh, standin, client
        self.email = f"canary-{RUN}@example.com"
        self.trace_id = secrets.token_hex(16)
        self.found: dict[str, str] = {}  # secrets the mesh handed out: session tokens, API keys

    def run(self) -> None:
        self.account()
        self.keys()
        self.card_top_up()
        self.redeem_code()
        self.deposit_address()
        self.calls()
        self.privacy_export()

    def account(self) -> None:
        signup = {
            "email": self.email,
            "password": CANARIES["password"],
            "age_attested": True,
            "accepted_policy_version": POLICY,
        }
        self.account_id = ok(self.client.post("/api/v1/accounts", json=signup))["account"]["account_id"]
        self.session = self.sign_in(CANARIES["password"])
        change = {"current_password": CANARIES["password"], "new_password": CANARIES["new password"]}
        ok(self.client.post("/api/v1/me/password", json=change, headers=bearer(self.session)))
        wrong = self.client.post("/api/v1/sessions", json={"email": self.email, "password": CANARIES["wrong password"]})
        assert wrong.status_code == 401, wrong.text
        self.session = self.sign_in(CANARIES["new password"])

    def sign_in(self, password: str) -> str:
        token = ok(self.client.post("/api/v1/sessions", json={"email": self.email, "password": password}))
        self.found[f"session {len(self.found)}"] = token["session_token"]
        return token["session_token"]

    def keys(self) -> None:
        made = ok(self.client.post("/api/v1/keys", json={"name": "canary"}, headers=bearer(self.session)))
        self.found["api key"] = made["api_key"]
        self.key_prefix = made["key"]["prefix"]
        rotated = ok(
            self.client.post(f"/api/v1/keys/{made['key']['key_id']}/rotate", json={}, headers=bearer(self.session))
        )
        self.api_key = self.found["rotated api key"] = rotated["api_key"]
        refused = self.client.get("/v1/models", headers=bearer(made["api_key"]))
        assert refused.status_code == 401, refused.text  # the old key was revoked by the rotation

    def card_top_up(self) -> None:
        top_up = {
            "amount_micros": 20_000_000,
            "success_url": "https://example.com/ok",
            "cancel_url": "https://example.com/no",
            "idempotency_key": secrets.token_hex(8),
        }
        checkout = ok(self.client.post("/api/v1/topups/card", json=top_up, headers=bearer(self.session)))
        paid = completed(self.standin.sessions[checkout["session_id"]])
        payload = event(f"evt_{secrets.token_hex(4)}", "checkout.session.completed", paid)
        forged = sign(payload, secret="whsec_forged")
        assert (
            self.client.post(
                "/api/v1/webhooks/stripe", content=payload, headers={"stripe-signature": forged}
            ).status_code
            == 400
        )
        signature = sign(payload, secret=CANARIES["webhook secret"])
        ok(self.client.post("/api/v1/webhooks/stripe", content=payload, headers={"stripe-signature": signature}))
        assert int(ok(self.client.get("/api/v1/balance", headers=bearer(self.api_key)))["balance_micros"]) > 0

    def redeem_code(self) -> None:
        """A redemption code (a bearer secret: billing keeps only its keyed hash) made by the
        operator and redeemed by the person."""
        made = billing_pb2.CreateCodesRequest(amount_micros=1_000_000, count=1, idempotency_key=secrets.token_hex(8))
        code = asyncio.run(create_codes(self.mesh, made)).codes[0]
        self.found["redemption code"] = code
        self.found["redemption code body"] = code.replace("-", "").removeprefix("GM")
        redeem = {"code": code, "idempotency_key": secrets.token_hex(8)}
        ok(self.client.post("/api/v1/codes/redeem", json=redeem, headers=bearer(self.session)))

    def deposit_address(self) -> None:
        address = ok(self.client.get("/api/v1/topups/crypto/address", headers=bearer(self.session)))["address"]
        assert address.startswith("0x")

    def calls(self) -> None:
        messages = [
            {"role": "system", "content": f"keep this to yourself: {CANARIES['prompt']}"},
            {"role": "user", "content": f"earlier turn {CANARIES['prompt']}"},
            {"role": "user", "content": f"repeat {CANARIES['completion']}"},
        ]
        headers = {**bearer(self.api_key), "traceparent": f"00-{self.trace_id}-{secrets.token_hex(8)}-01"}
        body = {"model": MODEL, "messages": messages, "fake_mode": "echo"}
        answer = ok(self.client.post("/v1/chat/completions", json=body, headers=headers))
        assert CANARIES["completion"] in answer["choices"][0]["message"]["content"]
        streamed = self.client.post("/v1/chat/completions", json={**body, "stream": True}, headers=headers)
        assert streamed.status_code == 200 and CANARIES["completion"] in streamed.text
        embedded = {"model": EMBED, "input": [f"embed {CANARIES['embedded']}"]}
        ok(self.client.post("/v1/embeddings", json=embedded, headers=headers))

    def privacy_export(self) -> None:
        raised = self.client.post(
            "/api/v1/privacy/requests", json={"type": "REQUEST_TYPE_ACCESS"}, headers=bearer(self.session)
        )
        request_id = ok(raised)["request"]["request_id"]
        for _ in range(600):
            status = ok(self.client.get(f"/api/v1/privacy/requests/{request_id}", headers=bearer(self.session)))
            if status["request"]["status"] == "REQUEST_STATUS_COMPLETED":
                break
            time.sleep(0.1)
        export = self.client.get(f"/api/v1/privacy/requests/{request_id}/export", headers=bearer(self.session))
        assert export.status_code == 200 and self.email in export.text, export.text[:300]


def wait_for_spans(mesh: FullMesh, trace_id: str) -> None:
    """Until every service has exported spans and the edge has exported our trace (Envoy
    flushes every 5 s), then a little longer for the last batches."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        spans = mesh.receiver.snapshot()
        services = {span.service for span in spans}
        if services >= SPAN_SERVICES and any(s.service == "gatemesh-edge" and s.trace_id == trace_id for s in spans):
            break
        time.sleep(0.2)
    time.sleep(1.5)


def test_canaries_are_found_in_no_table_log_file_or_span_p3_2_p6_2(mesh: tuple[FullMesh, StandIn]) -> None:
    running, standin = mesh
    with httpx.Client(base_url=running.url, timeout=60) as client:
        journey = Journey(running, standin, client)
        journey.run()
    wait_for_spans(running, journey.trace_id)
    texts = everything(running)
    tables = sum(1 for name in texts if name.startswith(tuple(f"{s} " for s in running.databases)))
    canaries = {**CANARIES, **journey.found}
    leaks = {name: where(value, texts) for name, value in canaries.items()}
    leaks = {name: places for name, places in leaks.items() if places}
    record(
        Row(
            f"canaries: {len(canaries)} secrets in {tables} tables, Redis, logs, spans",
            inputs=len(canaries),
            checks=len(canaries),
            passed=len(canaries) - len(leaks),
        )
    )
    assert not leaks, leaks
    # The scan sees what it scans: things that belong there are found.
    assert where(journey.email, {k: v for k, v in texts.items() if k.startswith("auth ")})
    assert where(journey.key_prefix, {k: v for k, v in texts.items() if k.startswith("auth ")})
    assert journey.trace_id in {span.trace_id for span in running.receiver.snapshot()}
    assert {span.service for span in running.receiver.snapshot()} >= SPAN_SERVICES
    assert where(journey.account_id, {k: v for k, v in texts.items() if k.endswith(".log")})
    assert all(running.logs[name].stat().st_size > 0 for name in MESH)  # DEBUG: every service wrote
