"""The ledger's rules as plain functions: whether a hold may be placed, how a settle splits.

The single path and the batch path both call these; the PostgreSQL one-statement forms
(`pg.HOLD_PG`, `pg.SETTLE_PG`, `pg.DRAW_PG`) state the same rules in SQL, and
`tests/billing/test_one_statement_forms.py` runs both on the same inputs so that they cannot
drift apart. No I/O here: the callers read (and lock) the balances first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.runtime.errors import FailedPrecondition

from .errors import insufficient_credit, key_spend_limit
from .model import holds_account, system, wallet

Legs = Sequence[tuple[str, int]]


def hold_refusal(
    available: int, amount: int, key_id: str, key_committed: int, key_cap: int
) -> FailedPrecondition | None:
    """Why a hold of `amount` may not be placed, or None. `available` is the wallet's
    balance; `key_committed` the API key's spend so far (settled plus held), bounded by
    `key_cap` (0: no cap). Credit is checked first: an account without it hears so."""
    if available < amount:
        return insufficient_credit()
    if key_id and key_cap and key_committed + amount > key_cap:
        return key_spend_limit()
    return None


def hold_legs(account_id: str, amount: int) -> Legs:
    """A hold moves its amount from the wallet to the holds account."""
    return ((wallet(account_id), -amount), (holds_account(account_id), amount))


def release_legs(account_id: str, amount: int) -> Legs:
    """A release moves the whole hold back to the wallet."""
    return ((holds_account(account_id), -amount), (wallet(account_id), amount))


@dataclass(frozen=True)
class Split:
    """How a settle divides its hold: `charged` goes to revenue, `released` back to the
    wallet; `taken` is what a cost above the hold took from the wallet, and `shortfall` what
    the wallet could not cover (recorded, never a negative balance)."""

    charged: int
    released: int
    taken: int
    shortfall: int

    @property
    def wallet_change(self) -> int:
        return self.released - self.taken

    @property
    def from_hold(self) -> int:
        """What the hold itself covered (a credit lease's draw takes this much from it)."""
        return self.charged - self.taken


def settle_split(hold_amount: int, cost: int, available: int) -> Split:
    """Charge `cost` against a hold of `hold_amount`: what the hold covers first, the rest from
    the wallet's `available` balance, as far as it goes."""
    from_hold = min(cost, hold_amount)
    extra = cost - from_hold
    taken = min(extra, max(available, 0)) if extra else 0
    return Split(charged=from_hold + taken, released=hold_amount - from_hold, taken=taken, shortfall=extra - taken)


def settle_legs(account_id: str, hold_amount: int, split: Split) -> Legs:
    """The settle's transfer: the hold out, the wallet's change, the revenue in."""
    return (
        (holds_account(account_id), -hold_amount),
        (wallet(account_id), split.wallet_change),
        (system("revenue"), split.charged),
    )


def draw_legs(account_id: str, split: Split) -> Legs:
    """A draw on a credit lease (issue 15): what the lease covers out of the holds account,
    the rest out of the wallet, all of it to revenue. Nothing is released (the lease stays
    open with what is left), and zero legs are left out (a lease that has ended draws from the
    wallet alone)."""
    legs = (
        (holds_account(account_id), -split.from_hold),
        (wallet(account_id), -split.taken),
        (system("revenue"), split.charged),
    )
    return tuple(leg for leg in legs if leg[1])
