"""Webhook subscription secrets sealed at rest; clear ones of older versions still open."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet, MultiFernet

from clm_infra.subscription_secrets import (
    SecretUnreadable,
    is_clear,
    new_secret,
    open_secret,
    seal,
)


def test_a_sealed_secret_opens_and_is_not_in_clear() -> None:
    box = MultiFernet([Fernet(Fernet.generate_key())])
    secret = new_secret()
    stored = seal(box, secret)
    assert secret not in stored
    assert not is_clear(stored)
    assert open_secret(box, stored) == secret
    assert open_secret(box, secret) == secret  # a row not sealed yet
    with pytest.raises(SecretUnreadable):
        open_secret(MultiFernet([Fernet(Fernet.generate_key())]), stored)
