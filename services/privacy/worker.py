"""The worker: claims due steps, calls their participant, records the outcome, and
finishes a request when its last step is done.

- Claims are leases (`store.claim`): on PostgreSQL `FOR UPDATE SKIP LOCKED`, so instances
  on one database never take the same step; a heartbeat extends the lease while a long
  call (a large export) runs, and a worker killed mid-step stops renewing it, so another
  resumes the step once it expires. Participants are idempotent per request id, so the
  repeat changes nothing.
- Retries: UNAVAILABLE, DEADLINE_EXCEEDED and RESOURCE_EXHAUSTED come back after an
  exponential, jittered delay; anything else, or `privacy_max_attempts`, needs attention.
- Finishing runs under the request's row lock, once: an access request's export becomes
  downloadable for 7 days; an erasure's verification findings send it to needs-attention,
  otherwise its certificate is signed, the privacy service forgets the subject (account
  id, pending changes, exports) and the touched tables are vacuumed.
- Tracing: each step is a span in the request's own trace (its stored traceparent), and
  the gRPC client instrumentation adds a span per participant call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import grpc
from opentelemetry import propagate, trace
from sqlalchemy import update
from sqlmodel.ext.asyncio.session import AsyncSession

from services.runtime import metrics

from . import audit, domain
from .participants import Participants
from .settings import PrivacySettings
from .store import PrivacyStore, utcnow
from .tables import ExportRow, RequestRow, StepRow
from .vault import Vault

log = logging.getLogger("gatemesh.privacy.worker")
tracer = trace.get_tracer("gatemesh.privacy")
STRATEGY_NAMES = {1: "delete", 2: "anonymize", 3: "legal_hold"}
MIN_WAIT_S = 0.05  # a due step another instance holds locked is looked at again after this


def worker_id() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(3)}"


class Worker:
    def __init__(
        self,
        settings: PrivacySettings,
        store: PrivacyStore,
        participants: Participants,
        vault: Vault,
        on_step: Callable[[StepRow], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.participants = participants
        self.vault = vault
        self.owner = worker_id()
        self.on_step = on_step

    async def run_forever(self) -> None:
        while True:
            try:
                if not await self.run_once():
                    await self.idle()
            except Exception as error:  # a database hiccup: log the type only, try again
                log.error("worker round failed (%s)", type(error).__name__)
                await asyncio.sleep(self.settings.privacy_worker_interval_s)

    async def idle(self) -> None:
        """Nothing was due: wait until a step queued here (the store's `queued`), the next
        step's time (a retry, an expiring lease), or `privacy_worker_interval_s` at most,
        for steps other instances queued. Polling at a fixed 0.2 s cost an idle instance
        24 ms of CPU a second, and PostgreSQL five transactions."""
        interval = self.settings.privacy_worker_interval_s
        due = await self.store.next_due_s(utcnow())
        wait = interval if due is None else min(interval, max(due, MIN_WAIT_S))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.store.queued.wait(), wait)

    async def run_once(self) -> int:
        """Claim and run one batch of due steps; returns how many ran."""
        self.store.queued.clear()  # what is queued from here on wakes the next idle wait
        now = utcnow()
        lease = now + timedelta(seconds=self.settings.privacy_lease_s)
        steps = await self.store.claim(self.owner, now, lease, self.settings.privacy_worker_batch)
        await asyncio.gather(*(self._run(step) for step in steps))
        return len(steps)

    # --- one step -------------------------------------------------------------------------

    async def _run(self, step: StepRow) -> None:
        async with self.store.sessions() as db:
            request = await db.get(RequestRow, step.request_id)
        if request is None:
            return
        context = propagate.extract({"traceparent": request.trace_context}) if request.trace_context else None
        attributes = {
            "privacy.request_id": request.request_id,
            "privacy.participant": step.participant,
            "privacy.phase": step.phase,
            "privacy.attempt": step.attempts,
        }
        with tracer.start_as_current_span(
            f"privacy.{step.phase} {step.participant}", context=context, attributes=attributes
        ):
            heartbeat = asyncio.create_task(self._heartbeat(step))
            try:
                counts, result = await self._call(step, request)
            except grpc.aio.AioRpcError as error:
                await self._failed(step, request, error.code())
            except Exception as error:
                log.error(
                    "step %s of %s failed (%s)", step.phase, step.participant, type(error).__name__, exc_info=True
                )
                await self._failed(step, request, grpc.StatusCode.INTERNAL)
            else:
                await self._done(step, request, counts, result)
            finally:
                heartbeat.cancel()
        if self.on_step:
            self.on_step(step)

    async def _heartbeat(self, step: StepRow) -> None:
        """Extend the lease while the call runs, so only a dead worker loses it."""
        every = self.settings.privacy_lease_s / 3
        while True:
            await asyncio.sleep(every)
            async with self.store.transaction() as db:
                await db.execute(
                    update(StepRow)
                    .where(StepRow.step_id == step.step_id, StepRow.lease_owner == self.owner)
                    .values(lease_expires_at=utcnow() + timedelta(seconds=self.settings.privacy_lease_s))
                )

    async def _call(self, step: StepRow, request: RequestRow) -> tuple[dict[str, int], dict[str, Any]]:
        account = request.account_id or ""
        pid = domain.participant_request_id(request.request_id, request.round)
        if step.phase == domain.RECTIFY:
            return await self.participants.rectify(step.participant, account, pid, dict(request.changes)), {}
        if step.phase == domain.ERASE:
            result = await self.participants.erase(step.participant, account, pid)
            return {a["store"]: a["count"] for a in result["actions"]}, result
        if step.phase == domain.EXPORT:
            return await self._export(step, request, account, pid), {}
        return await self._inspect(step, request, account, pid)

    async def _export(self, step: StepRow, request: RequestRow, account: str, pid: str) -> dict[str, int]:
        """Store the participant's records as encrypted chunks, one per page: the page's
        JSON bytes are sealed as they came, while the next page streams in (sealing runs in
        a thread: zlib and AES-GCM release the GIL)."""
        await self.store.drop_export_part(request.request_id, step.participant)
        stores = domain.store_of(request.datamap, step.participant)
        counts: dict[str, int] = {}
        expires = utcnow() + timedelta(days=self.settings.privacy_export_ttl_days)
        storing: asyncio.Task[None] | None = None

        async def store_chunk(seq: int, plaintext: bytes) -> None:
            place = f"{request.request_id}/{step.participant}/{seq}"
            nonce, sealed = await asyncio.to_thread(self.vault.seal, plaintext, place)
            await self.store.add_export_chunk(
                ExportRow(
                    request_id=request.request_id, part=step.participant, seq=seq, subject_id=request.subject_id,
                    nonce=nonce, ciphertext=sealed, created_at=utcnow(), expires_at=expires,
                )
            )  # fmt: skip

        try:
            seq = 0
            async for page in self.participants.export_pages(step.participant, account, pid):
                for message, n in page.counts.items():
                    store = stores.get(message, message)
                    counts[store] = counts.get(store, 0) + n
                if storing is not None:
                    await storing
                storing = asyncio.create_task(store_chunk(seq, page.json))
                seq += 1
            if storing is not None:
                await storing
        finally:
            if storing is not None and not storing.done():
                storing.cancel()
        return counts

    async def _inspect(
        self, step: StepRow, request: RequestRow, account: str, pid: str
    ) -> tuple[dict[str, int], dict[str, Any]]:
        """Dry run (what erasure would do) or verification (what erasure left)."""
        records = 0
        found: dict[str, int] = {}
        actions: dict[str, dict[str, Any]] = {}
        async for page in self.participants.export_pages(step.participant, account, pid):
            records += sum(page.counts.values())
            if step.phase == domain.VERIFY:
                page_found = domain.page_findings(request.datamap, step.participant, page.counts, page.records)
                for store, n in page_found.items():
                    found[store] = found.get(store, 0) + n
            else:
                for a in domain.dry_run_counts(request.datamap, step.participant, page.counts):
                    entry = actions.setdefault(a["store"], {"store": a["store"], "strategy": a["strategy"], "count": 0})
                    entry["count"] += a["count"]
        if step.phase == domain.VERIFY:
            return {"records": records, "findings": sum(found.values())}, {"findings": found}
        return {a["store"]: a["count"] for a in actions.values()}, {"actions": list(actions.values())}

    # --- outcomes -------------------------------------------------------------------------

    async def _done(self, step: StepRow, request: RequestRow, counts: dict[str, int], result: dict[str, Any]) -> None:
        now = utcnow()
        vacuum = False
        async with self.store.transaction() as db:
            values = {"status": domain.DONE, "counts": counts, "result": result, "finished_at": now, "last_error": ""}
            if not await self.store.settle_step(db, step, self.owner, **values):
                return  # the lease went to another worker: its outcome counts, not ours
            metrics.PRIVACY_STEPS.labels(step.participant, "done").inc()
            await self.store.append_audit(
                db, event=f"step_{step.phase}_done", request_id=request.request_id, actor=step.participant,
                subject_id=request.subject_id, at=now,
                details={"counts": counts, "attempt": step.attempts, "worker": self.owner},
            )  # fmt: skip
            vacuum = await self._finish_if_complete(db, request.request_id)
        if vacuum:
            how = await self.store.vacuum()
            async with self.store.transaction() as db:
                await self.store.append_audit(
                    db, event="privacy_storage_purged", request_id=request.request_id, actor="privacy",
                    subject_id=request.subject_id, details={"how": how},
                )  # fmt: skip

    async def _failed(self, step: StepRow, request: RequestRow, code: grpc.StatusCode) -> None:
        now = utcnow()
        again = domain.retryable(code) and step.attempts < self.settings.privacy_max_attempts
        async with self.store.transaction() as db:
            if again:
                delay = domain.retry_delay(
                    step.attempts, self.settings.privacy_backoff_s, self.settings.privacy_backoff_max_s
                )
                values = {"status": domain.PENDING, "next_attempt_at": now + timedelta(seconds=delay)}
            else:
                values = {"status": domain.ATTENTION, "finished_at": now}
            if not await self.store.settle_step(db, step, self.owner, last_error=code.name, **values):
                return
            metrics.PRIVACY_STEPS.labels(step.participant, "retry" if again else "needs_attention").inc()
            event = "step_retry_scheduled" if again else "step_needs_attention"
            await self.store.append_audit(
                db, event=event, request_id=request.request_id, actor=step.participant, subject_id=request.subject_id,
                details={"code": code.name, "attempt": step.attempts, "phase": step.phase}, at=now,
            )  # fmt: skip
            if not again:
                locked = await self.store.lock_request(db, request.request_id)
                if locked is not None and locked.status == domain.RUNNING:
                    locked.status = domain.NEEDS_ATTENTION
                    db.add(locked)
                    request_metric(locked)

    async def _finish_if_complete(self, db: AsyncSession, request_id: str) -> bool:
        """Finish the request if every step is done; True when the privacy tables need a vacuum."""
        request = await self.store.lock_request(db, request_id)
        if request is None or request.status != domain.RUNNING:
            return False
        steps = await self.store.steps(db, request_id)
        if any(s.status != domain.DONE for s in steps):
            return False
        now = utcnow()
        erasure = request.type == domain.ERASURE and not request.dry_run
        found = [
            f"{s.participant}/{store}: {n}"
            for s in steps
            if s.phase == domain.VERIFY
            for store, n in sorted(s.result.get("findings", {}).items())
        ]
        details: dict[str, Any]
        if erasure and found:
            request.status, request.findings = domain.NEEDS_ATTENTION, found
            event, details = "verification_failed", {"findings": len(found)}
        else:
            request.status, request.completed_at = domain.COMPLETED, now
            event, details = "request_completed", {}
            if request.type == domain.ACCESS:
                request.export_expires_at = now + timedelta(days=self.settings.privacy_export_ttl_days)
            if request.type == domain.RECTIFICATION:
                request.changes = {}
            if erasure:
                forgotten = await self.store.forget_subject(db, request.subject_id)
                approvals = [a.staff_id for a in await self.store.approvals(db, request_id)]
                document = certificate(request, steps, approvals, forgotten, self.store.postgres, self.vault.public_key)
                request.certificate, request.signature = document, self.vault.sign(document)
                request.account_id, request.changes = None, {}
                event, details = "erasure_certified", {"privacy": forgotten}
        db.add(request)
        request_metric(request)
        await self.store.append_audit(
            db, event=event, request_id=request_id, actor="privacy", subject_id=request.subject_id,
            details=details, at=now,
        )  # fmt: skip
        return erasure and not found


def request_metric(request: RequestRow) -> None:
    """Count a request reaching its final status, by kind and status name."""
    status = domain.STATUS_NAMES.get(request.status, "unknown").replace(" ", "_")
    metrics.PRIVACY_REQUESTS.labels(domain.TYPE_NAMES.get(request.type, "unknown"), status).inc()


def certificate(
    request: RequestRow,
    steps: list[StepRow],
    approvals: list[str],
    forgotten: dict[str, int],
    postgres: bool,
    public_key: str,
) -> str:
    """The erasure certificate, as the canonical JSON that is signed: what was erased and
    what retained, per service and store, with counts, times and legal bases, naming the
    subject only by its pseudonymous id."""
    verified = {s.participant: s for s in steps if s.phase == domain.VERIFY}
    services = []
    for s in (s for s in steps if s.phase == domain.ERASE):
        erased, retained = [], []
        for a in s.result.get("actions", []):
            entry = {"store": a["store"], "strategy": STRATEGY_NAMES.get(a["strategy"], "unknown"), "count": a["count"]}
            if a["strategy"] == domain.LEGAL_HOLD:
                entry["legal_basis"] = domain.legal_basis(request.datamap, s.participant, a["store"])
                retained.append(entry)
            else:
                erased.append(entry)
        check = verified.get(s.participant)
        services.append(
            {
                "service": s.participant,
                "phase": s.run_order,
                "applied_at": _iso(s.finished_at),
                "erased": erased,
                "retained": retained,
                "verified_at": _iso(check.finished_at) if check else None,
                "records_left_for_subject": check.counts.get("records", 0) if check else None,
                "storage_purged_at": s.result.get("purged_at"),
                "storage_purge": s.result.get("purge") or "not reported: dropped at the store's next vacuum",
            }
        )
    purged = [str(s["storage_purged_at"] or "") for s in services]
    storage = {
        # When the last participant removed the erased values from its storage files (dead row
        # versions vacuumed, or overwritten by SQLite's secure_delete); None if one did not say.
        "participants_purged_at": max(purged) if purged and all(purged) else None,
        "privacy": (
            "its own touched tables are vacuumed right after this certificate is issued "
            "(audit event privacy_storage_purged)"
            if postgres
            else "SQLite secure_delete overwrote its erased values at once, and its write-ahead log is "
            "checkpointed and truncated right after this certificate is issued"
        ),
    }
    body = {
        "kind": "gatemesh.erasure-certificate",
        "version": 1,
        "request_id": request.request_id,
        "subject_id": request.subject_id,
        "origin": request.origin,
        "reason": request.reason,
        "requested_by": request.requested_by,
        "approved_by": approvals,
        "received_at": _iso(request.received_at),
        "due_at": _iso(request.due_at),
        "issued_at": _iso(utcnow()),
        "round": request.round,
        "services": services,
        "privacy": {"erased": forgotten},
        "storage": storage,
        "public_key": public_key,
    }
    return audit.canonical(body)


def _iso(moment: Any) -> str | None:
    return moment.isoformat(timespec="seconds") + "Z" if moment is not None else None
