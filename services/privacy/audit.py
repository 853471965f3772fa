"""The audit trail's hash chain, as pure functions.

Each event's hash is SHA-256 over the previous event's hash and the event's canonical
JSON (sorted keys, no spaces), so that changing, removing or reordering any event breaks
every hash after it. Events hold ids, event names and counts, never personal data.
`verify_chain` walks events in order and reports the first one that does not match.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

GENESIS = "0" * 64


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def event_body(
    at: datetime, request_id: str, event: str, actor: str, subject_id: str, details: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        "at": at.isoformat(timespec="microseconds"),
        "request_id": request_id,
        "event": event,
        "actor": actor,
        "subject_id": subject_id,
        "details": dict(details),
    }


def chain_hash(prev_hash: str, body: Mapping[str, Any]) -> str:
    return hashlib.sha256(f"{prev_hash}\n{canonical(body)}".encode()).hexdigest()


def verify_chain(events: Iterable[tuple[int, str, str, Mapping[str, Any]]]) -> tuple[bool, int, int]:
    """(intact, events seen, seq of the first broken event or 0) over (seq, prev, hash, body)."""
    expected_prev, count = GENESIS, 0
    for seq, prev_hash, hash_, body in events:
        count += 1
        if prev_hash != expected_prev or chain_hash(prev_hash, body) != hash_:
            return False, count, seq
        expected_prev = hash_
    return True, count, 0
