"""The rules of data-subject requests, without gRPC or SQL.

- Who may raise what: the account holder about themselves (self-service, P8.1-P8.4), or
  compliance staff on their behalf, saying how identity was verified (P8.5). Staff never
  erase their own account through the staff route, and a staff-raised erasure waits for a
  second, different compliance member (self-service and closure erasures need none).
- Which steps a request is made of: one per participant and phase. Erasure runs its
  participants phase by phase (the configured order: proxy, billing, auth last), then a
  verification export from every participant; a dry run only exports and counts.
- How a failed participant call is treated: UNAVAILABLE, DEADLINE_EXCEEDED and
  RESOURCE_EXHAUSTED are retried with exponential backoff and full jitter; anything else,
  or too many attempts, needs attention.
- What verification accepts: after erasure, a participant may still return records only
  where the data map retains them under legal hold (P5.5), with every other personal
  field empty.
- The subject is named, everywhere privacy keeps it, by a keyed pseudonym of the account id.
"""

from __future__ import annotations

import hashlib
import hmac
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from services.runtime.emails import check_email, normalize_email
from services.runtime.errors import FailedPrecondition, PermissionDenied, Violations

ACCESS, RECTIFICATION, ERASURE = 1, 2, 3
TYPE_NAMES = {ACCESS: "access", RECTIFICATION: "rectification", ERASURE: "erasure"}
AWAITING_APPROVAL, RUNNING, NEEDS_ATTENTION, COMPLETED = 1, 2, 3, 4
STATUS_NAMES = {
    AWAITING_APPROVAL: "awaiting approval",
    RUNNING: "running",
    NEEDS_ATTENTION: "needs attention",
    COMPLETED: "completed",
}
PENDING, STEP_RUNNING, DONE, ATTENTION = 1, 2, 3, 4
SELF_SERVICE, STAFF, ACCOUNT_CLOSED = 1, 2, 3

EXPORT, RECTIFY, ERASE, VERIFY, DRY_RUN = "export", "rectify", "erase", "verify", "dry-run"
VERIFY_ORDER = 1000  # after every erasure phase

ROLE_COMPLIANCE, ROLE_ADMIN = 3, 2
LEGAL_HOLD = 3  # gatemesh.privacy.v1.ERASURE_STRATEGY_LEGAL_HOLD
OPERATOR = "operator"
SUBJECT = "subject"  # requested_by of self-service requests
MAX_TEXT = 500
RETRYABLE = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"})  # gRPC status code names


@dataclass(frozen=True)
class Participant:
    """A configured PrivacyParticipant and its erasure phase."""

    name: str
    address: str
    phase: int


@dataclass(frozen=True)
class Actor:
    """Who raises or approves a request: the account holder, a staff member or the operator."""

    actor_id: str  # an account id, or "operator"
    staff: bool


@dataclass(frozen=True)
class Draft:
    """A validated request, before it is stored."""

    type: int
    origin: int
    requested_by: str
    identity_verification: str
    reason: str
    dry_run: bool
    changes: dict[str, str]

    @property
    def needs_approval(self) -> bool:
        return self.type == ERASURE and self.origin == STAFF and not self.dry_run


@dataclass(frozen=True)
class PlannedStep:
    participant: str
    address: str
    phase: str
    order: int


def subject_pseudonym(secret: str, account_id: str) -> str:
    """The subject's pseudonymous id: a keyed hash, stable per account, linking to nobody
    without the secret."""
    digest = hmac.new(secret.encode(), f"privacy-subject:{account_id}".encode(), hashlib.sha256).hexdigest()
    return f"subj-{digest[:32]}"


def due_at(received: datetime, days: int) -> datetime:
    """P5.4, P8.1: a request is answered within `days` (30) of its receipt."""
    return received + timedelta(days=days)


def check_text(v: Violations, name: str, value: str, required: bool = False) -> None:
    if required and not value.strip():
        v.add(name, "is required")
    elif len(value) > MAX_TEXT:
        v.add(name, f"must be at most {MAX_TEXT} characters")


