"""The JSON-RPC node that end-to-end tests give billing's own process (tests/billing/
chain_node.py): the watcher, talking HTTP to it as it talks to a real node, credits a
transfer once, after its confirmations."""

from __future__ import annotations

from web3 import Web3

from services.billing.chain import ChainDeposits, Token, address_deriver
from services.billing.domain import Billing
from tests.billing.chain_node import chain_node
from tests.billing.test_chain import MNEMONIC, deposits


async def test_the_watcher_credits_over_json_rpc_http_P1_2(billing: Billing) -> None:
    """P1.2: the deposit's on-chain details come from the node over HTTP."""
    with chain_node() as node:
        w3 = Web3(Web3.HTTPProvider(node.url))
        token = Token.parse({"symbol": "USDC", "contract": node.token, "decimals": 6})
        watcher = ChainDeposits(
            billing, w3, node.chain_id, [token], address_deriver(mnemonic=MNEMONIC), confirmations=2
        )
        address = await watcher.deposit_address("alice")
        tx_hash = node.pay(address, 3_000_000)
        assert await watcher.run_once() == 0  # one confirmation: not yet
        node.mine(1)
        assert await watcher.run_once() == 1
        assert await watcher.run_once() == 0
    assert [tuple(d) for d in await deposits(billing)] == [("credited", 3_000_000, "3000000")]
    async with billing.engine.connect() as conn:
        stored = (await conn.exec_driver_sql("SELECT tx_hash FROM chain_deposits")).scalar_one()
    assert stored == tx_hash
