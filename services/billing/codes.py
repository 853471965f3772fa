"""Redemption codes: batches of single-use codes that credit a wallet once.

A code is `GM-XXXXX-XXXXX-XXXXX-XXXXX` (100 random-looking bits, base32), derived as
HMAC(server secret, batch id, index): only keyed hashes are stored, and a retry of the same
batch (same idempotency key) returns the same codes again. Redeeming is one conditional
update of the code's row, so a code redeems once under any concurrency.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable
from datetime import UTC, datetime

from services.runtime.errors import FailedPrecondition, NotFound, Violations

from .credits import Credits
from .model import CodesResult, TransferResult, check_account, check_amount, check_key, naive, new_id, scoped_key
from .ports import Storage

CODE_ALPHABET = re.compile(r"^[A-Z2-7]{20}$")


def code_body(code: str) -> str | None:
    """The 20 characters of a code as a person may type it (any case, dashes, spaces, with
    or without `GM`), or None when it is no code."""
    body = re.sub(r"[\s-]", "", code.upper())
    if body.startswith("GM") and len(body) == 22:
        body = body[2:]
    return body if CODE_ALPHABET.match(body) else None


class Codes:
    def __init__(self, storage: Storage, secret: str, clock: Callable[[], datetime], credits: Credits) -> None:
        self.storage = storage
        self._secret = secret.encode()
        self.clock = clock
        self.credits = credits

    def _code(self, batch_id: str, index: int) -> str:
        digest = hmac.new(self._secret, f"gatemesh-code:{batch_id}:{index}".encode(), hashlib.sha256).digest()
        body = base64.b32encode(digest).decode()[:20]
        return "GM-" + "-".join(body[i : i + 5] for i in range(0, 20, 5))

    def code_hash(self, body: str) -> str:
        return hmac.new(self._secret, f"gatemesh-code-hash:{body}".encode(), hashlib.sha256).hexdigest()

    async def create_codes(
        self, amount: int, count: int, expires_at: datetime | None, idempotency_key: str
    ) -> CodesResult:
        """A batch of single-use codes. Only their keyed hashes are stored; the codes are
        derived from the batch id with the server secret, so a retry returns them again."""
        v = Violations()
        check_amount(v, amount)
        v.check(0 < count <= 10_000, "count", "must be between 1 and 10000")
        v.check(expires_at is None or expires_at > self.clock().replace(tzinfo=UTC), "expires_at", "in the past")
        check_key(v, idempotency_key)
        v.raise_if_any()
        params = {"amount": amount, "count": count, "expires_at": expires_at}
        async with self.storage.begin() as tx:
            first = await tx.claim_key("codes", idempotency_key, params)
            if first is not None:
                return CodesResult(first["batch_id"], [self._code(first["batch_id"], i) for i in range(count)])
            batch_id = new_id()
            codes = [self._code(batch_id, i) for i in range(count)]
            hashes = [self.code_hash(code_body(c) or "") for c in codes]
            expires = naive(expires_at) if expires_at else None
            await tx.insert_code_batch(batch_id, amount, count, expires, self.clock(), hashes)
            await tx.finish_key("codes", idempotency_key, {"batch_id": batch_id})
            return CodesResult(batch_id, codes)

    async def redeem(self, account_id: str, code: str, idempotency_key: str) -> TransferResult:
        v = Violations()
        check_account(v, account_id)
        body = code_body(code)
        v.check(body is not None, "code", "not a redemption code")
        check_key(v, idempotency_key)
        v.raise_if_any()
        digest = self.code_hash(body or "")
        async with self.storage.begin() as tx:
            key = scoped_key(account_id, idempotency_key)
            first = await tx.claim_key("redeem", key, {"code": digest})
            if first is not None:
                return TransferResult(**first)
            terms = await tx.code_terms(digest)
            if terms is None:
                raise NotFound("unknown code", field_violations={"code": "no such code"})
            if terms.expires_at is not None and terms.expires_at <= self.clock():
                raise FailedPrecondition("the code has expired", reason="code_expired")
            if not await tx.take_code(digest, account_id, self.clock()):
                raise FailedPrecondition("the code has already been redeemed", reason="code_redeemed")
            result = await self.credits.credit(tx, account_id, terms.amount, "redeem", "promo", digest[:16])
            await tx.finish_key("redeem", key, vars(result))
            return result
