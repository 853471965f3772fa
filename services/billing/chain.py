"""On-chain top-ups: deterministic deposit addresses and a watcher of ERC-20 `Transfer` logs.

Addresses: the n-th account to ask gets index n (a row id) and the address of BIP-44 path
`m/44'/60'/0'/0/n`, derived from the configured account-level xpub (`m/44'/60'/0'`, public
derivation with bip-utils: billing holds no key that can spend) or mnemonic (eth-account);
only the address is stored. An xpub of any other depth is refused at start.

The watcher (a background task of the service; tests drive `run_once` directly) talks to the
chain through a synchronous `Web3` in a worker thread, so any provider works, including
`EthereumTesterProvider`. Each pass:
1. scans `Transfer` logs of the configured token contracts from the block after the stored
   cursor up to the head, in ranges of at most `max_block_range` blocks, records transfers to
   our addresses as *pending* with their block hash, and advances the cursor (so a restart
   resumes where it stopped);
2. for each pending deposit with `confirmations` blocks on top (the block itself counts as
   one), fetches the canonical block at that height: same hash -> credited, exactly once per
   (chain id, tx hash, log index) (unique key plus a status that only moves to credited, in
   the crediting transaction); other hash -> the block left the canonical chain: the deposit
   is marked orphaned and the cursor rewinds before it, so that if the transaction was
   re-included in another block it is found again there.
Reorganizations deeper than `confirmations` after a credit are treated as final.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bip_utils import Bip32Secp256k1, EthAddrEncoder
from eth_account import Account
from eth_utils import is_address, to_checksum_address
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from web3 import Web3

from services.runtime import metrics
from services.runtime.errors import Violations
from services.runtime.telemetry import root_span

from . import store
from .domain import Billing, check_account, new_id
from .model import not_offered
from .store import ChainCursor, ChainDeposit, DepositAddress

log = logging.getLogger("gatemesh.billing.chain")
TRANSFER_TOPIC = Web3.to_hex(Web3.keccak(text="Transfer(address,address,uint256)"))
Account.enable_unaudited_hdwallet_features()


@dataclass(frozen=True)
class Token:
    symbol: str
    contract: str
    decimals: int

    @classmethod
    def parse(cls, spec: dict[str, Any]) -> Token:
        contract = str(spec.get("contract", ""))
        if not is_address(contract):
            raise ValueError(f"billing_chain_tokens: {spec.get('symbol')!r} has a malformed contract address")
        decimals = int(spec.get("decimals", 6))
        if not 0 <= decimals <= 36:
            raise ValueError("billing_chain_tokens: decimals must be between 0 and 36")
        return cls(str(spec["symbol"]), to_checksum_address(contract), decimals)

    def micros(self, base_units: int) -> int:
        """Token base units as micro-USD (1 token = 1 USD), rounded down below a micro."""
        return base_units * 10**6 // 10**self.decimals


def derive_address(mnemonic: str, index: int) -> str:
    return Account.from_mnemonic(mnemonic, account_path=f"m/44'/60'/0'/0/{index}").address


ACCOUNT_DEPTH = 3  # m / 44' / 60' / 0'


def parse_xpub(xpub: str) -> Bip32Secp256k1:
    """The account node of a BIP-32 extended public key (bip-utils: base58check, version,
    the key a point on secp256k1); a ValueError naming the setting for anything else."""
    try:
        node = Bip32Secp256k1.FromExtendedKey(xpub.strip())
    except Exception as error:  # bip-utils raises its own error types for each defect
        raise ValueError(f"billing_deposit_xpub: not a BIP-32 xpub ({error})") from None
    if not node.IsPublicOnly():
        raise ValueError("billing_deposit_xpub: an extended private key; configure the xpub, never the xprv")
    depth = node.Depth().ToInt()
    if depth != ACCOUNT_DEPTH:
        raise ValueError(
            f"billing_deposit_xpub: the xpub is at depth {depth}, but must be the account node "
            f"m/44'/60'/0' (depth {ACCOUNT_DEPTH}); export the account-level xpub from the wallet, "
            "or its addresses would be ones no wallet shows"
        )
    return node


def derive_address_from_xpub(xpub: str, index: int) -> str:
    """The address at `<xpub>/0/index`: the xpub is the account node m/44'/60'/0', so the
    addresses equal those of the mnemonic path m/44'/60'/0'/0/index; no private key needed."""
    child = parse_xpub(xpub).ChildKey(0).ChildKey(index)
    return to_checksum_address(EthAddrEncoder.EncodeKey(child.PublicKey().KeyObject()))


