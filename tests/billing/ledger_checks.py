"""Ledger invariants, checked straight from the tables after any sequence of operations."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.billing.store import Entry, Hold, KeySpend, LedgerAccount, Transfer


async def assert_invariants(engine: AsyncEngine) -> None:
    """Every transfer's entries sum to zero; no wallet or holds account is below zero; each
    stored balance equals the sum of its entries."""
    e, a, t = Entry.__table__, LedgerAccount.__table__, Transfer.__table__
    async with engine.connect() as conn:
        unbalanced = (
            await conn.execute(select(e.c.transfer_id).group_by(e.c.transfer_id).having(func.sum(e.c.amount) != 0))
        ).all()
        assert unbalanced == []
        assert (await conn.execute(select(func.coalesce(func.sum(e.c.amount), 0)))).scalar_one() == 0
        orphans = await conn.execute(select(func.count()).select_from(t).where(~t.c.id.in_(select(e.c.transfer_id))))
        assert orphans.scalar_one() == 0
        sums = dict(
            (await conn.execute(select(e.c.ledger_account, func.sum(e.c.amount)).group_by(e.c.ledger_account))).all()
        )
        for account_id, balance in (await conn.execute(select(a.c.id, a.c.balance))).all():
            assert balance >= 0, account_id
            assert balance == sums.get(account_id, 0), account_id


async def assert_holds_add_up(engine: AsyncEngine) -> None:
    """Each holds account holds exactly its open holds' amounts, and each API key's held spend
    is exactly its open holds' amounts: credit leases' draws (issue 15) lower both together."""
    h, a, k = Hold.__table__, LedgerAccount.__table__, KeySpend.__table__
    is_open = h.c.status == "open"
    async with engine.connect() as conn:
        per_account = select(h.c.account_id, func.sum(h.c.amount)).where(is_open).group_by(h.c.account_id)
        open_by_account = {f"holds:{acct}": int(total) for acct, total in (await conn.execute(per_account)).all()}
        held = dict((await conn.execute(select(a.c.id, a.c.balance).where(a.c.kind == "holds"))).all())
        assert {acct: b for acct, b in held.items() if b} == {acct: t for acct, t in open_by_account.items() if t}
        per_key = select(h.c.key_id, func.sum(h.c.amount)).where(is_open, h.c.key_id != "").group_by(h.c.key_id)
        open_by_key = {key: int(total) for key, total in (await conn.execute(per_key)).all() if total}
        key_held = {key: int(v) for key, v in (await conn.execute(select(k.c.key_id, k.c.held))).all() if v}
        assert key_held == open_by_key


async def ledger_snapshot(engine: AsyncEngine) -> tuple[int, int, list[tuple[str, int]]]:
    """(transfers, entries, balances): equal before and after a refused request."""
    e, a, t = Entry.__table__, LedgerAccount.__table__, Transfer.__table__
    async with engine.connect() as conn:
        transfers = (await conn.execute(select(func.count()).select_from(t))).scalar_one()
        entries = (await conn.execute(select(func.count()).select_from(e))).scalar_one()
        balances = (await conn.execute(select(a.c.id, a.c.balance).order_by(a.c.id))).all()
    return transfers, entries, [tuple(b) for b in balances]
