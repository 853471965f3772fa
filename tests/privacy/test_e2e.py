"""The issue's end-to-end case through the edge: `gatemesh up` as a process (auth, billing,
proxy, privacy and Envoy) on PostgreSQL and Redis. An account with a key makes chat calls
through the edge, tops up by card (a signed processor webhook through the edge) and on
chain (an ERC-20 transfer to its deposit address on a real EVM, tests/billing/chain_node.py,
that billing's own chain watcher credits after its confirmations); its self-service export
holds all of it; a staff erasure approved by a second member makes the key refused at the
edge, leaves both payments pseudonymized under legal hold (P5.5), and yields a certificate
that lists both, verifies through the edge's admin route and fails once tampered with."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from services.runtime.settings import GatemeshSettings
from tests.billing.chain_node import ChainNode, chain_node
from tests.billing.stripe_standin import WEBHOOK_SECRET, completed, event, processor, sign
from tests.billing.test_chain import MNEMONIC
from tests.e2e import edge_mesh
from tests.e2e.edge_mesh import MODEL, PASSWORD, POLICY, Mesh
from tests.privacy.mesh import FAST
from tests.proxy.mesh import table_dump
from tests.support import create_database, drop_database

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mesh, object, ChainNode]]:
    """`gatemesh up` with privacy on PostgreSQL and exposed at the edge, cards enabled, and
    billing watching a chain (two confirmations, scanned five times a second)."""
    tmp = tmp_path_factory.mktemp("privacy_e2e")
    privacy_db = asyncio.run(create_database("e2e_privacy"))
    original, wait_line = edge_mesh.mesh_env, edge_mesh.wait_for_line

    def patient(path: Path, needle: str, process: object, timeout: float = 300) -> None:
        """Five services and Envoy on two shared cores may need more than 90 s to start."""
        wait_line(path, needle, process, timeout=max(timeout, 300))  # type: ignore[arg-type]

    def env_with_privacy(*args: object) -> dict[str, str]:
        env = original(*args)  # type: ignore[arg-type]
        env.update(FAST)
        env.update(
            {
                "GATEMESH_PRIVACY_DATABASE_URL": privacy_db,
                "GATEMESH_EDGE_SERVICES": json.dumps(["auth", "billing", "proxy", "privacy"]),
                "GATEMESH_BILLING_STRIPE_API_KEY": "sk_test_standin",
                "GATEMESH_BILLING_STRIPE_API_BASE": api_base,
                "GATEMESH_BILLING_STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
                "GATEMESH_BILLING_DEPOSIT_MNEMONIC": MNEMONIC,
                "GATEMESH_BILLING_CHAIN_RPC_URL": node.url,
                "GATEMESH_BILLING_CHAIN_ID": str(node.chain_id),
                "GATEMESH_BILLING_CHAIN_CONFIRMATIONS": "2",
                "GATEMESH_BILLING_CHAIN_POLL_S": "0.2",
                "GATEMESH_BILLING_CHAIN_TOKENS": json.dumps(
                    [{"symbol": "USDC", "contract": node.token, "decimals": 6}]
                ),
            }
        )
        return env

    try:
        with processor() as (api_base, standin), chain_node() as node:
            edge_mesh.mesh_env = env_with_privacy  # type: ignore[assignment]
            edge_mesh.wait_for_line = patient  # type: ignore[assignment]
            try:
                with edge_mesh.running_mesh(tmp) as running:
                    running.databases["privacy"] = privacy_db
                    yield running, standin, node
            finally:
                edge_mesh.mesh_env, edge_mesh.wait_for_line = original, wait_line  # type: ignore[assignment]
    finally:
        asyncio.run(drop_database(privacy_db))


def ok(reply: httpx.Response) -> dict:
    assert reply.status_code == 200, reply.text
    return reply.json()


def wait_balance(client: httpx.Client, headers: dict[str, str], micros: int) -> None:
    """Until the available balance is `micros` (the chain watcher credits asynchronously)."""
    for _ in range(300):
        if int(ok(client.get("/api/v1/balance", headers=headers))["balance_micros"]) == micros:
            return
        time.sleep(0.1)
    raise AssertionError(f"the balance never reached {micros}: {ok(client.get('/api/v1/balance', headers=headers))}")


def wait_logged(running: Mesh, account_id: str, calls: int) -> None:
    """Until the proxy's request log holds `calls` rows of the account (written after each settle)."""
    query = f"SELECT count(*) AS n FROM request_log WHERE account_id = '{account_id}'"
    for _ in range(300):
        if asyncio.run(_rows(running.databases["proxy"], query))[0]["n"] == calls:
            return
        time.sleep(0.1)
    raise AssertionError(f"the request log never held {calls} calls")


