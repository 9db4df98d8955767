"""The master keys and the customers' data keys (AES-256-GCM, from ``cryptography``).

A data key encrypts one subject's (a customer's, or an anonymous profile's) personal fields.
It is stored wrapped: encrypted under a master key that lives outside the database
(``CLM_PRIVACY_MASTER_KEYS`` or ``CLM_PRIVACY_MASTER_KEYS_FILE``), with the subject and the
key's id as associated data, so a wrapped key copied onto another subject's row does not
unwrap. Several master keys, newest first, allow rotation: the first wraps, every one
unwraps, and ``clm privacy rotate`` re-wraps the data keys still under an older one.
"""

from __future__ import annotations

import base64
import os
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from clm_infra.settings import CommonSettings

# Used only when CLM_ENV is dev or test and no master key is set; refused in prod.
DEV_MASTER_KEYS = "dev:Y2xtLXN0cmVhbS1kZXYtb25seS1tYXN0ZXIta2V5ISE="
NONCE_BYTES = 12
KEY_BYTES = 32


class MasterKeyMissing(Exception):
    """No master key is set (prod), or one is malformed."""


class Undecryptable(Exception):
    """A wrapped key or a sealed part that does not open under the key it names."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def seal_bytes(cipher: AESGCM, plain: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + cipher.encrypt(nonce, plain, aad)


def open_bytes(cipher: AESGCM, sealed: bytes, aad: bytes) -> bytes:
    try:
        return cipher.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)
    except (InvalidTag, ValueError):
        raise Undecryptable("does not open under its key") from None


@dataclass(frozen=True, slots=True)
class DataKey:
    """One subject's data key, unwrapped: ``key_id`` is what a sealed part names."""

    subject: str
    key_id: str
    cipher: AESGCM

    def seal(self, plain: bytes, aad: bytes) -> str:
        return _b64(seal_bytes(self.cipher, plain, aad))

    def open(self, data: str, aad: bytes) -> bytes:
        try:
            raw = _unb64(data)
        except ValueError:
            raise Undecryptable("is not base64url") from None
        return open_bytes(self.cipher, raw, aad)


def _wrap_aad(subject: str, key_id: str) -> bytes:
    return f"clm-data-key\x00{subject}\x00{key_id}".encode()


class MasterKeys:
    """The master keys by id; the first one wraps."""

    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        if not keys:
            raise MasterKeyMissing("no master key")
        self.current_id = keys[0][0]
        self._ciphers = {key_id: AESGCM(raw) for key_id, raw in keys}

    @property
    def ids(self) -> list[str]:
        return list(self._ciphers)

    def new_data_key(self, subject: str) -> tuple[DataKey, bytes]:
        """A fresh data key for ``subject``, and its wrapped form (under the current key)."""
        raw = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
        key_id = uuid.uuid4().hex
        wrapped = seal_bytes(self._ciphers[self.current_id], raw, _wrap_aad(subject, key_id))
        return DataKey(subject, key_id, AESGCM(raw)), wrapped

    def unwrap(self, subject: str, key_id: str, master_id: str, wrapped: bytes) -> DataKey:
        """The data key stored wrapped under ``master_id`` (Undecryptable: unknown master key,
        or not this subject's key)."""
        return DataKey(subject, key_id, AESGCM(self._raw(subject, key_id, master_id, wrapped)))

    def rewrap(self, subject: str, key_id: str, master_id: str, wrapped: bytes) -> bytes:
        """The same data key, wrapped under the current master key."""
        raw = self._raw(subject, key_id, master_id, wrapped)
        return seal_bytes(self._ciphers[self.current_id], raw, _wrap_aad(subject, key_id))

    def _raw(self, subject: str, key_id: str, master_id: str, wrapped: bytes) -> bytes:
        master = self._ciphers.get(master_id)
        if master is None:
            raise Undecryptable(f"master key {master_id!r} is not configured")
        return open_bytes(master, wrapped, _wrap_aad(subject, key_id))


def parse_master_keys(text: str) -> MasterKeys:
    """``id:base64key`` entries separated by commas or new lines, newest first."""
    keys: list[tuple[str, bytes]] = []
    for entry in text.replace("\n", ",").split(","):
        entry = entry.strip()
        if not entry or entry.startswith("#"):
            continue
        key_id, sep, encoded = entry.partition(":")
        if not sep or not key_id.strip():
            raise MasterKeyMissing("a master key is `id:base64-of-32-bytes`")
        try:
            raw = base64.b64decode(encoded.strip() + "=" * (-len(encoded.strip()) % 4))
        except ValueError:
            raise MasterKeyMissing(f"master key {key_id.strip()!r} is not base64") from None
        if len(raw) != KEY_BYTES:
            raise MasterKeyMissing(f"master key {key_id.strip()!r} is not {KEY_BYTES} bytes")
        keys.append((key_id.strip(), raw))
    if len({k for k, _ in keys}) != len(keys):
        raise MasterKeyMissing("two master keys share an id")
    return MasterKeys(keys)


def master_keys(settings: CommonSettings) -> MasterKeys:
    """The master keys of ``CLM_PRIVACY_MASTER_KEYS`` or its file (dev/test: a well-known key)."""
    privacy = settings.privacy
    text = privacy.master_keys.get_secret_value() if privacy.master_keys else ""
    if not text.strip() and privacy.master_keys_file is not None:
        try:
            text = Path(privacy.master_keys_file).read_text()
        except OSError as exc:
            raise MasterKeyMissing(f"CLM_PRIVACY_MASTER_KEYS_FILE: {exc}") from None
    if not text.strip():
        if settings.env == "prod":
            raise MasterKeyMissing(
                "CLM_PRIVACY_MASTER_KEYS is not set: make one with `clm privacy "
                "new-master-key` and set it for the ingest, the stage engine and the CLI"
            )
        text = DEV_MASTER_KEYS
    return parse_master_keys(text)


def new_master_key() -> str:
    """A new master key entry (``id:key``) with a random id."""
    return f"mk{secrets.token_hex(4)}:{base64.b64encode(os.urandom(KEY_BYTES)).decode()}"
