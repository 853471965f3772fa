"""The use cases of data-subject requests: raise, approve, read, list, retry, certify.

Each use case resolves the subject through auth (never storing an email), applies the
rules of `domain`, and writes the request, its steps and its audit event in one
transaction, so that a refused request leaves nothing behind. Every staff action on a
subject's request, reads included, is an audit event (P6.3).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from opentelemetry import propagate, trace

from services.runtime.access import Principal
from services.runtime.emails import check_email, normalize_email
from services.runtime.errors import FailedPrecondition, NotFound, PermissionDenied, Violations

from . import audit, domain
from .domain import Actor, Draft
from .participants import Participants, Subjects
from .settings import PrivacySettings
from .store import PrivacyStore, RequestView, utcnow
from .tables import ApprovalRow, RequestRow, StepRow
from .vault import Vault

tracer = trace.get_tracer("gatemesh.privacy")
DUE_SOON = timedelta(days=7)


def actor_of(caller: Principal) -> Actor:
    """The local operator counts as one staff member, named "operator"."""
    if caller.operator:
        return Actor(domain.OPERATOR, staff=True)
    return Actor(caller.account_id, staff=caller.is_compliance)


def new_request_id() -> str:
    return f"pr_{secrets.token_hex(12)}"


def check_request_id(request_id: str) -> None:
    v = Violations()
    v.check(bool(request_id), "request_id", "is required")
    v.check(len(request_id) <= 40 and request_id.startswith("pr_"), "request_id", "must be a request id (pr_...)")
    v.raise_if_any("invalid request id")


def new_trace_context() -> str:
    """A root span for the request's whole run: every step's span joins its trace."""
    with tracer.start_as_current_span("privacy.request", context=trace.set_span_in_context(trace.INVALID_SPAN)):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
    return carrier.get("traceparent", "")


@dataclass
class Requests:
    settings: PrivacySettings
    store: PrivacyStore
    participants: Participants
    subjects: Subjects
    vault: Vault

    def pseudonym(self, account_id: str) -> str:
        return domain.subject_pseudonym(self.settings.secret("key_hmac_secret"), account_id)

    # --- raising ------------------------------------------------------------------------

    async def raise_self_service(
        self, caller: Principal, type_: int, new_email: str, reason: str, dry_run: bool
    ) -> RequestView:
        """The account holder about their own account (P8.1-P8.4): no approval needed."""
        if not caller.account_id:
            raise PermissionDenied("self-service requests need a signed-in account; staff use the admin routes")
        actor = Actor(domain.SUBJECT, staff=False)  # never the account id: it would outlive an erasure
        d = domain.draft(type_, actor, origin=domain.SELF_SERVICE, new_email=new_email, reason=reason, dry_run=dry_run)
        subject = await self.subjects.resolve(account_id=caller.account_id)
        domain.check_subject(d, actor, subject.account_id, subject.status)
        return await self._created(d, subject.account_id)

    async def raise_for_subject(
        self,
        caller: Principal,
        type_: int,
        account_id: str,
        email: str,
        identity_verification: str,
        reason: str,
        new_email: str,
        dry_run: bool,
    ) -> RequestView:
        """Compliance staff on the subject's behalf (P8.5), saying how identity was verified."""
        actor = actor_of(caller)
        v = Violations()
        v.check(bool(account_id or email), "subject", "name the subject by account_id or email")
        if email and not account_id:
            email = normalize_email(email)
            check_email(v, "subject.email", email)
        v.raise_if_any()
        d = domain.draft(
            type_,
            actor,
            origin=domain.STAFF,
            new_email=new_email,
            reason=reason,
            identity_verification=identity_verification,
            dry_run=dry_run,
        )
        subject = await self.subjects.resolve(account_id=account_id, email=email)
        domain.check_subject(d, actor, subject.account_id, subject.status)
        return await self._created(d, subject.account_id)

    async def _created(self, d: Draft, account_id: str) -> RequestView:
        view = await self._store(d, account_id, utcnow())
        assert view is not None  # only closure erasures carry a dedup key
        return view

    async def raise_for_closure(self, account_id: str, closed_at: datetime | None) -> bool:
        """An erasure for a closed account (P5.4), once per account, due 30 days after closure."""
        d = Draft(domain.ERASURE, domain.ACCOUNT_CLOSED, "auth", "", "account closed (P5.4)", False, {})
        subject_id = self.pseudonym(account_id)
        received = utcnow()
        return await self._store(d, account_id, received, dedup=f"closed:{subject_id}", due_from=closed_at) is not None

    async def _store(
        self,
        d: Draft,
        account_id: str,
        received: datetime,
        dedup: str | None = None,
        due_from: datetime | None = None,
    ) -> RequestView | None:
        datamap = await self.participants.datamap()  # everyone must answer: nothing starts half-mapped
        steps = domain.plan(d, self.participants.configured)
        request = RequestRow(
            request_id=new_request_id(),
            type=d.type,
            status=domain.AWAITING_APPROVAL if d.needs_approval else domain.RUNNING,
            subject_id=self.pseudonym(account_id),
            account_id=account_id,
            origin=d.origin,
            requested_by=d.requested_by,
            identity_verification=d.identity_verification,
            reason=d.reason,
            dry_run=d.dry_run,
            dedup_key=dedup,
            changes=d.changes,
            datamap=datamap,
            received_at=received,
            due_at=domain.due_at(due_from or received, self.settings.privacy_due_days),
            trace_context=new_trace_context(),
        )
        rows = [
            StepRow(
                request_id=request.request_id,
                participant=s.participant,
                address=s.address,
                phase=s.phase,
                run_order=s.order,
                status=domain.PENDING,
                next_attempt_at=received,
            )
            for s in steps
        ]
        event = {
            "event": "request_created",
            "request_id": request.request_id,
            "actor": d.requested_by,
            "subject_id": request.subject_id,
            "details": {
                "type": domain.TYPE_NAMES[d.type],
                "origin": d.origin,
                "steps": len(rows),
                "dry_run": d.dry_run,
            },
            "at": received,
        }
        if not await self.store.create(request, rows, event):
            return None  # the dedup key's request exists
        return await self._view(request.request_id)

    # --- approving, retrying ------------------------------------------------------------

    async def approve(self, caller: Principal, request_id: str) -> RequestView:
        check_request_id(request_id)
        approver = actor_of(caller)
        now = utcnow()
        async with self.store.transaction() as db:
            request = await self.store.lock_request(db, request_id)
            if request is None:
                raise NotFound("no such request", reason="UNKNOWN_REQUEST")
            approvals = [a.staff_id for a in await self.store.approvals(db, request_id)]
            domain.check_approval(request.type, request.status, request.requested_by, approver, approvals)
            if approver.actor_id == request.account_id:
                raise PermissionDenied("staff cannot approve an erasure of their own account")
            db.add(ApprovalRow(request_id=request_id, staff_id=approver.actor_id, approved_at=now))
            request.status = domain.RUNNING
            db.add(request)
            await self.store.release_waiting_steps(db, request_id, now)
            await self.store.append_audit(
                db, event="request_approved", request_id=request_id, actor=approver.actor_id,
                subject_id=request.subject_id, at=now,
            )  # fmt: skip
        self.store.queued.set()  # committed: the steps are this instance's worker's to run now
        return await self._view(request_id)

    async def retry(self, caller: Principal, request_id: str) -> RequestView:
        """Staff put a request needing attention back in the queue. After verification
        findings the whole erasure runs again as a new round."""
        check_request_id(request_id)
        actor = actor_of(caller)
        now = utcnow()
        async with self.store.transaction() as db:
            request = await self.store.lock_request(db, request_id)
            if request is None:
                raise NotFound("no such request", reason="UNKNOWN_REQUEST")
            if request.status != domain.NEEDS_ATTENTION:
                raise FailedPrecondition("only a request needing attention can be retried")
            if request.findings:
                request.round += 1
                request.findings = []
                reset = await self.store.reset_steps(db, request_id, [domain.ERASE, domain.VERIFY], now)
            else:
                reset = await self.store.reset_steps(db, request_id, [], now)
            request.status = domain.RUNNING
            db.add(request)
            await self.store.append_audit(
                db, event="request_retried", request_id=request_id, actor=actor.actor_id,
                subject_id=request.subject_id, details={"steps": reset, "round": request.round}, at=now,
            )  # fmt: skip
        self.store.queued.set()
        return await self._view(request_id)

    # --- reading ------------------------------------------------------------------------

    async def _view(self, request_id: str) -> RequestView:
        view = await self.store.view(request_id)
        if view is None:
            raise NotFound("no such request", reason="UNKNOWN_REQUEST")
        return view

    async def own(self, caller: Principal, request_id: str) -> RequestView:
        """One of the caller's own requests; another's is reported as unknown (P6.3)."""
        check_request_id(request_id)
        view = await self.store.view(request_id)
        if view is None or not caller.account_id or view.request.subject_id != self.pseudonym(caller.account_id):
            raise NotFound("no such request", reason="UNKNOWN_REQUEST")
        return view

    async def own_list(self, caller: Principal, offset: int, limit: int) -> list[RequestView]:
        if not caller.account_id:
            raise PermissionDenied("self-service requests need a signed-in account")
        return await self.store.list_views(subject_id=self.pseudonym(caller.account_id), offset=offset, limit=limit)

    async def staff_view(self, caller: Principal, request_id: str, event: str = "request_viewed") -> RequestView:
        """Any request, for staff; the access is recorded (P6.3)."""
        check_request_id(request_id)
        view = await self._view(request_id)
        async with self.store.transaction() as db:
            await self.store.append_audit(
                db, event=event, request_id=request_id, actor=actor_of(caller).actor_id,
                subject_id=view.request.subject_id,
            )  # fmt: skip
        return view

    async def staff_list(self, overdue: bool, attention: bool, offset: int, limit: int) -> list[RequestView]:
        due_before = utcnow() + DUE_SOON if overdue else None
        return await self.store.list_views(due_before=due_before, attention=attention, offset=offset, limit=limit)

    # --- certificates, audit --------------------------------------------------------------

    async def certificate(self, caller: Principal, request_id: str) -> tuple[str, str]:
        view = await self.staff_view(caller, request_id, event="certificate_viewed")
        if not view.request.certificate or not view.request.signature:
            raise FailedPrecondition("the request has no certificate: only a completed erasure has one")
        return view.request.certificate, view.request.signature

    def verify_certificate(self, document: str, signature: str) -> bool:
        return self.vault.verify(document, signature)

    async def verify_audit(self) -> tuple[bool, int, int]:
        events = [e async for e in self.store.audit_events()]
        return audit.verify_chain(events)
