"""Card top-ups through Stripe: checkout sessions out, signed webhooks in.

Credit is granted only from webhooks, never from the redirect. The raw body is verified with
`stripe.Webhook.construct_event` (HMAC-SHA256 of `"{t}.{payload}"` with the webhook secret,
300 s tolerance). Each event id is applied once (`stripe_events` primary key, in the same
transaction as its effect). Out-of-order delivery is safe because each payment keeps state
that only moves forward: a completion credits once; refunds carry the processor's
cumulative `amount_refunded`, so the refund applied is always `min(refunded, credited) -
already applied`, whichever order the events arrive in; an expiry after a completion is ignored.
The payment is found through our own `gatemesh_payment_id` metadata, set on both the
session and its payment intent (so a charge event carries it too).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import stripe
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.runtime.errors import BadGateway, FailedPrecondition, InvalidArgument, Violations

from . import store
from .domain import Billing, check_account, check_key, new_id
from .model import scoped_key
from .store import CardPayment, StripeEvent

log = logging.getLogger("gatemesh.billing.cards")
MICROS_PER_CENT = 10_000
PAYMENT_META = "gatemesh_payment_id"


@dataclass
class CheckoutResult:
    session_id: str
    url: str


class CardTopups:
    """Checkout sessions and webhook fulfilment."""

    def __init__(
        self,
        billing: Billing,
        api_key: str,
        webhook_secret: str,
        api_base: str = "https://api.stripe.com",
        tolerance_s: int = 300,
        min_micros: int = 1_000_000,
        max_micros: int = 10_000_000_000,
    ) -> None:
        self.billing = billing
        self._client = stripe.StripeClient(
            api_key, base_addresses={"api": api_base}, http_client=stripe.HTTPXClient(), max_network_retries=2
        )
        self._secret = webhook_secret
        self.tolerance_s = tolerance_s
        self.min_micros, self.max_micros = min_micros, max_micros

    async def create_checkout(
        self, account_id: str, amount: int, success_url: str, cancel_url: str, idempotency_key: str
    ) -> CheckoutResult:
        v = Violations()
        check_account(v, account_id)
        v.check(
            self.min_micros <= amount <= self.max_micros and amount % MICROS_PER_CENT == 0,
            "amount_micros",
            f"whole cents between {self.min_micros} and {self.max_micros} micro-units",
        )
        v.check(success_url.startswith(("https://", "http://")), "success_url", "must be an http(s) URL")
        v.check(cancel_url.startswith(("https://", "http://")), "cancel_url", "must be an http(s) URL")
        check_key(v, idempotency_key)
        v.raise_if_any()
        params = {"account": account_id, "amount": amount, "success": success_url, "cancel": cancel_url}
        async with self.billing.engine.begin() as conn:
            first = await store.claim_key(conn, "checkout", scoped_key(account_id, idempotency_key), params)
            if first is not None:
                return CheckoutResult(**first)
            payment_id = new_id()
            session = await self._create_session(payment_id, account_id, amount, success_url, cancel_url)
            await conn.execute(
                CardPayment.__table__.insert().values(
                    id=payment_id, account_id=account_id, session_ref=session.id, amount=amount, status="open",
                    created_at=store.utcnow(),
                )
            )  # fmt: skip
            result = CheckoutResult(session.id, session.url or "")
            await store.finish_key(conn, "checkout", scoped_key(account_id, idempotency_key), result.__dict__)
            return result

    async def _create_session(
        self, payment_id: str, account_id: str, amount: int, success_url: str, cancel_url: str
    ) -> Any:
        metadata = {PAYMENT_META: payment_id, "gatemesh_account_id": account_id}
        try:
            return await self._client.v1.checkout.sessions.create_async(
                params={
                    "mode": "payment",
                    "success_url": success_url,
                    "cancel_url": cancel_url,
                    "client_reference_id": payment_id,
                    "line_items": [
                        {
                            "quantity": 1,
                            "price_data": {
                                "currency": "usd",
                                "unit_amount": amount // MICROS_PER_CENT,
                                "product_data": {"name": "Gatemesh credit"},
                            },
                        }
                    ],
                    "metadata": metadata,
                    "payment_intent_data": {"metadata": metadata},
                },
                options={"idempotency_key": payment_id},
            )
        except stripe.StripeError as error:
            log.warning("card processor refused a checkout session: %s", type(error).__name__)
            raise BadGateway("the card processor is not available; try again later") from None

    def verify(self, payload: bytes, signature: str) -> Any:
        """The verified event, or InvalidArgument (the edge answers 400)."""
        if not signature:
            raise InvalidArgument("missing Stripe-Signature header", field_violations={"stripe-signature": "required"})
        try:
            stripe.Webhook.construct_event(payload, signature, self._secret, tolerance=self.tolerance_s)
            return json.loads(payload)  # verified: read it as plain JSON
        except (ValueError, stripe.SignatureVerificationError):
            raise InvalidArgument("webhook signature verification failed") from None

    async def handle_webhook(self, payload: bytes, signature: str) -> str:
        """Apply one verified event exactly once; returns 'applied', 'duplicate' or 'ignored'."""
        event = self.verify(payload, signature)
        obj = event["data"]["object"]
        async with self.billing.engine.begin() as conn:
            fresh = await conn.execute(
                store.insert_ignore(conn, StripeEvent, ["id"]).values(
                    id=event["id"], type=event["type"], received_at=store.utcnow()
                )
            )
            if fresh.rowcount != 1:
                return "duplicate"
            payment = await self._payment(conn, obj)
            if payment is None:
                return "ignored"
            kind = event["type"]
            if kind in ("checkout.session.completed", "checkout.session.async_payment_succeeded"):
                await self._completed(conn, payment, obj)
            elif kind == "checkout.session.expired":
                if payment.status == "open":
                    await self._set(conn, payment.id, status="expired")
            elif kind in ("charge.refunded", "charge.refund.updated"):
                refunded = int(obj.get("amount_refunded") or 0) * MICROS_PER_CENT
                if refunded > payment.refunded_micros:
                    await self._set(conn, payment.id, refunded_micros=refunded)
            else:
                return "ignored"
            await self._apply_refunds(conn, payment.id)
        return "applied"

    async def _payment(self, conn: AsyncConnection, obj: Any) -> Any:
        metadata = obj.get("metadata") or {}
        payment_id = metadata.get(PAYMENT_META) or obj.get("client_reference_id")
        if not payment_id:
            return None
        t = CardPayment.__table__
        return (await conn.execute(select(t).where(t.c.id == payment_id).with_for_update())).one_or_none()

    async def _set(self, conn: AsyncConnection, payment_id: str, **values: Any) -> None:
        t = CardPayment.__table__
        await conn.execute(update(t).where(t.c.id == payment_id).values(**values))

    async def _completed(self, conn: AsyncConnection, payment: Any, obj: Any) -> None:
        if payment.credit_transfer_id or obj.get("payment_status") not in ("paid", "no_payment_required"):
            return
        if (obj.get("currency") or "usd").lower() != "usd":
            log.warning("checkout session in an unexpected currency ignored")
            return
        amount = int(obj.get("amount_total") or 0) * MICROS_PER_CENT
        if amount <= 0:
            return
        credit = await self.billing.credit(conn, payment.account_id, amount, "topup_card", "topup_card", payment.id)
        await self._set(
            conn,
            payment.id,
            status="paid",
            amount=amount,
            credit_transfer_id=credit.transfer_id,
            customer_ref=str(obj.get("customer") or ""),
            payment_ref=str(obj.get("payment_intent") or ""),
        )

    async def _apply_refunds(self, conn: AsyncConnection, payment_id: str) -> None:
        """Reverse what the processor refunded and we have not, up to what was credited."""
        t = CardPayment.__table__
        p = (await conn.execute(select(t).where(t.c.id == payment_id))).one()
        if not p.credit_transfer_id:
            return
        due = min(p.refunded_micros, p.amount) - p.refund_applied_micros
        if due <= 0:
            return
        try:
            await self.billing.refund_in(conn, p.credit_transfer_id, due)
        except FailedPrecondition:
            # The credit was already spent: take what is there; the rest is a recorded debt.
            available = await store.balance_of(conn, store.wallet(p.account_id), for_update=True)
            due = min(due, available)
            if due > 0:
                await self.billing.refund_in(conn, p.credit_transfer_id, due)
            log.warning("card refund exceeds the available balance; shortfall recorded on the payment")
        await self._set(conn, payment_id, refund_applied_micros=p.refund_applied_micros + due, status="refunded")
