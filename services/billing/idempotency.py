"""What an idempotency key is bound to, and how a stored key answers a repeat.

Every mutation stores its key with its first result (see `holds.Holds.once` and
`store.claim_key`); a repeat with the same parameters gets that result again, one with other
parameters `errors.reused_key`, on the single and the batch paths alike.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .errors import reused_key


def params_hash(params: dict[str, Any]) -> str:
    """The digest a key's parameters are compared by (times as `str` makes them)."""
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()


def stored_result(scope: str, stored_hash: str, result: str, digest: str) -> dict[str, Any]:
    """The first result of a key stored with `stored_hash`, for a repeat whose parameters hash
    to `digest`; AlreadyExists when they differ."""
    if stored_hash != digest:
        raise reused_key(scope)
    return json.loads(result)
