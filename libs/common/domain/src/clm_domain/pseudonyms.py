"""Keyed hashes of customer ids: erasure tombstones and the pseudonyms of anonymised customers.

A bare SHA-256 of an id that can be guessed (an e-mail address, a shop's sequential customer
number) is no pseudonym: whoever reads the table hashes the guesses and compares. So the hash
is keyed: ``HMAC-SHA256(CLM_PSEUDONYM_KEY, SHA-256(id))`` with a server secret that lives
outside the database. Hashing the id's SHA-256 (rather than the id) lets tombstones written
by older versions (the bare SHA-256) be upgraded in place, without the ids they came from:
:meth:`Pseudonyms.rehash` is applied to them when the stage engine starts.

The key must never change: a tombstone made under another key is not recognised, and the
customer it stands for would come back on a replay of the events topic.
"""

from __future__ import annotations

import functools
import hashlib
import hmac

# Used only when CLM_ENV is dev or test and no CLM_PSEUDONYM_KEY is set; refused in prod.
DEV_PSEUDONYM_KEY = "clm-stream-dev-only-pseudonym-key-not-for-production"
MIN_KEY_CHARS = 32


class PseudonymKeyMissing(Exception):
    """CLM_PSEUDONYM_KEY is not set (prod) or too short."""


def legacy_hash(customer_id: str) -> str:
    """What versions before the keyed hashes stored: the id's bare SHA-256 (hex)."""
    return hashlib.sha256(customer_id.encode()).hexdigest()


class Pseudonyms:
    """The keyed hash of customer ids (cached: every batch hashes all its ids, and customers
    recur)."""

    def __init__(self, key: str) -> None:
        self._key = key.encode()
        self.tombstone = functools.lru_cache(maxsize=1 << 16)(self._tombstone)

    def _tombstone(self, customer_id: str) -> str:
        return self.rehash(legacy_hash(customer_id))

    def rehash(self, legacy: str) -> str:
        """The keyed hash of an id, from its bare SHA-256 (an old tombstone)."""
        return hmac.new(self._key, legacy.encode(), hashlib.sha256).hexdigest()

    def pseudonym(self, customer_id: str) -> str:
        """The id an anonymised customer is kept under."""
        return f"anon-{self.tombstone(customer_id)[:24]}"


def pseudonyms_from(key: str | None, env: str) -> Pseudonyms:
    """The keyed hash of ``CLM_PSEUDONYM_KEY`` (dev and test: a well-known key if unset)."""
    raw = (key or "").strip()
    if not raw:
        if env == "prod":
            raise PseudonymKeyMissing(
                "CLM_PSEUDONYM_KEY is not set: make one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'` and set it "
                "for the stage engine (and keep it: tombstones depend on it)"
            )
        raw = DEV_PSEUDONYM_KEY
    if len(raw) < MIN_KEY_CHARS:
        raise PseudonymKeyMissing(f"CLM_PSEUDONYM_KEY must be at least {MIN_KEY_CHARS} characters")
    return Pseudonyms(raw)
