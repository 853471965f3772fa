"""The privacy rules without a server: approvals, validation, retries, verification,
the audit chain and the keys."""

from __future__ import annotations

import random
from datetime import datetime

import grpc
import pytest

from services.privacy import audit, domain
from services.privacy.domain import Actor
from services.privacy.settings import PrivacySettings
from services.privacy.vault import Vault
from services.runtime.errors import FailedPrecondition, InvalidArgument, PermissionDenied

DATAMAP = {
    "participants": {
        "billing": {
            "fields": [
                {
                    "message": "b.Card",
                    "store": "billing.card_payments",
                    "field": "account_id",
                    "personal": {"erasure": 3},
                },
                {
                    "message": "b.Card",
                    "store": "billing.card_payments",
                    "field": "customer_ref",
                    "personal": {"erasure": 3},
                },
                {
                    "message": "b.Usage",
                    "store": "billing.usage_records",
                    "field": "account_id",
                    "personal": {"erasure": 1},
                },
            ]
        }
    }
}


def test_a_staff_erasure_needs_a_second_different_member() -> None:
    staff = Actor("acct_a", staff=True)
    d = domain.draft(domain.ERASURE, staff, origin=domain.STAFF, reason="asked", identity_verification="call-back")
    assert d.needs_approval
    with pytest.raises(PermissionDenied):
        domain.check_approval(domain.ERASURE, domain.AWAITING_APPROVAL, "acct_a", staff, [])
    domain.check_approval(domain.ERASURE, domain.AWAITING_APPROVAL, "acct_a", Actor("operator", True), [])
    with pytest.raises(FailedPrecondition):
        domain.check_approval(domain.ERASURE, domain.RUNNING, "acct_a", Actor("operator", True), [])
    assert not domain.draft(domain.ERASURE, Actor("subject", False), origin=domain.SELF_SERVICE).needs_approval
    with pytest.raises(PermissionDenied):
        domain.check_subject(d, staff, "acct_a", 1)


def test_drafts_report_every_bad_field_at_once() -> None:
    with pytest.raises(InvalidArgument) as error:
        domain.draft(domain.RECTIFICATION, Actor("operator", True), origin=domain.STAFF, new_email="nope", dry_run=True)
    assert set(error.value.field_violations) == {"new_email", "dry_run", "identity_verification"}


def test_retry_policy_backs_off_with_jitter_and_gives_up_on_the_rest() -> None:
    rng = random.Random(7)
    delays = [domain.retry_delay(n, 0.5, 300, rng) for n in range(1, 12)]
    assert all(0.25 <= d <= 0.5 for d in delays[:1]) and all(d <= 300 for d in delays)
    assert delays[5] > delays[0] and max(delays) >= 150
    assert domain.retryable(grpc.StatusCode.UNAVAILABLE) and domain.retryable(grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert domain.retryable(grpc.StatusCode.DEADLINE_EXCEEDED)
    assert not domain.retryable(grpc.StatusCode.FAILED_PRECONDITION)


def test_verification_allows_only_legal_hold_records_P5_5() -> None:
    held = {"message": "b.Card", "data": {"account_id": "anon-1", "customer_ref": "anon-1", "amount_micros": "5"}}
    usage = {"message": "b.Usage", "data": {"account_id": "acct_1"}}
    unknown = {"message": "b.Other", "data": {"x": 1}}
    assert domain.findings(DATAMAP, "billing", [held]) == {}
    assert domain.findings(DATAMAP, "billing", [held, usage, unknown]) == {"billing.usage_records": 1, "b.Other": 1}
    assert "P5.5" in domain.legal_basis(DATAMAP, "billing", "billing.card_payments")


def test_the_audit_chain_breaks_at_any_edit_P6_3() -> None:
    events, prev = [], audit.GENESIS
    for seq in range(1, 5):
        body = audit.event_body(datetime(2026, 12, 2), f"pr_{seq}", "request_created", "operator", "subj-x", {"n": seq})
        digest = audit.chain_hash(prev, body)
        events.append((seq, prev, digest, body))
        prev = digest
    assert audit.verify_chain(events) == (True, 4, 0)
    edited = [*events[:2], (3, events[2][1], events[2][2], {**events[2][3], "actor": "someone"}), events[3]]
    assert audit.verify_chain(edited)[::2] == (False, 3)
    assert audit.verify_chain([events[0], events[2], events[3]])[::2] == (False, 3)


def test_exports_are_sealed_to_their_place_and_certificates_signed(tmp_path) -> None:
    vault = Vault.from_settings(PrivacySettings(data_dir=tmp_path))
    nonce, sealed = vault.seal(b'{"email":"a@example.com"}', "pr_1/auth/0")
    assert b"example" not in sealed
    assert vault.open(nonce, sealed, "pr_1/auth/0") == b'{"email":"a@example.com"}'
    with pytest.raises(Exception):  # noqa: B017 - cryptography's InvalidTag
        vault.open(nonce, sealed, "pr_1/auth/1")
    signature = vault.sign('{"a":1}')
    assert vault.verify('{"a":1}', signature) and not vault.verify('{"a":2}', signature)
    again = Vault.from_settings(PrivacySettings(data_dir=tmp_path))
    assert again.public_key == vault.public_key  # the local keys are made once
