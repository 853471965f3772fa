"""An access request's export, assembled for download from its encrypted chunks.

Chunks are pages of one participant's records, each compressed and AES-GCM encrypted
(`vault`); nothing else holds an export. The JSON document is written out as it is read,
chunk by chunk, so a subject with a million records downloads in bounded memory:

    {"request_id": ..., "subject_id": ..., "generated_at": ...,
     "services": {"auth": {"records": [...]}, "billing": {"records": [...]}, ...}}

The zip holds one `<service>.json` per participant (`{"service":..., "records": [...]}`),
written with zipfile onto an unseekable sink, so it streams too.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import AsyncIterator
from typing import Any

from .store import PrivacyStore
from .tables import RequestRow
from .vault import Vault

PIECE = 1 << 20  # bytes per streamed HttpBody


class _Sink:
    """A write-only, unseekable file that hands what is written to the caller."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.offset = 0

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        self.offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self.offset

    def flush(self) -> None:
        pass

    def close(self) -> None:
        """Nothing to release; ZipFile's type of a writable file asks for it (it never closes a
        file it was given)."""

    def drain(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


async def _records(store: PrivacyStore, vault: Vault, request_id: str, part: str) -> AsyncIterator[bytes]:
    """A part's records as comma-separated JSON, chunk by chunk."""
    first = True
    async for row in store.export_chunks(request_id, part):
        plain = vault.open(row.nonce, row.ciphertext, f"{request_id}/{part}/{row.seq}")
        if not plain:
            continue
        yield plain if first else b"," + plain
        first = False


def _header(request: RequestRow) -> dict[str, Any]:
    return {
        "request_id": request.request_id,
        "subject_id": request.subject_id,
        "generated_at": request.completed_at.isoformat(timespec="seconds") + "Z" if request.completed_at else None,
        "format": "gatemesh.subject-export/1",
    }


async def json_document(store: PrivacyStore, vault: Vault, request: RequestRow) -> AsyncIterator[bytes]:
    head = json.dumps(_header(request))[:-1].encode()
    yield head + b', "services": {'
    for index, part in enumerate(await store.export_parts(request.request_id)):
        yield (b"," if index else b"") + json.dumps(part).encode() + b': {"records": ['
        async for piece in _records(store, vault, request.request_id, part):
            yield piece
        yield b"]}"
    yield b"}}"


async def zip_archive(store: PrivacyStore, vault: Vault, request: RequestRow) -> AsyncIterator[bytes]:
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("export.json", json.dumps(_header(request), indent=2))
        for part in await store.export_parts(request.request_id):
            with archive.open(f"{part}.json", "w", force_zip64=True) as member:
                member.write(json.dumps({"service": part})[:-1].encode() + b', "records": [')
                async for piece in _records(store, vault, request.request_id, part):
                    member.write(piece)
                    if sink.offset and len(sink.parts) > 16:
                        yield sink.drain()
                member.write(b"]}")
            yield sink.drain()
    yield sink.drain()


async def pieces(stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Regroup a byte stream into pieces of about PIECE bytes (fewer, fuller messages)."""
    buffer = bytearray()
    async for data in stream:
        buffer += data
        while len(buffer) >= PIECE:
            yield bytes(buffer[:PIECE])
            del buffer[:PIECE]
    if buffer:
        yield bytes(buffer)
