"""Credit in and out of wallets: grants, top-ups (cards, chain and codes call `credit`), refunds.

A credit moves an amount from a system source (`system:grants`, `system:topup_card`, ...)
into the account's wallet; a refund reverses (part of) such a top-up into `system:refunds`,
never more than is left of it and never below a zero wallet.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from services.runtime.errors import FailedPrecondition, NotFound, Violations
from services.runtime.money import format_usd

from .errors import Overdraft
from .model import MAX_MICROS, TransferResult, check_account, check_amount, check_key, new_id, system, wallet
from .ports import Storage, Transaction

TOPUP_KINDS = frozenset({"grant", "topup_card", "topup_crypto", "redeem"})


class Credits:
    def __init__(self, storage: Storage, clock: Callable[[], datetime]) -> None:
        self.storage = storage
        self.clock = clock

    async def grant(self, account_id: str, amount: int, reason: str, idempotency_key: str) -> TransferResult:
        v = Violations()
        check_account(v, account_id)
        check_amount(v, amount)
        check_key(v, idempotency_key)
        v.check(len(reason) <= 200, "reason", "at most 200 characters")
        v.raise_if_any()
        params = {"account": account_id, "amount": amount, "reason": reason}
        async with self.storage.begin() as tx:
            first = await tx.claim_key("grant", idempotency_key, params)
            if first is not None:
                return TransferResult(**first)
            result = await self.credit(tx, account_id, amount, "grant", "grants", reason)
            await tx.finish_key("grant", idempotency_key, vars(result))
            return result

    async def credit(
        self, tx: Transaction, account_id: str, amount: int, kind: str, source: str, reference: str
    ) -> TransferResult:
        """Move `amount` from a system source into the account's wallet (inside `tx`)."""
        transfer_id = new_id()
        legs = [(system(source), -amount), (wallet(account_id), amount)]
        after = await tx.post_transfer(transfer_id, kind, account_id, legs, reference, amount, self.clock())
        return TransferResult(transfer_id, after[wallet(account_id)], amount)

    async def debit(
        self, tx: Transaction, account_id: str, amount: int, kind: str, sink: str, reference: str
    ) -> TransferResult:
        """Move `amount` out of the wallet to a system account; Overdraft when short."""
        transfer_id = new_id()
        legs = [(wallet(account_id), -amount), (system(sink), amount)]
        after = await tx.post_transfer(transfer_id, kind, account_id, legs, reference, amount, self.clock())
        return TransferResult(transfer_id, after[wallet(account_id)], amount)

    async def refund(self, transfer_id: str, amount: int, reason: str, idempotency_key: str) -> TransferResult:
        """Reverse (part of) a top-up: wallet -> refunds. amount 0: all that is left."""
        v = Violations()
        v.check(bool(transfer_id), "transfer_id", "required")
        v.check(0 <= amount <= MAX_MICROS, "amount_micros", "must not be negative (0: the whole remainder)")
        check_key(v, idempotency_key)
        v.check(len(reason) <= 200, "reason", "at most 200 characters")
        v.raise_if_any()
        params = {"transfer": transfer_id, "amount": amount, "reason": reason}
        async with self.storage.begin() as tx:
            first = await tx.claim_key("refund", idempotency_key, params)
            if first is not None:
                return TransferResult(**first)
            result = await self.refund_in(tx, transfer_id, amount)
            await tx.finish_key("refund", idempotency_key, vars(result))
            return result

    async def refund_in(self, tx: Transaction, transfer_id: str, amount: int) -> TransferResult:
        """Refund inside `tx` (the card webhook's own transaction calls it too)."""
        original = await tx.topup_for_update(transfer_id)
        if original is None or original.kind not in TOPUP_KINDS:
            raise NotFound("no such top-up transfer", field_violations={"transfer_id": "not a top-up"})
        left = original.amount - await tx.refunded(transfer_id)
        amount = amount or left
        if amount <= 0 or amount > left:
            raise FailedPrecondition(
                f"only {format_usd(left)} USD of this top-up is left to refund", reason="refund_exceeds"
            )
        try:
            return await self.debit(tx, original.account_id, amount, "refund", "refunds", transfer_id)
        except Overdraft:
            raise FailedPrecondition(
                "the account's available balance is below the refund", reason="insufficient_credit"
            ) from None
