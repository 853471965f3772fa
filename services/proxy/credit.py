"""Credit leases: a slice of an account's balance that billing holds for this proxy, from which
a leased key's calls reserve their largest possible cost in process.

Without them every call waits for a Hold round trip (proxy -> billing -> PostgreSQL) before
the upstream is called. With them a key's first call takes that synchronous hold and asks, in
the background, for a slice: an ordinary billing hold for the key (its account, its spend
cap), sized to cover `calls` such calls, at most `max_micros` and at most `share` of the
balance the last slice left. Later calls reserve from the slice without any I/O; each call's
exact cost is settled against it (`SettleRequest.lease`, in the settle batches and through
the outbox as before), which keeps the hold open with what is left. A call that does not fit
(a new key, a slice running dry, an account that cannot lease) takes the synchronous path, so
an account near empty is still served exactly what it can pay for.

A slice takes new calls for `max_age_s`; one that runs low is replaced (asked for ahead of
need), one left unused for `idle_s` retires, and a retired slice is returned (released) once
every call drawn on it has had its settle confirmed, so no draw arrives after its return.
A proxy that dies leaves its slices to expire (their ttl covers the longest call that may
draw on them): its stored settles are replayed from the outbox and still charge (billing
takes a draw on an ended lease from the wallet), and the rest of each hold goes back.

Billing's holds keep the invariants: a slice is placed only if the balance and the key's
spend cap allow it, so with any number of proxies no balance goes below zero and no key
above its cap. Written here because it is the proxy's own bookkeeping over billing's holds;
no library knows these rules.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from services.runtime.errors import DomainError

from .model import KeyGrant
from .ports import LeaseLedger

log = logging.getLogger("gatemesh.proxy.credit")


@dataclass(frozen=True)
class CreditTerms:
    """How slices are sized and kept (the `proxy_credit_lease_*` settings)."""

    calls: int = 32
    max_micros: int = 5_000_000
    share: float = 0.25
    max_age_s: float = 30.0
    idle_s: float = 5.0
    retry_s: float = 5.0
    call_ttl_s: float = 900.0  # the longest a call may run (the synchronous hold's ttl)

    @property
    def ttl_s(self) -> int:
        """A slice's hold outlives the last call that may draw on it."""
        return int(self.max_age_s + self.call_ttl_s) + 1


@dataclass
class Slice:
    """One credit lease: what billing holds, and what this proxy's calls took of it."""

    hold_id: str
    terms: tuple[str, str, int]  # the grant's hold terms it was placed under
    granted: int
    born: float
    drawn: int = 0  # settled (confirmed) costs
    reserved: int = 0  # largest possible costs of the calls in flight
    calls: int = 0  # calls in flight (reserved, their settle not yet confirmed)
    used_at: float = 0.0
    retired: bool = False

    @property
    def account_id(self) -> str:
        return self.terms[0]

    @property
    def free(self) -> int:
        return self.granted - self.drawn - self.reserved


