"""Idempotency keys stored per account fit the idempotency column (200 characters) whatever
the caller's key (schemathesis found a 200-character key making a redemption a 500)."""

from __future__ import annotations

from services.billing.model import MAX_KEY_LEN, scoped_key


def test_short_keys_are_kept_as_they_are() -> None:
    assert scoped_key("acct_1", "k-1") == "acct_1:k-1"


def test_long_keys_fit_the_column_and_stay_distinct() -> None:
    account = "a" * 64
    first, second = scoped_key(account, "x" * MAX_KEY_LEN), scoped_key(account, "x" * (MAX_KEY_LEN - 1) + "y")
    assert len(first) <= MAX_KEY_LEN and len(second) <= MAX_KEY_LEN
    assert first != second and first.startswith(f"{account}:sha256:")
    assert scoped_key(account, "x" * MAX_KEY_LEN) == first  # the same key maps to the same row
