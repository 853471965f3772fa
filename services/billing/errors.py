"""Billing's refusals, each built in one place so that the single and the batch paths (and
the SQL fast paths' callers) answer alike: same status, message, reason and field violations."""

from __future__ import annotations

from services.runtime.errors import AlreadyExists, FailedPrecondition, NotFound


class KeyTaken(Exception):
    """The idempotency key was stored by an earlier request: replay its result."""


class Overdraft(Exception):
    """A debit would take a per-person ledger account below zero."""

    def __init__(self, ledger_account: str) -> None:
        super().__init__(ledger_account)
        self.ledger_account = ledger_account


def insufficient_credit() -> FailedPrecondition:
    return FailedPrecondition("insufficient credit", reason="insufficient_credit", openai_code="insufficient_quota")


def key_spend_limit() -> FailedPrecondition:
    return FailedPrecondition(
        "the API key's spend limit is reached", reason="key_spend_limit", openai_code="insufficient_quota"
    )


def reused_key(scope: str) -> AlreadyExists:
    """An idempotency key already bound to other parameters."""
    return AlreadyExists(
        f"idempotency key already used for a different {scope} request",
        field_violations={"idempotency_key": "reuse a key only to retry the identical request"},
        reason="idempotency_key_reused",
    )


def no_such_hold() -> NotFound:
    return NotFound("no such hold", field_violations={"hold_id": "unknown"})


def hold_resolved(status: str) -> FailedPrecondition:
    return FailedPrecondition(f"the hold is already {status}", reason="hold_resolved")
