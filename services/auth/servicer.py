"""AuthService over gRPC: proto in, domain call, proto out. No rules live here.

Failures are DomainErrors raised by the domain; the shared interceptor maps them to
status codes with details. The caller (`principal()`) has already been checked against
each method's declared access by the runtime.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from google.protobuf.message import Message

from gatemesh.auth.v1 import auth_pb2, auth_pb2_grpc
from gatemesh.common.v1 import common_pb2
from services.runtime.access import Authenticator, principal
from services.runtime.errors import InvalidArgument, Unavailable, Violations, batch_item
from services.runtime.validation import item_errors

from .domain import Accounts, Origin, dashboard
from .keys import Keys, KeySpec, Verified, VerifyIn
from .participant import timestamp
from .store import AccountRow, ApiKeyRow, utc

MAX_FIELD = 1024  # no free-text field of this API needs more; bigger input is refused


def account_proto(row: AccountRow) -> auth_pb2.Account:
    return auth_pb2.Account(
        account_id=row.account_id,
        email=row.email,
        role=row.role,  # type: ignore[arg-type]  # the name of a proto enum value, which protobuf takes where its stubs want the enum
        status=row.status,  # type: ignore[arg-type]  # the name of a proto enum value, which protobuf takes where its stubs want the enum
        created_at=timestamp(row.created_at),
        analytics_opt_out=row.analytics_opt_out,
        accepted_policy_version=row.accepted_policy_version,
    )


def key_proto(row: ApiKeyRow) -> auth_pb2.ApiKey:
    return auth_pb2.ApiKey(
        key_id=row.key_id,
        name=row.name,
        prefix=row.prefix,
        created_at=timestamp(row.created_at),
        last_used_at=timestamp(row.last_used_at),
        expires_at=timestamp(row.expires_at),
        revoked_at=timestamp(row.revoked_at),
        allowed_models=row.allowed_models,
        spend_cap_micros=row.spend_cap_micros,
        limits=auth_pb2.KeyLimits(requests_per_minute=row.rpm, tokens_per_minute=row.tpm),
    )


def key_spec(message: auth_pb2.CreateApiKeyRequest) -> KeySpec:
    return KeySpec(
        name=message.name,
        allowed_models=list(message.allowed_models),
        expires_at=utc(message.expires_at.ToDatetime()) if message.HasField("expires_at") else None,
        spend_cap_micros=message.spend_cap_micros,
        rpm=message.limits.requests_per_minute,
        tpm=message.limits.tokens_per_minute,
    )


def origin(context: grpc.aio.ServicerContext) -> Origin:
    metadata = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
    peer = context.peer() or ""
    kind, _, rest = peer.partition(":")
    peer_ip = rest.rsplit(":", 1)[0].strip("[]") if kind in ("ipv4", "ipv6") else ""
    return Origin.of(metadata.get("x-forwarded-for", ""), peer_ip, metadata.get("user-agent", ""))


def check_sizes(request: Message, *names: str) -> None:
    """Refuse oversized string fields before anything else looks at them."""
    v = Violations()
    for name in names:
        v.check(len(getattr(request, name)) <= MAX_FIELD, name, f"must be at most {MAX_FIELD} characters")
    v.raise_if_any()


def verify_in(request: auth_pb2.VerifyKeyRequest) -> VerifyIn:
    return VerifyIn(request.api_key, request.model, request.consume_rate_limit, request.estimated_tokens, request.lease)


def verify_response(verified: Verified) -> auth_pb2.VerifyKeyResponse:
    entry = verified.entry
    response = auth_pb2.VerifyKeyResponse(
        account_id=entry.account_id,
        key_id=entry.key_id,
        allowed_models=entry.allowed_models,
        spend_cap_micros=entry.spend_cap_micros,
        limits=auth_pb2.KeyLimits(requests_per_minute=entry.rpm, tokens_per_minute=entry.tpm),
        remaining_requests=verified.remaining_requests,
        remaining_tokens=verified.remaining_tokens,
        analytics_opt_out=entry.analytics_opt_out,
    )
    if entry.expires_at:
        response.expires_at.FromNanoseconds(int(entry.expires_at * 1e9))
    if verified.lease_tag:
        response.lease_tag = verified.lease_tag
        share = verified.share
        if share is not None and share.share_requests:
            response.rate_share.requests = share.share_requests
            response.rate_share.tokens = share.share_tokens
            response.rate_share.valid_ms = share.share_ms
    return response


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    """The AuthService RPCs."""

    def __init__(self, accounts: Accounts, keys: Keys, authenticate: Authenticator) -> None:
        self.accounts = accounts
        self.keys = keys
        self.authenticate = authenticate

    # accounts ---------------------------------------------------------------------------

    async def SignUp(
        self, request: auth_pb2.SignUpRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.SignUpResponse:
        check_sizes(request, "email", "password", "accepted_policy_version")
        account = await self.accounts.sign_up(
            request.email, request.password, request.age_attested, request.accepted_policy_version, origin(context)
        )
        return auth_pb2.SignUpResponse(account=account_proto(account))

    async def SignIn(
        self, request: auth_pb2.SignInRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.SignInResponse:
        check_sizes(request, "email", "password")
        session = await self.accounts.sign_in(request.email, request.password, origin(context))
        return auth_pb2.SignInResponse(
            session_token=session.token,
            expires_at=timestamp(session.expires_at),
            account=account_proto(session.account),
        )

    async def SignOut(
        self, request: auth_pb2.SignOutRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.SignOutResponse:
        await self.accounts.sign_out(principal())
        return auth_pb2.SignOutResponse()

    async def GetMe(self, request: auth_pb2.GetMeRequest, context: grpc.aio.ServicerContext) -> auth_pb2.GetMeResponse:
        return auth_pb2.GetMeResponse(account=account_proto(await self.accounts.get(principal().account_id)))

    async def ChangePassword(
        self, request: auth_pb2.ChangePasswordRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ChangePasswordResponse:
        check_sizes(request, "current_password", "new_password")
        await self.accounts.change_password(
            dashboard(principal()), request.current_password, request.new_password, origin(context)
        )
        return auth_pb2.ChangePasswordResponse()

    async def ChangeEmail(
        self, request: auth_pb2.ChangeEmailRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ChangeEmailResponse:
        check_sizes(request, "new_email", "password")
        account = await self.accounts.change_email(
            dashboard(principal()), request.new_email, request.password, origin(context)
        )
        return auth_pb2.ChangeEmailResponse(account=account_proto(account))

    async def CloseAccount(
        self, request: auth_pb2.CloseAccountRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.CloseAccountResponse:
        check_sizes(request, "password")
        account = await self.accounts.close(dashboard(principal()), request.password, origin(context))
        return auth_pb2.CloseAccountResponse(account=account_proto(account))

    async def SetAnalyticsOptOut(
        self, request: auth_pb2.SetAnalyticsOptOutRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.SetAnalyticsOptOutResponse:
        account = await self.accounts.set_analytics_opt_out(dashboard(principal()), request.opt_out)
        return auth_pb2.SetAnalyticsOptOutResponse(account=account_proto(account))

    async def AcceptPolicy(
        self, request: auth_pb2.AcceptPolicyRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.AcceptPolicyResponse:
        check_sizes(request, "version")
        account = await self.accounts.accept_policy(dashboard(principal()), request.version)
        return auth_pb2.AcceptPolicyResponse(account=account_proto(account))

    # keys -------------------------------------------------------------------------------

    async def _create_key(
        self, account: AccountRow, spec: auth_pb2.CreateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.CreateApiKeyResponse:
        check_sizes(spec, "name")
        made = await self.keys.create(account.account_id, account.status, key_spec(spec), origin(context))
        return auth_pb2.CreateApiKeyResponse(api_key=made.api_key, key=key_proto(made.row))

    async def CreateApiKey(
        self, request: auth_pb2.CreateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.CreateApiKeyResponse:
        return await self._create_key(await self.accounts.get(dashboard(principal()).account_id), request, context)

    async def _list(self, account_id: str, page: common_pb2.PageRequest) -> auth_pb2.ListApiKeysResponse:
        check_sizes(page, "page_token")
        rows, token = await self.keys.list(account_id, page.page_size, page.page_token)
        return auth_pb2.ListApiKeysResponse(
            keys=[key_proto(r) for r in rows], page=common_pb2.PageResponse(next_page_token=token)
        )

    async def ListApiKeys(
        self, request: auth_pb2.ListApiKeysRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ListApiKeysResponse:
        return await self._list(principal().account_id, request.page)

    async def RevokeApiKey(
        self, request: auth_pb2.RevokeApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.RevokeApiKeyResponse:
        key = await self.keys.revoke(request.key_id, dashboard(principal()).account_id, origin(context))
        return auth_pb2.RevokeApiKeyResponse(key=key_proto(key))

    async def RotateApiKey(
        self, request: auth_pb2.RotateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.RotateApiKeyResponse:
        made = await self.keys.rotate(request.key_id, dashboard(principal()).account_id, origin(context))
        return auth_pb2.RotateApiKeyResponse(api_key=made.api_key, key=key_proto(made.row))

    # admin ------------------------------------------------------------------------------

    async def AdminCreateAccount(
        self, request: auth_pb2.AdminCreateAccountRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.AdminCreateAccountResponse:
        check_sizes(request, "email", "password")
        account, generated = await self.accounts.admin_create(request.email, request.password, request.role)
        return auth_pb2.AdminCreateAccountResponse(account=account_proto(account), generated_password=generated)

    async def AdminGetAccount(
        self, request: auth_pb2.AdminGetAccountRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.AdminGetAccountResponse:
        check_sizes(request, "account_id", "email")
        account = await self.accounts.find(request.account_id, request.email)
        return auth_pb2.AdminGetAccountResponse(account=account_proto(account))

    async def AdminCloseAccount(
        self, request: auth_pb2.AdminCloseAccountRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.CloseAccountResponse:
        check_sizes(request, "account_id", "email")
        account = await self.accounts.close_for_holder(request.account_id, request.email, origin(context))
        return auth_pb2.CloseAccountResponse(account=account_proto(account))

    async def AdminCreateApiKey(
        self, request: auth_pb2.AdminCreateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.CreateApiKeyResponse:
        check_sizes(request, "email")
        return await self._create_key(await self.accounts.find("", request.email), request.key, context)

    async def AdminListApiKeys(
        self, request: auth_pb2.AdminListApiKeysRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ListApiKeysResponse:
        check_sizes(request, "email")
        return await self._list((await self.accounts.find("", request.email)).account_id, request.page)

    async def AdminRevokeApiKey(
        self, request: auth_pb2.RevokeApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.RevokeApiKeyResponse:
        key = await self.keys.revoke(request.key_id, None, origin(context))
        return auth_pb2.RevokeApiKeyResponse(key=key_proto(key))

    async def AdminUpdateApiKey(
        self, request: auth_pb2.AdminUpdateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.AdminUpdateApiKeyResponse:
        check_sizes(request, "key_id")
        key = await self.keys.update(
            request.key_id, list(request.allowed_models), request.spend_cap_micros, origin(context)
        )
        return auth_pb2.AdminUpdateApiKeyResponse(key=key_proto(key))

    # internal ---------------------------------------------------------------------------

    async def VerifyKey(
        self, request: auth_pb2.VerifyKeyRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.VerifyKeyResponse:
        return await self._verify(request)

    async def VerifyKeyBatch(
        self, request: auth_pb2.VerifyKeyBatchRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.VerifyKeyBatchResponse:
        """Each item verified as VerifyKey would, the rate limits in one Redis round trip; one
        outcome per item."""
        if not 0 < len(request.items) <= 1000:
            raise InvalidArgument("a batch holds 1 to 1000 items", field_violations={"items": "1 to 1000 items"})
        sized: list[Exception | None] = list(item_errors(request.items))
        for index, item in enumerate(request.items):
            try:
                check_sizes(item, "api_key", "model")
            except InvalidArgument as error:
                sized[index] = sized[index] or error
        wanted = [verify_in(item) for item, error in zip(request.items, sized, strict=True) if error is None]
        verified = iter(await self.keys.verify_many(wanted))
        outcomes = [error or next(verified) for error in sized]
        return auth_pb2.VerifyKeyBatchResponse(
            items=[batch_item(auth_pb2.VerifyKeyBatchItem, outcome, verify_response) for outcome in outcomes]
        )

    async def _verify(self, request: auth_pb2.VerifyKeyRequest) -> auth_pb2.VerifyKeyResponse:
        check_sizes(request, "api_key", "model")
        r = verify_in(request)
        return verify_response(await self.keys.verify(r.api_key, r.model, r.consume, r.estimated_tokens, r.lease))

    async def WatchKeyChanges(
        self, request: auth_pb2.WatchKeyChangesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[auth_pb2.KeyChange]:
        """The key-change push to a proxy (see `leases`): ready, then changes and heartbeats."""
        cache = self.keys.cache
        if not cache.listening.is_set():
            raise Unavailable("key changes cannot be followed right now; retry shortly", retry_after_s=1)
        feed = cache.feed
        watcher = feed.subscribe()
        yield auth_pb2.KeyChange(ready=True, heartbeat_ms=int(feed.heartbeat_s * 1000))
        async for tags, written in feed.stream(watcher):
            yield auth_pb2.KeyChange(lease_tags=tags)
            if written is not None and not written.done():
                written.set_result(None)

    async def ReportTokens(
        self, request: auth_pb2.ReportTokensRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ReportTokensResponse:
        await self.keys.report_tokens(request.key_id, request.token_delta)
        return auth_pb2.ReportTokensResponse()

    async def ListAnalyticsOptOuts(
        self, request: auth_pb2.ListAnalyticsOptOutsRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ListAnalyticsOptOutsResponse:
        return auth_pb2.ListAnalyticsOptOutsResponse(account_ids=await self.accounts.store.opted_out_accounts())

    async def ResolveSubject(
        self, request: auth_pb2.ResolveSubjectRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ResolveSubjectResponse:
        check_sizes(request.subject, "account_id", "email")
        account = await self.accounts.find(request.subject.account_id, request.subject.email)
        return auth_pb2.ResolveSubjectResponse(
            account_id=account.account_id,
            role=account.role,  # type: ignore[arg-type]  # the name of a proto enum value, which protobuf takes where its stubs want the enum
            status=account.status,  # type: ignore[arg-type]  # the name of a proto enum value, which protobuf takes where its stubs want the enum
        )

    async def ListClosedAccounts(
        self, request: auth_pb2.ListClosedAccountsRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ListClosedAccountsResponse:
        limit = min(request.limit or 1000, 1000)
        rows = await self.accounts.store.closed_accounts(limit)
        closed = [auth_pb2.ClosedAccount(account_id=a, closed_at=timestamp(at)) for a, at in rows]
        return auth_pb2.ListClosedAccountsResponse(accounts=closed)

    async def ListAccountsByPolicyVersion(
        self, request: auth_pb2.ListAccountsByPolicyVersionRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ListAccountsByPolicyVersionResponse:
        ids, token = await self.accounts.accounts_by_policy(
            request.version, request.accepted, request.page.page_size, request.page.page_token
        )
        return auth_pb2.ListAccountsByPolicyVersionResponse(
            account_ids=ids, page=common_pb2.PageResponse(next_page_token=token)
        )

    async def Authenticate(
        self, request: auth_pb2.AuthenticateRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.AuthenticateResponse:
        check_sizes(request, "credential")
        caller = await self.authenticate(request.credential)
        return auth_pb2.AuthenticateResponse(
            principal=auth_pb2.Principal(
                account_id=caller.account_id,
                role=caller.role,  # type: ignore[arg-type]  # the name of a proto enum value, which protobuf takes where its stubs want the enum
                key_id=caller.key_id,
                session_id=caller.session_id,
                operator=caller.operator,
            )
        )
