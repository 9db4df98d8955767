"""The signing secrets of stage-change webhook subscriptions, encrypted at rest.

Like the providers' secrets (:mod:`clm_infra.webhook_secrets`), a subscription's secret
signs each delivery, so it must be stored recoverable, never only hashed: it is kept as a
Fernet token under ``CLM_SECRETS_KEY``. Versions before this one stored it in clear
(``whsec_…``); such a row still delivers (:func:`open_secret` passes it through) and the
stage engine seals it when it starts (``clm_stage_engine.at_rest``).
"""

from __future__ import annotations

import secrets

from cryptography.fernet import InvalidToken, MultiFernet

CLEAR_PREFIX = "whsec_"


class SecretUnreadable(Exception):
    """A stored secret that no key of ``CLM_SECRETS_KEY`` decrypts."""


def new_secret() -> str:
    return CLEAR_PREFIX + secrets.token_urlsafe(32)


def seal(box: MultiFernet, secret: str) -> str:
    """What is stored: the secret's Fernet token."""
    return box.encrypt(secret.encode()).decode()


def is_clear(stored: str) -> bool:
    """A row of an older version, its secret in clear."""
    return stored.startswith(CLEAR_PREFIX)


def open_secret(box: MultiFernet, stored: str) -> str:
    """The secret of a stored value (a token, or a clear secret not sealed yet)."""
    if is_clear(stored):
        return stored
    try:
        return box.decrypt(stored.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable("a subscription secret no CLM_SECRETS_KEY decrypts") from None
