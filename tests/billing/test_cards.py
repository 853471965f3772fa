"""Card top-ups: checkout at a local stand-in of the processor, webhooks signed as the
processor signs them, duplicates and out-of-order delivery."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.billing.cards import CardTopups
from services.billing.domain import Billing
from services.runtime.errors import InvalidArgument

from .ledger_checks import assert_invariants, ledger_snapshot
from .stripe_standin import WEBHOOK_SECRET, StandIn, completed, event, processor, refunded, sign

USD = 1_000_000


@pytest.fixture
def standin() -> Iterator[tuple[str, StandIn]]:
    with processor() as found:
        yield found


@pytest.fixture
def cards(billing: Billing, standin: tuple[str, StandIn]) -> CardTopups:
    return CardTopups(billing, "sk_test_standin", WEBHOOK_SECRET, api_base=standin[0])


async def deliver(cards: CardTopups, payload: bytes) -> str:
    return await cards.handle_webhook(payload, sign(payload))


async def checkout(cards: CardTopups, state: StandIn, account: str = "card1", amount: int = 20 * USD) -> dict:
    result = await cards.create_checkout(account, amount, "https://x/ok", "https://x/no", f"k-{account}")
    return state.sessions[result.session_id]


async def test_checkout_session_is_created_at_the_processor_idempotently(
    cards: CardTopups, standin: tuple[str, StandIn]
) -> None:
    _, state = standin
    first = await cards.create_checkout("card1", 12_340_000, "https://x/ok", "https://x/no", "k1")
    again = await cards.create_checkout("card1", 12_340_000, "https://x/ok", "https://x/no", "k1")
    assert first == again and len(state.requests) == 1
    sent = state.requests[0]
    assert sent["line_items[0][price_data][unit_amount]"] == "1234"
    assert sent["line_items[0][price_data][currency]"] == "usd"
    assert sent["metadata[gatemesh_payment_id]"] == sent["payment_intent_data[metadata][gatemesh_payment_id]"]
    assert state.idempotency_keys[0]  # the processor gets an idempotency key too
    assert first.url.startswith("https://checkout.example/")


@pytest.mark.parametrize("amount", [0, -1, 1_000_001 + 5, 10])
async def test_checkout_refuses_bad_amounts(cards: CardTopups, amount: int) -> None:
    with pytest.raises(InvalidArgument):
        await cards.create_checkout("card1", amount, "https://x/ok", "https://x/no", "k")


async def test_completion_credits_once_despite_duplicate_deliveries(
    billing: Billing, cards: CardTopups, standin: tuple[str, StandIn]
) -> None:
    session = await checkout(cards, standin[1])
    payload = event("evt_1", "checkout.session.completed", completed(session))
    assert await deliver(cards, payload) == "applied"
    assert await deliver(cards, payload) == "duplicate"
    # The processor may also send a second, distinct event for the same completion.
    assert await deliver(cards, event("evt_1b", "checkout.session.completed", completed(session))) == "applied"
    assert (await billing.balance("card1")).balance_micros == 20 * USD
    await assert_invariants(billing.engine)


async def test_bad_or_stale_signatures_are_refused_and_change_nothing(
    billing: Billing, cards: CardTopups, standin: tuple[str, StandIn]
) -> None:
    session = await checkout(cards, standin[1])
    payload = event("evt_2", "checkout.session.completed", completed(session))
    before = await ledger_snapshot(billing.engine)
    import time

    for signature in ("", sign(payload, secret="whsec_other"), sign(payload, at=int(time.time()) - 301), "t=1,v1=zz"):
        with pytest.raises(InvalidArgument):
            await cards.handle_webhook(payload, signature)
    tampered = payload.replace(b'"amount_total": 2000', b'"amount_total": 9000')
    with pytest.raises(InvalidArgument):
        await cards.handle_webhook(tampered, sign(payload))
    assert await ledger_snapshot(billing.engine) == before
    assert await deliver(cards, payload) == "applied"  # the event id was not burnt by the refusals


async def test_refund_delivered_before_completion_is_applied_after_it(
    billing: Billing, cards: CardTopups, standin: tuple[str, StandIn]
) -> None:
    session = await checkout(cards, standin[1])
    await deliver(cards, event("evt_r", "charge.refunded", refunded(session, 500)))  # 5 USD refunded, first
    assert (await billing.balance("card1")).balance_micros == 0
    await deliver(cards, event("evt_c", "checkout.session.completed", completed(session)))
    assert (await billing.balance("card1")).balance_micros == 15 * USD
    # An older cumulative refund arriving late changes nothing; a larger one applies the difference.
    await deliver(cards, event("evt_r0", "charge.refunded", refunded(session, 200)))
    assert (await billing.balance("card1")).balance_micros == 15 * USD
    await deliver(cards, event("evt_r2", "charge.refunded", refunded(session, 800)))
    assert (await billing.balance("card1")).balance_micros == 12 * USD
    await assert_invariants(billing.engine)


async def test_expiry_after_completion_is_ignored_and_unknown_events_are_harmless(
    billing: Billing, cards: CardTopups, standin: tuple[str, StandIn]
) -> None:
    session = await checkout(cards, standin[1])
    await deliver(cards, event("evt_c", "checkout.session.completed", completed(session)))
    await deliver(cards, event("evt_x", "checkout.session.expired", {**session, "status": "expired"}))
    assert await deliver(cards, event("evt_u", "customer.created", {"id": "cus_1", "metadata": {}})) == "ignored"
    assert (await billing.balance("card1")).balance_micros == 20 * USD


async def test_unpaid_completion_does_not_credit(
    billing: Billing, cards: CardTopups, standin: tuple[str, StandIn]
) -> None:
    session = await checkout(cards, standin[1])
    unpaid = {**completed(session), "payment_status": "unpaid"}
    await deliver(cards, event("evt_c", "checkout.session.completed", unpaid))
    assert (await billing.balance("card1")).balance_micros == 0
    await deliver(cards, event("evt_p", "checkout.session.async_payment_succeeded", completed(session)))
    assert (await billing.balance("card1")).balance_micros == 20 * USD