def wait_done(client: httpx.Client, path: str, headers: dict[str, str]) -> dict:
    for _ in range(600):
        request = ok(client.get(path, headers=headers))["request"]
        if request["status"] in ("REQUEST_STATUS_COMPLETED", "REQUEST_STATUS_NEEDS_ATTENTION"):
            return request
        time.sleep(0.1)
    raise AssertionError(f"{path} did not finish")


def test_export_erase_certificate_through_the_edge_P8_1_P8_3_P5_5_P8_5(mesh) -> None:
    running, standin, node = mesh
    admin = GatemeshSettings(data_dir=Path(running.env["GATEMESH_DATA_DIR"])).secret("admin_token")
    operator = {"authorization": f"Bearer {admin}"}
    email = f"e2e-{secrets.token_hex(4)}@example.com"
    with httpx.Client(base_url=running.url, timeout=30) as client:
        signup = {"email": email, "password": PASSWORD, "age_attested": True, "accepted_policy_version": POLICY}
        account_id = ok(client.post("/api/v1/accounts", json=signup))["account"]["account_id"]
        session = ok(client.post("/api/v1/sessions", json={"email": email, "password": PASSWORD}))["session_token"]
        user = {"authorization": f"Bearer {session}"}
        api_key = ok(client.post("/api/v1/keys", json={"name": "e2e"}, headers=user))["api_key"]
        key = {"authorization": f"Bearer {api_key}"}

        top_up = {"amount_micros": 20_000_000, "success_url": "https://example.com/ok",
                  "cancel_url": "https://example.com/no", "idempotency_key": secrets.token_hex(8)}  # fmt: skip
        checkout = ok(client.post("/api/v1/topups/card", json=top_up, headers=user))
        session_obj = standin.sessions[checkout["session_id"]]
        payload = event(f"evt_{secrets.token_hex(4)}", "checkout.session.completed", completed(session_obj))
        hook = client.post("/api/v1/webhooks/stripe", content=payload, headers={"stripe-signature": sign(payload)})
        assert hook.status_code == 200, hook.text
        address = ok(client.get("/api/v1/topups/crypto/address", headers=user))["address"]
        tx_hash = node.pay(address, 7_000_000)  # 7 USDC, 6 decimals
        node.mine(1)  # its block and one on top: two confirmations
        wait_balance(client, user, 27_000_000)  # the card's 20 and the chain's 7

        chat = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}]}
        for _ in range(2):
            assert client.post("/v1/chat/completions", json=chat, headers=key).status_code == 200
        wait_logged(running, account_id, 2)  # a call is logged once settled, after its answer

        raised = ok(client.post("/api/v1/privacy/requests", json={"type": "REQUEST_TYPE_ACCESS"}, headers=user))
        rid = raised["request"]["request_id"]
        assert wait_done(client, f"/api/v1/privacy/requests/{rid}", user)["status"] == "REQUEST_STATUS_COMPLETED"
        export = client.get(f"/api/v1/privacy/requests/{rid}/export", headers=user)
        assert export.status_code == 200, export.text
        text = export.text
        document = json.loads(text)
        assert email in text and address.lower() in text.lower() and tx_hash.lower() in text.lower()
        messages = [r["message"] for part in document["services"].values() for r in part["records"]]
        assert messages.count("gatemesh.proxy.v1.RequestLogRecord") == 2
        assert "gatemesh.billing.v1.CardPaymentRecord" in messages
        assert "gatemesh.billing.v1.DepositAddressRecord" in messages
        assert messages.count("gatemesh.billing.v1.ChainDepositRecord") == 1
        assert "gatemesh.auth.v1.ApiKeyRecord" in messages

        mine = ok(client.get("/api/v1/privacy/requests", headers=user))["requests"]
        assert [r["request_id"] for r in mine] == [rid]
        assert client.get("/api/v1/admin/privacy/requests", headers=user).status_code == 403
        subject = {"email": email}
        body = {"type": "REQUEST_TYPE_ERASURE", "subject": subject, "reason": "asked by email",
                "identity_verification": "reply from the account's address"}  # fmt: skip
        staff_email = f"staff-{secrets.token_hex(4)}@example.com"
        running.cli(
            "accounts",
            "create",
            "--email",
            staff_email,
            "--password-stdin",
            "--role",
            "compliance",
            stdin=PASSWORD + "\n",
        )
        staff_token = ok(client.post("/api/v1/sessions", json={"email": staff_email, "password": PASSWORD}))
        staff = {"authorization": f"Bearer {staff_token['session_token']}"}
        malformed = client.post(
            "/api/v1/admin/privacy/requests", json={**body, "subject": {"email": "not an email"}}, headers=staff
        )
        assert malformed.status_code == 400 and "subject.email" in malformed.json()["error"]["message"], malformed.text
        unknown = client.get("/api/v1/admin/privacy/requests/pr_000000000000000000000000", headers=staff)
        assert unknown.status_code == 404 and "no such request" in unknown.json()["error"]["message"], unknown.text
        erasure = ok(client.post("/api/v1/admin/privacy/requests", json=body, headers=staff))["request"]
        assert erasure["status"] == "REQUEST_STATUS_AWAITING_APPROVAL"
        eid = erasure["request_id"]
        own = client.post(f"/api/v1/admin/privacy/requests/{eid}/approve", json={}, headers=staff)
        assert own.status_code == 403 and "cannot approve" in own.json()["error"]["message"]
        ok(client.post(f"/api/v1/admin/privacy/requests/{eid}/approve", json={}, headers=operator))
        done = wait_done(client, f"/api/v1/admin/privacy/requests/{eid}", operator)
        assert done["status"] == "REQUEST_STATUS_COMPLETED", done

        refused = client.post("/v1/chat/completions", json=chat, headers=key)
        assert refused.status_code == 401
        gone = client.get(f"/api/v1/privacy/requests/{rid}/export", headers=user)
        assert gone.status_code == 401  # the session ended with the account

        cert = ok(client.get(f"/api/v1/admin/privacy/requests/{eid}/certificate", headers=operator))["certificate"]
        check = {"document": cert["document"], "signature": cert["signature"]}
        assert ok(client.post("/api/v1/admin/privacy/certificates:verify", json=check, headers=operator))["valid"]
        tampered = {**check, "document": cert["document"].replace('"delete"', '"anonymize"', 1)}
        assert not ok(client.post("/api/v1/admin/privacy/certificates:verify", json=tampered, headers=operator)).get(
            "valid"
        )
        certificate = json.loads(cert["document"])
        billing = next(s for s in certificate["services"] if s["service"] == "billing")
        retained = {e["store"]: e for e in billing["retained"]}
        assert retained["billing.card_payments"]["count"] == 1
        assert retained["billing.chain_deposits"]["count"] == 1
        for store in ("billing.card_payments", "billing.chain_deposits"):
            assert "P5.5" in retained[store]["legal_basis"], store
        assert all(s["records_left_for_subject"] == 0 for s in certificate["services"])
        assert certificate["privacy"]["erased"]["privacy.privacy_exports"] >= 1, "the earlier export is deleted"
        assert "vacuumed" in certificate["storage"]["privacy"]

    steps = running.receiver.wait_for(
        lambda sp: sp.service == "gatemesh-privacy" and attribute(sp, "privacy.request_id") == eid
    )
    time.sleep(1.0)  # the last spans of the run are exported in the next batch
    steps = [sp for sp in running.receiver.snapshot() if attribute(sp, "privacy.request_id") == eid]
    assert sorted(sp.name.split()[0] for sp in steps) == ["privacy.erase"] * 3 + ["privacy.verify"] * 3
    traces = {sp.trace_id for sp in steps}
    assert len(traces) == 1, "one trace per request run"
    calls = [sp for sp in running.receiver.snapshot() if sp.trace_id in traces and "PrivacyParticipant/" in sp.name]
    assert sum("EraseSubject" in sp.name for sp in calls if sp.service == "gatemesh-privacy") == 3
    served = {sp.service for sp in calls if "EraseSubject" in sp.name and sp.service != "gatemesh-privacy"}
    assert served == {"gatemesh-auth", "gatemesh-billing", "gatemesh-proxy"}, "participants join the trace"
    assert not running.receiver.contains(email)

    dump = asyncio.run(running.table_dump())
    assert email not in dump
    billing_rows = asyncio.run(_rows(running.databases["billing"], "SELECT account_id, amount FROM card_payments"))
    assert [r["account_id"].startswith("anon-") for r in billing_rows] == [True]
    assert billing_rows[0]["amount"] == 20_000_000
    deposits = asyncio.run(
        _rows(running.databases["billing"], "SELECT account_id, amount_micros, tx_hash, status FROM chain_deposits")
    )
    assert [(d["account_id"][:5], d["amount_micros"], d["tx_hash"], d["status"]) for d in deposits] == [
        ("anon-", 7_000_000, tx_hash, "credited")
    ], "the on-chain payment stays, pseudonymized under legal hold (P5.5)"
    assert account_id not in asyncio.run(_rows_text(running.databases["privacy"]))
    assert asyncio.run(_rows(running.databases["privacy"], "SELECT request_id FROM privacy_exports")) == []


def attribute(span: object, key: str) -> str:
    for item in span.span.attributes:  # type: ignore[attr-defined]
        if item.key == key:
            return item.value.string_value
    return ""


async def _rows(url: str, sql: str) -> list[dict]:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return [dict(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


async def _rows_text(url: str) -> str:
    return await table_dump(url)
