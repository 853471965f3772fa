"""One place that turns a bearer credential into a Principal: an API key, a dashboard
session token, or the operator token from the configuration.

Auth's own USER RPCs use it as their `ServiceSpec.authenticator`; the `Authenticate` RPC
serves it to the other services (the runtime's `remote_authenticator`).
"""

from __future__ import annotations

import hmac

from services.runtime.access import ROLE_ADMIN, Authenticator, Principal
from services.runtime.errors import Unauthenticated

from .domain import SESSION_PREFIX, Accounts
from .keys import KEY_PREFIX, Keys


def local_authenticator(accounts: Accounts, keys: Keys, admin_token: str) -> Authenticator:
    """An Authenticator that resolves credentials against auth's own state."""
    operator = admin_token.encode()

    async def authenticate(credential: str) -> Principal:
        if credential.startswith(KEY_PREFIX):
            return await keys.principal(credential)
        if credential.startswith(SESSION_PREFIX):
            return await accounts.session_principal(credential)
        if operator and hmac.compare_digest(credential.encode(), operator):
            return Principal(role=ROLE_ADMIN, operator=True)
        raise Unauthenticated("invalid credential")

    return authenticate
