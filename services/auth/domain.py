"""The rules of accounts and sessions: validation, password hashing, sign-in throttling,
the security log, policy acceptance, closure. No gRPC and no SQL here: the store and the
Redis adapters are handed in, so unit tests reach every rule without a server.

Secrets never leave this module in the clear except once, to the caller that asked for
them: passwords become argon2id hashes (P6.2), session tokens become HMACs, and error
messages say what is wrong, never what was sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from redis.exceptions import RedisError

from services.runtime.access import ROLE_ADMIN, ROLE_COMPLIANCE, ROLE_USER, Principal
from services.runtime.emails import check_email, normalize_email
from services.runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Violations,
)

from .limits import SignInThrottle
from .store import AccountRow, AuthStore, PolicyAcceptanceRow, SecurityEventRow, SessionRow, now, utc

ACTIVE, CLOSED, ERASED = 1, 2, 3
ROLES = (ROLE_USER, ROLE_ADMIN, ROLE_COMPLIANCE)
MIN_PASSWORD, MAX_PASSWORD = 12, 256
SESSION_PREFIX = "gms_"


def new_id(kind: str) -> str:
    return f"{kind}_{uuid.uuid4().hex}"


def check_password(v: Violations, name: str, password: str) -> None:
    if not password:
        v.add(name, "is required")
    elif len(password) < MIN_PASSWORD:
        v.add(name, f"must be at least {MIN_PASSWORD} characters")
    elif len(password) > MAX_PASSWORD:
        v.add(name, f"must be at most {MAX_PASSWORD} characters")


def dashboard(caller: Principal) -> Principal:
    """Account and key management needs a dashboard session: a leaked API key must not be
    able to mint more keys, change the password or close the account."""
    if caller.key_id:
        raise PermissionDenied("this action needs a dashboard session, not an API key")
    return caller


@dataclass(frozen=True)
class Origin:
    """Where a request came from, for the security log (P1.5)."""

    ip: str = ""
    user_agent: str = ""

    @classmethod
    def of(cls, forwarded_for: str, peer_ip: str, user_agent: str) -> Origin:
        candidate = forwarded_for.split(",")[0].strip() if forwarded_for else peer_ip
        try:
            ip = str(ipaddress.ip_address(candidate))
        except ValueError:
            ip = ""
        return cls(ip=ip, user_agent=user_agent[:512])


class Passwords:
    """argon2id hashing off the event loop (it is deliberately slow and memory-hard)."""

    def __init__(self, time_cost: int, memory_kib: int, parallelism: int) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=Type.ID
        )
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, stored: str, password: str) -> bool:
        """True when `password` matches; an unknown account verifies against a dummy hash
        so that its timing does not reveal whether the email exists."""

        def check() -> bool:
            try:
                return self._hasher.verify(stored or self._dummy, password) and bool(stored)
            except (VerificationError, InvalidHashError):
                return False

        return await asyncio.to_thread(check)

    def needs_rehash(self, stored: str) -> bool:
        return self._hasher.check_needs_rehash(stored)


class Hmac:
    """Keyed hashes of secrets (API keys, session tokens) under the server secret."""

    def __init__(self, secret: str) -> None:
        self._secret = secret.encode()

    def __call__(self, value: str) -> str:
        return hmac.new(self._secret, value.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Session:
    token: str
    expires_at: datetime
    account: AccountRow


@dataclass(frozen=True)
class AccountPolicy:
    """The account rules that come from configuration. The policy version to accept is the
    one the privacy service publishes (`current_version`, cached there); `policy_version`,
    from the settings, is used while none is published or when nothing asks privacy."""

    policy_version: str
    session_ttl_s: int
    security_log_days: int
    current_version: Callable[[], Awaitable[str]] | None = None

    async def current(self) -> str:
        return await self.current_version() if self.current_version else self.policy_version


Revoker = Callable[[list[str]], Awaitable[None]]


class Accounts:
    """Sign-up, sign-in, sessions and the account holder's own changes."""

    def __init__(
        self,
        store: AuthStore,
        passwords: Passwords,
        hmac_of: Hmac,
        throttle: SignInThrottle,
        policy: AccountPolicy,
        revoke_keys: Revoker,
        invalidate_keys: Revoker,
    ) -> None:
        self.store = store
        self.passwords = passwords
        self.hmac_of = hmac_of
        self.throttle = throttle
        self.policy = policy
        self._revoke_keys = revoke_keys
        self._invalidate_keys = invalidate_keys

    async def log(self, event: str, account_id: str | None, origin: Origin) -> None:
        row = SecurityEventRow(
            event_id=new_id("evt"),
            account_id=account_id,
            event=event,
            ip=origin.ip,
            user_agent=origin.user_agent,
            created_at=now(),
        )
        await self.store.add_event(row)

    async def sign_up(
        self, email: str, password: str, age_attested: bool, policy_version: str, origin: Origin
    ) -> AccountRow:
        email = normalize_email(email)
        v = Violations()
        check_email(v, "email", email)
        check_password(v, "password", password)
        v.check(age_attested, "age_attested", "you must be 13 or older to use the service (P9.1)")
        current = await self.policy.current()
        if not policy_version:
            v.add("accepted_policy_version", "is required")
        elif policy_version != current:
            v.add("accepted_policy_version", f"must be the current policy version {current}")
        v.raise_if_any()
        account = await self._create(email, password, ROLE_USER, age_attested=True, policy_version=policy_version)
        await self.log("sign_up", account.account_id, origin)
        return account

    async def _create(
        self, email: str, password: str, role: int, *, age_attested: bool, policy_version: str
    ) -> AccountRow:
        if await self.store.email_taken(email):
            raise AlreadyExists("an account with this email exists", field_violations={"email": "is taken"})
        at = now()
        account = AccountRow(
            account_id=new_id("acct"),
            email=email,
            password_hash=await self.passwords.hash(password),
            role=role,
            status=ACTIVE,
            age_attested=age_attested,
            accepted_policy_version=policy_version,
            created_at=at,
        )
        acceptance = (
            PolicyAcceptanceRow(account_id=account.account_id, version=policy_version, accepted_at=at)
            if policy_version
            else None
        )
        return await self.store.create_account(account, acceptance)

    async def admin_create(self, email: str, password: str, role: int) -> tuple[AccountRow, str]:
        """An operator creates an account; without a password one is generated (returned once)."""
        email = normalize_email(email)
        v = Violations()
        check_email(v, "email", email)
        if password:
            check_password(v, "password", password)
        v.check(role in (0, *ROLES), "role", "must be user, admin or compliance")
        v.raise_if_any()
        generated = "" if password else secrets.token_urlsafe(18)
        account = await self._create(
            email, password or generated, role or ROLE_USER, age_attested=False, policy_version=""
        )
        return account, generated

    async def sign_in(self, email: str, password: str, origin: Origin) -> Session:
        email = normalize_email(email)
        v = Violations()
        check_email(v, "email", email)
        v.check(bool(password), "password", "is required")
        v.check(len(password) <= MAX_PASSWORD, "password", f"must be at most {MAX_PASSWORD} characters")
        v.raise_if_any()
        try:
            wait = await self.throttle.retry_after(email, origin.ip)
        except RedisError:
            raise Unavailable("sign-in is unavailable; retry shortly", retry_after_s=1) from None
        if wait is not None:
            raise ResourceExhausted(
                "too many failed sign-ins; try again later", retry_after_s=wait, openai_code="rate_limit_exceeded"
            )
        account = await self.store.account_by_email(email)
        stored = account.password_hash if account is not None and account.status == ACTIVE else ""
        if not await self.passwords.verify(stored, password):
            await self.throttle.failed(email, origin.ip)
            await self.log("sign_in_failed", account.account_id if account else None, origin)
            raise Unauthenticated("wrong email or password")
        assert account is not None
        await self.throttle.succeeded(email)
        if self.passwords.needs_rehash(stored):
            await self.store.update_account(account.account_id, password_hash=await self.passwords.hash(password))
        return await self._open_session(account, origin)

    async def _open_session(self, account: AccountRow, origin: Origin) -> Session:
        token = SESSION_PREFIX + secrets.token_urlsafe(32)
        at = now()
        expires = at + timedelta(seconds=self.policy.session_ttl_s)
        await self.store.add_session(
            SessionRow(
                session_id=new_id("sess"),
                account_id=account.account_id,
                token_hash=self.hmac_of(token),
                created_at=at,
                expires_at=expires,
                ip=origin.ip,
                user_agent=origin.user_agent,
            )
        )
        await self.log("sign_in", account.account_id, origin)
        return Session(token=token, expires_at=expires, account=account)

    async def session_principal(self, token: str) -> Principal:
        found = await self.store.session_by_hash(self.hmac_of(token))
        if found is None:
            raise Unauthenticated("invalid or expired session")
        session, account = found
        expires = utc(session.expires_at)
        if account.status != ACTIVE or expires is None or expires <= now():
            raise Unauthenticated("invalid or expired session")
        return Principal(account_id=account.account_id, role=account.role, session_id=session.session_id)

    async def sign_out(self, caller: Principal) -> None:
        if not caller.session_id:
            # The credential (an API key) may not do this: 403, as for any other refused action.
            raise PermissionDenied("sign-out ends a dashboard session; this call did not use one")
        await self.store.end_sessions(caller.account_id, session_id=caller.session_id)

    async def get(self, account_id: str) -> AccountRow:
        account = await self.store.account_by_id(account_id) if account_id else None
        if account is None:
            raise NotFound("no such account")
        return account

    async def find(self, account_id: str, email: str) -> AccountRow:
        """An account by id or email (admin and privacy lookups)."""
        if not account_id and not email:
            raise InvalidArgument("name the account", field_violations={"account_id": "or email is required"})
        account = (
            await self.store.account_by_id(account_id)
            if account_id
            else await self.store.account_by_email(normalize_email(email))
        )
        if account is None:
            raise NotFound("no such account")
        return account

    async def _confirm(self, caller: Principal, password: str, field: str) -> AccountRow:
        """The caller's active account, after checking its password."""
        v = Violations()
        v.check(bool(password), field, "is required")
        v.check(len(password) <= MAX_PASSWORD, field, f"must be at most {MAX_PASSWORD} characters")
        v.raise_if_any()
        account = await self.get(caller.account_id)
        if account.status != ACTIVE:
            raise FailedPrecondition("the account is closed")
        if not await self.passwords.verify(account.password_hash, password):
            raise PermissionDenied("the password is wrong", field_violations={field: "does not match"})
        return account

    async def change_password(self, caller: Principal, current: str, new: str, origin: Origin) -> None:
        v = Violations()
        check_password(v, "new_password", new)
        v.raise_if_any()
        account = await self._confirm(caller, current, "current_password")
        await self.store.update_account(account.account_id, password_hash=await self.passwords.hash(new))
        await self.store.end_sessions(account.account_id, keep=caller.session_id)
        await self.log("password_changed", account.account_id, origin)

    async def change_email(self, caller: Principal, new_email: str, password: str, origin: Origin) -> AccountRow:
        new_email = normalize_email(new_email)
        v = Violations()
        check_email(v, "new_email", new_email)
        v.raise_if_any()
        account = await self._confirm(caller, password, "password")
        updated = await self.set_email(account.account_id, new_email)
        await self.log("email_changed", account.account_id, origin)
        return updated

    async def set_email(self, account_id: str, email: str) -> AccountRow:
        if await self.store.email_taken(email):
            raise AlreadyExists("an account with this email exists", field_violations={"email": "is taken"})
        updated = await self.store.update_account(account_id, email=email)
        if updated is None:
            raise NotFound("no such account")
        return updated

    async def close(self, caller: Principal, password: str, origin: Origin) -> AccountRow:
        """Self-service closure (P8.4): keys revoked everywhere, sessions ended."""
        account = await self._confirm(caller, password, "password")
        hashes = await self.store.close_account(account.account_id, now())
        await self._revoke_keys(hashes)
        await self.log("account_closed", account.account_id, origin)
        return await self.get(account.account_id)

    async def close_for_holder(self, account_id: str, email: str, origin: Origin) -> AccountRow:
        """Staff closure on the holder's behalf (P5.4, P8.4): as `close`, without the holder's
        password; an account already closed (or erased) is returned unchanged."""
        account = await self.find(account_id, email)
        if account.status != ACTIVE:
            return account
        hashes = await self.store.close_account(account.account_id, now())
        await self._revoke_keys(hashes)
        await self.log("account_closed_by_staff", account.account_id, origin)
        return await self.get(account.account_id)

    async def set_analytics_opt_out(self, caller: Principal, opt_out: bool) -> AccountRow:
        """P7.3: honoured at once, including by cached key verifications."""
        account = await self.store.update_account(caller.account_id, analytics_opt_out=opt_out)
        if account is None:
            raise NotFound("no such account")
        await self._invalidate_keys(await self.store.key_hashes_of(account.account_id))
        return account

    async def accept_policy(self, caller: Principal, version: str) -> AccountRow:
        """P10.2: the acceptance (version, time) is recorded."""
        v = Violations()
        current = await self.policy.current()
        if not version:
            v.add("version", "is required")
        elif version != current:
            v.add("version", f"must be the current policy version {current}")
        v.raise_if_any()
        account = await self.store.accept_policy(caller.account_id, version, now())
        if account is None:
            raise NotFound("no such account")
        return account

    async def accounts_by_policy(
        self, version: str, accepted: bool, page_size: int, page_token: str
    ) -> tuple[list[str], str]:
        """Active account ids that accepted (or have not accepted) `version`, in pages by
        id; the page token is the last id of the previous page (P10.2)."""
        v = Violations()
        v.check(bool(version), "version", "is required")
        v.check(len(version) <= 64, "version", "must be at most 64 characters")
        v.check(0 <= page_size <= 10000, "page.page_size", "must be between 0 and 10000")
        v.check(len(page_token) <= 40, "page.page_token", "is not a token this service issued")
        v.raise_if_any()
        limit = page_size or 1000
        ids = await self.store.accounts_by_policy(version, accepted, page_token, limit)
        return ids, (ids[-1] if len(ids) == limit else "")

    async def sweep(self) -> tuple[int, int]:
        """Delete security events past retention (P5.3) and expired sessions."""
        at = now()
        return await self.store.sweep(at - timedelta(days=self.policy.security_log_days), at)
