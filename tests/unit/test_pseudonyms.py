"""Keyed hashes of customer ids: tombstones, pseudonyms, and old tombstones upgraded."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from clm_domain.pseudonyms import (
    DEV_PSEUDONYM_KEY,
    PseudonymKeyMissing,
    legacy_hash,
    pseudonyms_from,
)

KEY = "k" * 40


def test_a_tombstone_is_an_hmac_under_the_server_key() -> None:
    made = pseudonyms_from(KEY, "prod").tombstone("alice@example.com")
    sha = hashlib.sha256(b"alice@example.com").hexdigest()
    assert made == hmac.new(KEY.encode(), sha.encode(), hashlib.sha256).hexdigest()
    assert made != sha  # not the guessable bare hash
    assert pseudonyms_from("x" * 40, "prod").tombstone("alice@example.com") != made


def test_an_old_tombstone_rehashed_is_the_new_one() -> None:
    pseudonyms = pseudonyms_from(KEY, "prod")
    assert pseudonyms.rehash(legacy_hash("c-42")) == pseudonyms.tombstone("c-42")


def test_pseudonyms_are_keyed_too() -> None:
    pseudonyms = pseudonyms_from(KEY, "prod")
    assert pseudonyms.pseudonym("c-42") == "anon-" + pseudonyms.tombstone("c-42")[:24]


def test_the_key_is_required_in_prod_and_long_enough() -> None:
    with pytest.raises(PseudonymKeyMissing, match="CLM_PSEUDONYM_KEY"):
        pseudonyms_from(None, "prod")
    with pytest.raises(PseudonymKeyMissing, match="at least"):
        pseudonyms_from("short", "dev")
    dev = pseudonyms_from(None, "dev").tombstone("c")
    assert dev == pseudonyms_from(DEV_PSEUDONYM_KEY, "prod").tombstone("c")