def draft(
    type_: int,
    actor: Actor,
    *,
    origin: int,
    new_email: str = "",
    reason: str = "",
    identity_verification: str = "",
    dry_run: bool = False,
) -> Draft:
    """Validate a new request's fields (every problem reported at once, nothing started)."""
    v = Violations()
    v.check(type_ in TYPE_NAMES, "type", "must be ACCESS, RECTIFICATION or ERASURE")
    changes: dict[str, str] = {}
    if type_ == RECTIFICATION:
        email = normalize_email(new_email)
        check_email(v, "new_email", email)
        changes["email"] = email
    else:
        v.check(not new_email, "new_email", "is only for rectification requests")
    v.check(not dry_run or type_ == ERASURE, "dry_run", "is only for erasure requests")
    check_text(v, "reason", reason, required=origin == STAFF and type_ == ERASURE)
    check_text(v, "identity_verification", identity_verification, required=origin == STAFF)
    v.raise_if_any()
    return Draft(type_, origin, actor.actor_id, identity_verification.strip(), reason.strip(), dry_run, changes)


def check_subject(d: Draft, actor: Actor, account_id: str, status: int) -> None:
    """Refuse a request about an account that cannot have one, or a staff member erasing
    their own account (that needs another member to raise it)."""
    if status == 3:  # gatemesh.auth.v1.ACCOUNT_STATUS_ERASED
        raise FailedPrecondition("the subject's account has already been erased")
    if d.origin == STAFF and d.type == ERASURE and actor.actor_id == account_id:
        raise PermissionDenied("staff cannot raise an erasure of their own account; another compliance member must")


def check_approval(
    request_type: int, status: int, requested_by: str, approver: Actor, approvals: Sequence[str]
) -> None:
    """A second, different compliance member approves a staff-raised erasure."""
    if request_type != ERASURE or status != AWAITING_APPROVAL:
        raise FailedPrecondition("this request is not waiting for an approval")
    if approver.actor_id == requested_by:
        raise PermissionDenied("the requester cannot approve their own request; a second compliance member must")
    if approver.actor_id in approvals:
        raise FailedPrecondition("this member has already approved the request")


def plan(d: Draft, participants: Sequence[Participant]) -> list[PlannedStep]:
    """The steps of a request, in run order."""
    if d.type == ACCESS:
        return [PlannedStep(p.name, p.address, EXPORT, 1) for p in participants]
    if d.type == RECTIFICATION:
        return [PlannedStep(p.name, p.address, RECTIFY, 1) for p in participants]
    if d.dry_run:
        return [PlannedStep(p.name, p.address, DRY_RUN, 1) for p in participants]
    steps = [PlannedStep(p.name, p.address, ERASE, p.phase) for p in participants]
    steps += [PlannedStep(p.name, p.address, VERIFY, VERIFY_ORDER) for p in participants]
    return sorted(steps, key=lambda s: (s.order, s.participant))


def participant_request_id(request_id: str, round_: int) -> str:
    """The id participants are idempotent on: a staff retry after verification findings is
    a new round, so that participants apply their strategies again."""
    return request_id if round_ == 0 else f"{request_id}.{round_}"


def retryable(code: Enum) -> bool:
    """Whether a participant call that failed with this status code (a `grpc.StatusCode`,
    read by name so that the rules import no transport) may succeed when tried again."""
    return code.name in RETRYABLE