def address_deriver(mnemonic: str = "", xpub: str = "") -> Callable[[int], str] | None:
    """Index -> address from the configured key material: an xpub (preferred: billing then
    holds no secret able to spend deposits) or a mnemonic; None when neither is set."""
    if xpub:
        parse_xpub(xpub)  # fail at startup, not at the first deposit request
        return lambda index: derive_address_from_xpub(xpub, index)
    if mnemonic:
        return lambda index: derive_address(mnemonic, index)
    return None


def _hex(value: Any) -> str:
    text = value.hex() if hasattr(value, "hex") else str(value)
    return text if text.startswith("0x") else "0x" + text


class ChainDeposits:
    """Deposit addresses and the watcher of one chain."""

    def __init__(
        self,
        billing: Billing,
        w3: Web3 | None,
        chain_id: int,
        tokens: list[Token],
        deriver: Callable[[int], str] | None,
        confirmations: int = 12,
        max_block_range: int = 2_000,
        start_block: int = 0,
    ) -> None:
        self.billing = billing
        self.w3 = w3
        self.chain_id = chain_id
        self.tokens = {t.contract.lower(): t for t in tokens}
        self._derive = deriver
        self.confirmations = max(1, confirmations)
        self.max_block_range = max(1, max_block_range)
        self.start_block = start_block

    def token_list(self) -> list[Token]:
        return list(self.tokens.values())

    async def deposit_address(self, account_id: str, chain_id: int = 0) -> str:
        """The account's address on this chain, allocated on first request."""
        v = Violations()
        check_account(v, account_id)
        v.check(chain_id in (0, self.chain_id), "chain_id", f"deposits are accepted on chain {self.chain_id} only")
        v.raise_if_any()
        if self._derive is None:
            raise not_offered("on-chain top-ups")
        t = DepositAddress.__table__
        async with self.billing.engine.begin() as conn:
            mine = select(t.c.address).where(t.c.account_id == account_id, t.c.chain_id == self.chain_id)
            found = (await conn.execute(mine)).scalar_one_or_none()
            if found:
                return str(found)
            placeholder = f"pending-{new_id().replace('-', '')}"
            inserted = await conn.execute(
                store.insert_ignore(conn, DepositAddress, ["account_id", "chain_id"])
                .values(account_id=account_id, chain_id=self.chain_id, address=placeholder, created_at=store.utcnow())
                .returning(t.c.id)
            )
            index = inserted.scalar_one_or_none()
            if index is None:  # a concurrent request allocated it
                return str((await conn.execute(mine)).scalar_one())
            address = await asyncio.to_thread(self._derive, int(index))
            await conn.execute(update(t).where(t.c.id == index).values(address=address))
            return address

    async def _call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def run_once(self) -> int:
        """One scan-and-confirm pass; returns how many deposits were credited."""
        if self.w3 is None or not self.tokens:
            return 0
        head = int(await self._call(lambda: self.w3.eth.block_number))
        cursor = await self._cursor()
        metrics.CHAIN_HEAD.set(head)
        metrics.CHAIN_LAG.set(max(0, head - cursor))
        while cursor < head:
            to = min(head, cursor + self.max_block_range)
            await self._scan(cursor + 1, to)
            cursor = to
            await self._set_cursor(cursor)
            metrics.CHAIN_LAG.set(head - cursor)
        return await self._confirm(head)

    async def run_forever(self, poll_s: float) -> None:
        """A pass every `poll_s`, each in its own trace."""
        while True:
            with root_span("chain watcher pass"):
                try:
                    credited = await self.run_once()
                    if credited:
                        log.info("credited %d on-chain deposits", credited)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("chain watcher pass failed; retrying")
            await asyncio.sleep(poll_s)

    async def _cursor(self) -> int:
        t = ChainCursor.__table__
        async with self.billing.engine.connect() as conn:
            value = (await conn.execute(select(t.c.last_block).where(t.c.chain_id == self.chain_id))).scalar()
        return int(value) if value is not None else self.start_block - 1

    async def _set_cursor(self, block: int) -> None:
        t = ChainCursor.__table__
        async with self.billing.engine.begin() as conn:
            fresh = store.insert_ignore(conn, ChainCursor, ["chain_id"]).values(
                chain_id=self.chain_id, last_block=block
            )
            await conn.execute(fresh)
            await conn.execute(update(t).where(t.c.chain_id == self.chain_id).values(last_block=block))

    async def _addresses(self) -> dict[str, str]:
        t = DepositAddress.__table__
        async with self.billing.engine.connect() as conn:
            rows = (await conn.execute(select(t.c.address, t.c.account_id).where(t.c.chain_id == self.chain_id))).all()
        return {address.lower(): account for address, account in rows}

    async def _scan(self, first: int, last: int) -> None:
        query = {
            "fromBlock": first,
            "toBlock": last,
            "address": [t.contract for t in self.tokens.values()],
            "topics": [TRANSFER_TOPIC],
        }
        logs = await self._call(self.w3.eth.get_logs, query)
        if not logs:
            return
        ours = await self._addresses()
        async with self.billing.engine.begin() as conn:
            for entry in logs:
                if len(entry["topics"]) != 3:
                    continue
                to_address = "0x" + bytes(entry["topics"][2])[-20:].hex()
                account = ours.get(to_address)
                token = self.tokens.get(str(entry["address"]).lower())
                if account is None or token is None:
                    continue
                await self._record(conn, entry, token, account, to_address)

    async def _record(self, conn: AsyncConnection, entry: Any, token: Token, account: str, to_address: str) -> None:
        value = int.from_bytes(bytes(entry["data"]), "big")
        t = ChainDeposit.__table__
        key = {
            "chain_id": self.chain_id,
            "tx_hash": _hex(entry["transactionHash"]),
            "log_index": int(entry["logIndex"]),
        }
        where = {"block_number": int(entry["blockNumber"]), "block_hash": _hex(entry["blockHash"])}
        inserted = await conn.execute(
            store.insert_ignore(conn, ChainDeposit, list(key)).values(
                id=new_id(), **key, **where, account_id=account,
                from_address=to_checksum_address("0x" + bytes(entry["topics"][1])[-20:].hex()),
                to_address=to_checksum_address(to_address), token=token.symbol, token_amount=str(value),
                amount_micros=token.micros(value), status="pending", created_at=store.utcnow(),
            )
        )  # fmt: skip
        if inserted.rowcount == 0:  # seen before: re-included after a reorg, or a rescan
            await conn.execute(
                update(t)
                .where(*(t.c[k] == v for k, v in key.items()), t.c.status != "credited")
                .values(**where, status="pending")
            )

    async def _confirm(self, head: int) -> int:
        t = ChainDeposit.__table__
        deepest = head - self.confirmations + 1
        async with self.billing.engine.connect() as conn:
            due = (
                await conn.execute(
                    select(t.c.id, t.c.block_number, t.c.block_hash).where(
                        t.c.chain_id == self.chain_id, t.c.status == "pending", t.c.block_number <= deepest
                    )
                )
            ).all()
        credited = 0
        for deposit_id, number, block_hash in due:
            block = await self._call(self.w3.eth.get_block, number)
            if _hex(block["hash"]) == block_hash:
                credited += await self._credit(deposit_id)
            else:
                await self._orphan(deposit_id, number)
        return credited

    async def _credit(self, deposit_id: str) -> int:
        t = ChainDeposit.__table__
        async with self.billing.engine.begin() as conn:
            row = (await conn.execute(select(t).where(t.c.id == deposit_id).with_for_update())).one()
            if row.status != "pending" or row.amount_micros <= 0:
                return 0
            credit = await self.billing.credit(
                conn, row.account_id, row.amount_micros, "topup_crypto", "topup_crypto", row.tx_hash
            )
            await conn.execute(
                update(t).where(t.c.id == deposit_id).values(status="credited", transfer_id=credit.transfer_id)
            )
        return 1

    async def _orphan(self, deposit_id: str, number: int) -> None:
        t = ChainDeposit.__table__
        async with self.billing.engine.begin() as conn:
            await conn.execute(update(t).where(t.c.id == deposit_id, t.c.status == "pending").values(status="orphaned"))
        if await self._cursor() >= number:
            await self._set_cursor(number - 1)
        log.warning("a pending deposit's block left the canonical chain; not credited")
