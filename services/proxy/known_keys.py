"""The known-key cache: grants of keys this proxy has seen verified (see `KnownKeys`)."""

from __future__ import annotations

import hashlib

from .model import KeyGrant


class KnownKeys:
    """The grants of keys this proxy has seen verified, by a digest of the key (never the key
    itself), so that the next call's hold can be placed while auth verifies it again. Only
    a hint: every call is still verified, and a refusal forgets the key. Bounded: the oldest
    entry makes room."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._grants: dict[bytes, KeyGrant] = {}
        self._max = max_entries

    @staticmethod
    def _digest(api_key: str) -> bytes:
        return hashlib.blake2b(api_key.encode(), digest_size=16).digest()

    def get(self, api_key: str) -> KeyGrant | None:
        return self._grants.get(self._digest(api_key)) if self._max else None

    def put(self, api_key: str, grant: KeyGrant) -> None:
        if not self._max:
            return
        digest = self._digest(api_key)
        if digest not in self._grants and len(self._grants) >= self._max:
            del self._grants[next(iter(self._grants))]
        self._grants[digest] = grant

    def forget(self, api_key: str) -> None:
        self._grants.pop(self._digest(api_key), None)