class CreditLeases:
    """This proxy's slices, one per key at a time (plus retired ones draining)."""

    def __init__(
        self,
        ledger: LeaseLedger,
        terms: CreditTerms,
        spawn: Callable[[Awaitable[Any]], asyncio.Task[Any]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ledger = ledger
        self.terms = terms
        self._spawn = spawn
        self._clock = clock
        self._slices: dict[str, Slice] = {}  # key id -> the slice taking new calls
        self._draining: list[Slice] = []  # retired, returned once their calls are settled
        self._asking: set[str] = set()  # key ids with a slice requested
        self._cool_until: dict[str, float] = {}  # key ids refused a slice, until when
        self._balances: dict[str, int] = {}  # account -> wallet balance the last slice left
        self.granted = 0  # slices placed (the benchmark and tests read these)
        self.refused = 0
        self.returned = 0

    # --- the hot path: no I/O -------------------------------------------------------

    def reserve(self, grant: KeyGrant, cost: int) -> Slice | None:
        """Take `cost` from the key's slice, or None (the call takes the synchronous hold).
        Asks for a slice in the background when there is none, or the current one runs low."""
        now = self._clock()
        current = self._slices.get(grant.key_id)
        if current is not None and not self._usable(current, grant, now):
            self._retire(grant.key_id)
            current = None
        if current is not None and current.free >= cost:
            current.reserved += cost
            current.calls += 1
            current.used_at = now
            if current.free <= max(cost, current.granted // 4):  # one more call, or a quarter, left
                self._ask(grant, cost)
            return current
        self._ask(grant, cost)
        return None

    async def give_back(self, account_id: str) -> bool:
        """Return the account's slices that no call is drawing on, now, and lease its keys
        nothing for `retry_s`: a synchronous hold that billing refused for credit may fit
        once they are back (a slice placed while the call held could take the credit it
        needed, and an account that can pay would hear 429). True if any went back."""
        idle = [key for key, piece in self._slices.items() if piece.account_id == account_id and piece.calls == 0]
        for key in idle:
            piece = self._slices.pop(key)
            piece.retired = True
            self.returned += 1
            self._cool(key)
            await self._release(piece)
        return bool(idle)

    def finish(self, piece: Slice, reserved: int, charged: int) -> None:
        """A call on `piece` is settled (confirmed, or given up): its reservation becomes its
        cost. A retired slice whose last call this was goes back."""
        piece.reserved -= reserved
        piece.drawn += charged
        piece.calls -= 1
        if piece.retired and piece.calls == 0:
            self._return(piece)

    def _usable(self, piece: Slice, grant: KeyGrant, now: float) -> bool:
        return piece.terms == grant.hold_terms() and now - piece.born < self.terms.max_age_s

    # --- slices: asked for, retired and returned in the background --------------------

    def _ask(self, grant: KeyGrant, cost: int) -> None:
        key = grant.key_id
        if key in self._asking or self._cool_until.get(key, 0.0) > self._clock():
            return
        amount = self._size(grant, cost)
        if amount < 2 * cost:  # too little to be worth a slice: the synchronous path serves it
            self._cool(key)
            return
        self._asking.add(key)
        self._spawn(self._place(grant, amount))

    def _size(self, grant: KeyGrant, cost: int) -> int:
        """Enough for `calls` calls like this one, or for the pace of the last slice over
        its life, bounded by `max_micros` and by `share` of the balance the last slice left
        (room for other proxies, other keys of the account and the synchronous path)."""
        terms = self.terms
        current = self._slices.get(grant.key_id)
        pace = 0
        if current is not None:  # what it took per second, over the next slice's life
            taken = current.drawn + current.reserved
            pace = int(taken / max(self._clock() - current.born, 1.0) * terms.max_age_s)
        amount = min(terms.max_micros, max(cost * terms.calls, pace))
        balance = self._balances.get(grant.account_id)
        if balance is not None:
            amount = min(amount, int(balance * terms.share))
        return amount

    async def _place(self, grant: KeyGrant, amount: int) -> None:
        key = grant.key_id
        try:
            hold_id, balance = await self.ledger.lease(grant, amount, self.terms.ttl_s, f"lease:{os.urandom(16).hex()}")
        except DomainError as error:  # no credit for it, the key's cap, billing away
            self.refused += 1
            self._cool(key)
            self._balances[grant.account_id] = amount  # the next ask is a share of this: smaller
            log.debug("no credit lease for a key: %s", error.reason or type(error).__name__)
            return
        finally:
            self._asking.discard(key)
        self.granted += 1
        self._balances[grant.account_id] = balance
        now = self._clock()
        self._retire(key)
        self._slices[key] = Slice(hold_id, grant.hold_terms(), amount, born=now, used_at=now)

    def _cool(self, key: str) -> None:
        self._cool_until[key] = self._clock() + self.terms.retry_s

    def _retire(self, key: str) -> None:
        piece = self._slices.pop(key, None)
        if piece is None:
            return
        piece.retired = True
        if piece.calls == 0:
            self._return(piece)
        else:
            self._draining.append(piece)

    def _return(self, piece: Slice) -> None:
        if piece in self._draining:
            self._draining.remove(piece)
        self.returned += 1
        self._spawn(self._release(piece))

    async def _release(self, piece: Slice) -> None:
        """Give back what is left; billing expires the hold if this never arrives."""
        try:
            await self.ledger.release(piece.hold_id, None, f"{piece.hold_id}:return")
        except DomainError as error:
            log.warning("return of a credit lease failed (%s); it expires", error.reason or type(error).__name__)

    def sweep(self) -> None:
        """Retire slices unused for `idle_s` or past `max_age_s` (run every second or so)."""
        now = self._clock()
        for key, piece in list(self._slices.items()):
            if now - piece.used_at >= self.terms.idle_s or now - piece.born >= self.terms.max_age_s:
                self._retire(key)
        for key, until in list(self._cool_until.items()):
            if until <= now:
                del self._cool_until[key]

    async def run(self) -> None:
        """Background job: sweep until cancelled, every second (or twice per `idle_s`). Not
        `runtime.background.every`: this is bookkeeping in memory, with no I/O to fail, trace
        or count."""
        interval_s = min(1.0, self.terms.idle_s / 2)
        while True:
            await asyncio.sleep(interval_s)
            self.sweep()

    def close(self) -> None:
        """Retire every slice (on shutdown): each goes back once its calls are settled."""
        for key in list(self._slices):
            self._retire(key)

    @property
    def outstanding(self) -> int:
        """Slices not yet returned (taking calls or draining)."""
        return len(self._slices) + len(self._draining)
