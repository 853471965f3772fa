"""On-chain top-ups against a real EVM (py-evm through EthereumTesterProvider) and an ERC-20
compiled with vyper: confirmations, exactly-once crediting, a reorg, and restart."""

from __future__ import annotations

import hashlib
import hmac
from functools import cache
from typing import Any

import pytest
import vyper
from sqlalchemy import select
from web3 import EthereumTesterProvider, Web3

from services.billing.chain import ChainDeposits, Token, address_deriver, derive_address, derive_address_from_xpub
from services.billing.domain import Billing
from services.billing.store import ChainDeposit
from services.runtime.errors import InvalidArgument

from .ledger_checks import assert_invariants

MNEMONIC = "test test test test test test test test test test test junk"
# The first two addresses of that mnemonic, as every Ethereum dev wallet (hardhat, anvil) shows them.
PINNED = ["0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266", "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"]
ERC20 = """
# pragma version 0.4.3
event Transfer:
    sender: indexed(address)
    receiver: indexed(address)
    amount: uint256

balanceOf: public(HashMap[address, uint256])
decimals: public(uint8)

@deploy
def __init__(supply: uint256, places: uint8):
    self.balanceOf[msg.sender] = supply
    self.decimals = places
    log Transfer(sender=empty(address), receiver=msg.sender, amount=supply)

@external
def transfer(receiver: address, amount: uint256) -> bool:
    self.balanceOf[msg.sender] -= amount
    self.balanceOf[receiver] += amount
    log Transfer(sender=msg.sender, receiver=receiver, amount=amount)
    return True
"""


@cache
def compiled() -> dict[str, Any]:
    return vyper.compile_code(ERC20, output_formats=["abi", "bytecode"])


class Chain:
    def __init__(self) -> None:
        self.w3 = Web3(EthereumTesterProvider())
        self.tester = self.w3.provider.ethereum_tester  # type: ignore[attr-defined]
        self.owner = self.w3.eth.accounts[0]
        out = compiled()
        factory = self.w3.eth.contract(abi=out["abi"], bytecode=out["bytecode"])
        tx = factory.constructor(10**12, 6).transact({"from": self.owner})
        self.token = self.w3.eth.contract(
            address=self.w3.eth.get_transaction_receipt(tx).contractAddress, abi=out["abi"]
        )

    def pay(self, to: str, amount: int) -> None:
        self.token.functions.transfer(to, amount).transact({"from": self.owner})

    def mine(self, n: int) -> None:
        self.tester.mine_blocks(n)


@pytest.fixture
def chain() -> Chain:
    return Chain()


def watcher(billing: Billing, chain: Chain, confirmations: int = 3) -> ChainDeposits:
    token = Token.parse({"symbol": "USDT", "contract": chain.token.address, "decimals": 6})
    return ChainDeposits(
        billing,
        chain.w3,
        chain.w3.eth.chain_id,
        [token],
        address_deriver(mnemonic=MNEMONIC),
        confirmations=confirmations,
        max_block_range=2,
    )


async def deposits(billing: Billing) -> list[Any]:
    t = ChainDeposit.__table__
    async with billing.engine.connect() as conn:
        return (
            await conn.execute(select(t.c.status, t.c.amount_micros, t.c.token_amount).order_by(t.c.created_at))
        ).all()


async def test_deposit_addresses_are_deterministic_and_only_addresses_are_stored(
    billing: Billing, chain: Chain
) -> None:
    w = watcher(billing, chain)
    first = await w.deposit_address("alice")
    assert await w.deposit_address("alice") == first
    second = await w.deposit_address("bob")
    assert {first, second} == {derive_address(MNEMONIC, 1), derive_address(MNEMONIC, 2)}
    assert Web3.is_checksum_address(first)
    with pytest.raises(InvalidArgument):
        await w.deposit_address("bad id!")
    with pytest.raises(InvalidArgument):
        await w.deposit_address("alice", chain_id=999_999)


async def test_transfer_is_credited_after_confirmations_exactly_once(billing: Billing, chain: Chain) -> None:
    """Also P1.2: the deposit keeps the on-chain details the policy names (chain, transaction
    hash, sender and receiving addresses, token, amount), read from the real chain."""
    w = watcher(billing, chain, confirmations=3)
    address = await w.deposit_address("alice")
    chain.pay(address, 5_000_000)  # 5 USDT, 6 decimals
    chain.pay(chain.w3.eth.accounts[1], 1_000_000)  # not ours: ignored
    assert await w.run_once() == 0
    assert (await billing.balance("alice")).balance_micros == 0
    assert [d.status for d in await deposits(billing)] == ["pending"]
    chain.mine(2)  # the block itself plus two on top: three confirmations
    assert await w.run_once() == 1
    assert (await billing.balance("alice")).balance_micros == 5_000_000
    t = ChainDeposit.__table__
    async with billing.engine.connect() as conn:
        row = (await conn.execute(select(t))).one()
    receipt_logs = chain.token.events.Transfer().get_logs(from_block=0)
    paid = next(log for log in receipt_logs if log.args.receiver == address)
    assert (row.chain_id, row.tx_hash, row.log_index) == (
        chain.w3.eth.chain_id,
        "0x" + paid.transactionHash.hex().removeprefix("0x"),
        paid.logIndex,
    )
    assert (row.from_address, row.to_address, row.token) == (chain.owner, address, "USDT")
    assert (row.token_amount, row.amount_micros) == ("5000000", 5_000_000)  # base units, 6 decimals
    chain.mine(5)
    assert await w.run_once() == 0
    restarted = watcher(billing, chain, confirmations=3)  # a restart resumes from the stored cursor
    assert await restarted._cursor() == chain.w3.eth.block_number
    assert await restarted.run_once() == 0
    assert (await billing.balance("alice")).balance_micros == 5_000_000
    await assert_invariants(billing.engine)


