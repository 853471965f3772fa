"""The privacy service's keys: AES-256-GCM for exports at rest, Ed25519 for certificates.

Both come from the settings (`privacy_export_key`, `privacy_signing_key`, base64) or,
for a local mesh, from `<data_dir>/privacy_keys.json`, created once with mode 0600 (the
same first-use pattern as the shared local secrets). The `cryptography` package does the
cryptography; nothing here is hand-rolled beyond choosing nonces and associated data.
"""

from __future__ import annotations

import base64
import secrets
import zlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from services.runtime.settings import local_secret_file

from .settings import PrivacySettings

NONCE_BYTES = 12


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def local_keys(data_dir: Path) -> dict[str, str]:
    """Read, or create once, the local export and signing keys."""

    def make() -> dict[str, str]:
        return {"export_key": _b64(AESGCM.generate_key(bit_length=256)), "signing_key": _b64(secrets.token_bytes(32))}

    return local_secret_file(data_dir / "privacy_keys.json", make)


@dataclass
class Vault:
    aead: AESGCM
    signer: Ed25519PrivateKey

    @classmethod
    def from_settings(cls, settings: PrivacySettings) -> Vault:
        export_key, signing_key = settings.secret("privacy_export_key"), settings.secret("privacy_signing_key")
        if not export_key or not signing_key:
            local = local_keys(settings.data_dir)
            export_key, signing_key = export_key or local["export_key"], signing_key or local["signing_key"]
        return cls(
            AESGCM(base64.b64decode(export_key)), Ed25519PrivateKey.from_private_bytes(base64.b64decode(signing_key))
        )

    def seal(self, plaintext: bytes, associated: str) -> tuple[bytes, bytes]:
        """Compress (level 1: a 300 MB export compresses 20:1 at twice the speed of level 6),
        then encrypt; the associated data binds a chunk to its request and place."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce, self.aead.encrypt(nonce, zlib.compress(plaintext, 1), associated.encode())

    def open(self, nonce: bytes, ciphertext: bytes, associated: str) -> bytes:
        return zlib.decompress(self.aead.decrypt(nonce, ciphertext, associated.encode()))

    @property
    def public_key(self) -> str:
        return _b64(self.signer.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    def sign(self, document: str) -> str:
        return _b64(self.signer.sign(document.encode()))

    def verify(self, document: str, signature: str, public_key: str | None = None) -> bool:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key or self.public_key))
        try:
            key.verify(base64.b64decode(signature), document.encode())
        except (InvalidSignature, ValueError):
            return False
        return True
