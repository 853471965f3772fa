"""Auth as a PrivacyParticipant: the data map, export, rectification and erasure of
everything auth holds about a person (P8.1-P8.3).

- DescribeData comes from the field options of auth.proto (`runtime.participant`).
- Export renders each stored row as its record message. Credential hashes (argon2id
  password hash, key HMACs) are reported as held but not exported: they serve no purpose
  to the subject and would only help someone attack them.
- Rectify understands "email".
- Erase anonymizes the account row (email becomes `erased-<id>@invalid`, status ERASED,
  so ids in other services' legal-hold records still resolve to nobody) and deletes the
  password hash, keys, sessions, security events and policy acceptances; keys are
  revoked in every cache. It is idempotent per request_id: the first result is stored and
  replayed. An erased account exports nothing. Then the touched tables are purged
  (`runtime.participant.purge`: VACUUM on PostgreSQL), so that the old email and hashes
  leave the storage files too; a replay purges again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from google.protobuf.message import Message

from gatemesh.auth.v1 import auth_pb2
from gatemesh.privacy.v1 import participant_pb2, participant_pb2_grpc
from services.runtime.errors import InvalidArgument, NotFound, Violations
from services.runtime.participant import describe_data, json_page, message_records, purge, to_record
from services.runtime.timestamps import optional_timestamp as timestamp

from .domain import ERASED, Accounts, check_email, normalize_email
from .keycache import KeyCache
from .store import AccountRow, now

SERVICE = "auth"
HELD = "(held, not exported)"
# What an erasure deletes from or rewrites: vacuumed after it.
TOUCHED_BY_ERASURE = ("accounts", "api_keys", "sessions", "security_events", "policy_acceptances")


def _record(message: type[Message], row: Any, **fields: Any) -> Any:
    """A record message from a row: same-named fields, timestamps converted, extras applied."""
    values: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        if field.name in fields:
            values[field.name] = fields[field.name]
        elif hasattr(row, field.name):
            value = getattr(row, field.name)
            values[field.name] = timestamp(value) if isinstance(value, datetime) else value
    return message(**{k: v for k, v in values.items() if v is not None})


class AuthParticipant(participant_pb2_grpc.PrivacyParticipantServicer):
    """PrivacyParticipant over auth's store."""

    def __init__(self, accounts: Accounts, cache: KeyCache) -> None:
        self.accounts = accounts
        self.store = accounts.store
        self.cache = cache

    async def _subject(self, subject: Any) -> AccountRow | None:
        if not subject.account_id and not subject.email:
            raise InvalidArgument("name the subject", field_violations={"subject": "account_id or email is required"})
        if subject.account_id:
            return await self.store.account_by_id(subject.account_id)
        return await self.store.account_by_email(normalize_email(subject.email))

    async def DescribeData(self, request: Any, context: Any) -> participant_pb2.DescribeDataResponse:
        return describe_data(SERVICE, [auth_pb2.DESCRIPTOR])

    async def ExportSubject(self, request: Any, context: Any) -> participant_pb2.ExportSubjectResponse:
        response = participant_pb2.ExportSubjectResponse(service=SERVICE)
        account = await self._subject(request.subject)
        if account is None or account.status == ERASED:
            return response
        response.records.extend(to_record(record) for record in await self._records(account))
        return response

    async def _records(self, account: AccountRow) -> list[Any]:
        """The account's record messages (credential hashes reported as held)."""
        records = [_record(auth_pb2.AccountRecord, account, password_hash=HELD if account.password_hash else "")]
        rows = await self.store.subject_rows(account.account_id)
        records += [_record(auth_pb2.ApiKeyRecord, row, key_hash=HELD) for row in rows["api_keys"]]
        records += [_record(auth_pb2.SessionRecord, row) for row in rows["sessions"]]
        records += [_record(auth_pb2.SecurityEventRecord, row) for row in rows["security_events"]]
        records += [_record(auth_pb2.PolicyAcceptanceRecord, row) for row in rows["policy_acceptances"]]
        return records

    async def StreamExportSubject(
        self, request: Any, context: Any
    ) -> AsyncIterator[participant_pb2.StreamExportSubjectResponse]:
        """Auth holds little per person (an account, its keys, sessions, events): one page,
        rendered as JSON (empty once the account is erased)."""
        account = await self._subject(request.subject)
        records = await self._records(account) if account is not None and account.status != ERASED else []
        yield json_page(SERVICE, message_records(records))

    async def RectifySubject(self, request: Any, context: Any) -> participant_pb2.RectifySubjectResponse:
        v = Violations()
        for name in request.changes:
            v.check(name == "email", f"changes.{name}", "auth can rectify only 'email'")
        email = normalize_email(request.changes.get("email", ""))
        if "email" in request.changes:
            check_email(v, "changes.email", email)
        v.raise_if_any()
        account = await self._subject(request.subject)
        if account is None or account.status == ERASED:
            raise NotFound("no such subject")
        response = participant_pb2.RectifySubjectResponse(service=SERVICE)
        if email and email != account.email:
            await self.accounts.set_email(account.account_id, email)
            response.updated["auth.accounts"] = 1
        return response

    async def EraseSubject(self, request: Any, context: Any) -> participant_pb2.EraseSubjectResponse:
        v = Violations()
        v.check(0 < len(request.request_id) <= 128, "request_id", "is required (at most 128 characters)")
        v.raise_if_any()
        response = participant_pb2.EraseSubjectResponse(service=SERVICE)
        previous = await self.store.erasure_result(request.request_id)
        if previous is None:
            account = await self._subject(request.subject)
            done = await self.store.erase(request.request_id, account.account_id if account else "", now())
            if done is not None:
                actions, hashes = done
                await self.cache.revoke(hashes)
                response.actions.extend(participant_pb2.ErasureAction(**a) for a in actions)
            else:
                previous = await self.store.erasure_result(request.request_id) or []
        if previous is not None:
            response.replayed = True
            response.actions.extend(participant_pb2.ErasureAction(**a) for a in previous)
        purged_at, response.purge = await purge(self.store.engine, TOUCHED_BY_ERASURE)
        response.purged_at.CopyFrom(purged_at)
        return response