def retry_delay(attempts: int, base_s: float, cap_s: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2^(attempts-1))]
    so that retries of many steps after an outage do not arrive together."""
    ceiling = min(cap_s, base_s * (2 ** max(0, attempts - 1)))
    return (rng or random).uniform(ceiling / 2, ceiling)


# --- the data map -------------------------------------------------------------------------


def datamap_fields(datamap: Mapping[str, Any], participant: str) -> list[dict[str, Any]]:
    return list(datamap.get("participants", {}).get(participant, {}).get("fields", []))


def store_of(datamap: Mapping[str, Any], participant: str) -> dict[str, str]:
    """{record message: store} of one participant."""
    return {f["message"]: f["store"] for f in datamap_fields(datamap, participant)}


def strategies(datamap: Mapping[str, Any], participant: str) -> dict[str, dict[str, int]]:
    """{record message: {personal field: erasure strategy}} of one participant."""
    found: dict[str, dict[str, int]] = {}
    for f in datamap_fields(datamap, participant):
        found.setdefault(f["message"], {})[f["field"]] = int(f.get("personal", {}).get("erasure", 0))
    return found


def legal_basis(datamap: Mapping[str, Any], participant: str, store: str) -> str:
    """Why a store is retained: the purposes of its legal-hold fields."""
    purposes = {
        f.get("personal", {}).get("purpose", "")
        for f in datamap_fields(datamap, participant)
        if f["store"] == store and int(f.get("personal", {}).get("erasure", 0)) == LEGAL_HOLD
    }
    basis = "; ".join(sorted(p for p in purposes if p))
    return f"P5.5 legal hold, pseudonymized ({basis})" if basis else "P5.5 legal hold, pseudonymized"


def _empty(value: Any) -> bool:
    return value in (None, "", 0, False, [], {}, "0")


def findings(datamap: Mapping[str, Any], participant: str, records: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """What a post-erasure export still holds that it must not: {store: records}.

    A record may remain only if its message keeps fields under legal hold and every other
    personal field is empty; a record of a message without legal-hold fields is a finding."""
    fields = strategies(datamap, participant)
    stores = store_of(datamap, participant)
    found: dict[str, int] = {}
    for record in records:
        message, data = record.get("message", ""), record.get("data", {})
        declared = fields.get(message, {})
        held = any(s == LEGAL_HOLD for s in declared.values())
        exposed = any(s != LEGAL_HOLD and not _empty(data.get(name)) for name, s in declared.items())
        if exposed or not held:
            store = stores.get(message, message or "unknown")
            found[store] = found.get(store, 0) + 1
    return found


def page_findings(
    datamap: Mapping[str, Any], participant: str, counts: Mapping[str, int], records: Callable[[], list[Any]]
) -> dict[str, int]:
    """`findings` of one export page given its records per message: a page holding only
    messages without legal-hold fields is all findings, counted without parsing it;
    otherwise `records()` is parsed and looked into."""
    fields = strategies(datamap, participant)
    if any(LEGAL_HOLD in fields.get(message, {}).values() for message in counts):
        return findings(datamap, participant, records())
    stores = store_of(datamap, participant)
    found: dict[str, int] = {}
    for message, n in counts.items():
        store = stores.get(message, message or "unknown")
        found[store] = found.get(store, 0) + n
    return found


def dry_run_counts(datamap: Mapping[str, Any], participant: str, counts: Mapping[str, int]) -> list[dict]:
    """What an erasure would do to each store, from the records per message an export
    holds: the strategy the data map gives it (legal hold wins over the others: the row
    stays)."""
    fields = strategies(datamap, participant)
    stores = store_of(datamap, participant)
    found: dict[str, list[int]] = {}
    for message, n in counts.items():
        declared = fields.get(message, {}).values()
        strategy = LEGAL_HOLD if LEGAL_HOLD in declared else max(declared, default=1)
        entry = found.setdefault(stores.get(message, message), [strategy, 0])
        entry[1] += n
    return [{"store": s, "strategy": st, "count": n} for s, (st, n) in sorted(found.items())]


def dry_run_actions(datamap: Mapping[str, Any], participant: str, records: Iterable[Mapping[str, Any]]) -> list[dict]:
    """`dry_run_counts` over records (dicts with their "message")."""
    counts: dict[str, int] = {}
    for record in records:
        counts[record.get("message", "")] = counts.get(record.get("message", ""), 0) + 1
    return dry_run_counts(datamap, participant, counts)