async def test_a_transfer_whose_block_leaves_the_canonical_chain_is_not_credited(
    billing: Billing, chain: Chain
) -> None:
    w = watcher(billing, chain, confirmations=3)
    address = await w.deposit_address("carol")
    snapshot = chain.tester.take_snapshot()
    chain.pay(address, 7_000_000)
    assert await w.run_once() == 0  # seen, pending with its block hash
    chain.tester.revert_to_snapshot(snapshot)  # the reorg: that block is gone
    chain.mine(6)  # the new canonical chain is longer, without the transfer
    assert await w.run_once() == 0
    assert [d.status for d in await deposits(billing)] == ["orphaned"]
    assert (await billing.balance("carol")).balance_micros == 0
    # A transfer on the new canonical chain is credited normally.
    chain.pay(address, 2_000_000)
    chain.mine(3)
    assert await w.run_once() == 1
    assert (await billing.balance("carol")).balance_micros == 2_000_000


def test_token_amounts_convert_to_micros_and_contracts_are_validated() -> None:
    contract = "0x" + "11" * 20
    assert Token.parse({"symbol": "USDC", "contract": contract, "decimals": 6}).micros(1_234_567) == 1_234_567
    dai = Token.parse({"symbol": "DAI", "contract": contract, "decimals": 18})
    assert dai.micros(10**18) == 1_000_000 and dai.micros(10**12 - 1) == 0  # dust below a micro rounds down
    with pytest.raises(ValueError):
        Token.parse({"symbol": "BAD", "contract": "0x1234", "decimals": 6})


def account_xpub(mnemonic: str, path: tuple[int, ...] = (44, 60, 0)) -> str:
    """The xpub of a hardened path of a mnemonic (default the account node m/44'/60'/0'),
    serialized as wallets export it."""
    from eth_account.hdaccount.deterministic import HardNode, derive_child_key
    from eth_account.hdaccount.mnemonic import Mnemonic
    from eth_keys import keys

    seed = Mnemonic.to_seed(mnemonic)
    node = hmac.new(b"Bitcoin seed", seed, hashlib.sha512).digest()
    key, chain_code = node[:32], node[32:]
    for index in path:
        key, chain_code = derive_child_key(key, chain_code, HardNode(index))
    return serialize_xpub(len(path), chain_code, keys.PrivateKey(key).public_key.to_compressed_bytes())


def serialize_xpub(depth: int, chain_code: bytes, public: bytes) -> str:
    body = (
        bytes.fromhex("0488b21e") + bytes([depth]) + b"\0" * 4 + (0x80000000).to_bytes(4, "big") + chain_code + public
    )
    raw = body + hashlib.sha256(hashlib.sha256(body).digest()).digest()[:4]
    number, text = int.from_bytes(raw, "big"), ""
    while number:
        number, digit = divmod(number, 58)
        text = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"[digit] + text
    return text


def test_an_xpub_of_the_wrong_depth_is_refused_naming_the_setting() -> None:
    for path in ((44, 60, 0, 0), (44, 60)):  # a change-level node, a coin-level node
        with pytest.raises(ValueError, match=rf"billing_deposit_xpub: .*depth {len(path)}"):
            address_deriver(xpub=account_xpub(MNEMONIC, path))


def test_an_xpub_whose_key_is_off_the_curve_is_refused() -> None:
    x = 5  # 5**3 + 7 = 132 is not a square modulo secp256k1's p: no point has this x
    xpub = serialize_xpub(3, b"\1" * 32, b"\2" + x.to_bytes(32, "big"))
    with pytest.raises(ValueError, match="billing_deposit_xpub: not a BIP-32 xpub"):
        address_deriver(xpub=xpub)


def test_derived_addresses_are_unchanged() -> None:
    """Addresses already handed out must stay the same: pinned from before the checks."""
    xpub = account_xpub(MNEMONIC)
    assert [derive_address_from_xpub(xpub, index) for index in (0, 1)] == PINNED


def test_xpub_derives_the_same_addresses_as_the_mnemonic_without_a_private_key() -> None:
    xpub = account_xpub(MNEMONIC)
    assert xpub.startswith("xpub")
    for index in (0, 1, 7, 1000):
        assert derive_address_from_xpub(xpub, index) == derive_address(MNEMONIC, index)
    with pytest.raises(ValueError):
        address_deriver(xpub=xpub[:-1] + ("1" if xpub[-1] != "1" else "2"))  # bad checksum
    with pytest.raises(ValueError):
        address_deriver(xpub="not-an-xpub!")


def test_an_extended_private_key_is_refused() -> None:
    from bip_utils import Bip32Secp256k1, Bip39SeedGenerator

    seed = Bip39SeedGenerator(MNEMONIC).Generate()
    xprv = Bip32Secp256k1.FromSeedAndPath(seed, "m/44'/60'/0'").PrivateKey().ToExtended()
    with pytest.raises(ValueError, match="billing_deposit_xpub: an extended private key"):
        address_deriver(xpub=xprv)
