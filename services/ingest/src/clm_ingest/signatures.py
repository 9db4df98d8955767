"""Webhook signature checks (pure; the clock is passed in). All comparisons are constant-time.

- Shopify: ``X-Shopify-Hmac-Sha256`` = base64(HMAC-SHA256(secret, raw body)).
- Stripe: ``Stripe-Signature: t=<unix>,v1=<hex>[,v1=…]``, hex HMAC-SHA256 of ``"<t>.<body>"``;
  ``t`` must be within the tolerance (5 minutes) of now, so a replayed delivery is refused.
- Zendesk: ``X-Zendesk-Webhook-Signature`` = base64(HMAC-SHA256(secret, timestamp + body)),
  the timestamp from ``X-Zendesk-Webhook-Signature-Timestamp`` (also held to the tolerance).
- Generic (ours): ``X-CLM-Signature: t=<unix>,v1=<hex>``, hex HMAC-SHA256 of ``"<t>.<body>"``,
  the same scheme as Stripe's, with the same tolerance.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime

TOLERANCE_S = 300


class BadSignature(Exception):
    """Missing, malformed, wrong or stale signature: 401, nothing published."""


def _hmac(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, payload, hashlib.sha256).digest()


def _fresh(timestamp: str, now: datetime, tolerance_s: int) -> None:
    try:
        t = int(timestamp)
    except ValueError:
        raise BadSignature("signature timestamp is not a number") from None
    if abs(now.timestamp() - t) > tolerance_s:
        raise BadSignature(f"signature timestamp is more than {tolerance_s}s from now")


def shopify(secret: bytes, body: bytes, header: str | None) -> None:
    if not header:
        raise BadSignature("X-Shopify-Hmac-Sha256 is missing")
    expected = base64.b64encode(_hmac(secret, body)).decode()
    if not hmac.compare_digest(expected.encode(), header.strip().encode()):
        raise BadSignature("X-Shopify-Hmac-Sha256 does not match the body")


def _t_v1(header: str | None, name: str) -> tuple[str, list[str]]:
    if not header:
        raise BadSignature(f"{name} is missing")
    timestamp = ""
    signatures: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            timestamp = value
        elif key == "v1":
            signatures.append(value)
    if not timestamp or not signatures:
        raise BadSignature(f"{name} needs t=… and v1=…")
    return timestamp, signatures


def timestamped_hex(
    secret: bytes,
    body: bytes,
    header: str | None,
    now: datetime,
    *,
    name: str,
    tolerance_s: int = TOLERANCE_S,
) -> None:
    """Stripe's scheme (also our generic webhook's): ``t=…,v1=…`` over ``"<t>.<body>"``."""
    timestamp, candidates = _t_v1(header, name)
    expected = _hmac(secret, timestamp.encode() + b"." + body).hex().encode()
    # check every v1 (a rolling secret sends two) before judging the time, in constant time
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(expected, candidate.encode())
    if not matched:
        raise BadSignature(f"{name} does not match the body")
    _fresh(timestamp, now, tolerance_s)


def zendesk(
    secret: bytes,
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    now: datetime,
    *,
    tolerance_s: int = TOLERANCE_S,
) -> None:
    if not signature or not timestamp:
        raise BadSignature(
            "X-Zendesk-Webhook-Signature and X-Zendesk-Webhook-Signature-Timestamp are required"
        )
    expected = base64.b64encode(_hmac(secret, timestamp.encode() + body)).decode()
    if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
        raise BadSignature("X-Zendesk-Webhook-Signature does not match the body")
    try:
        at = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        raise BadSignature("X-Zendesk-Webhook-Signature-Timestamp is not a timestamp") from None
    _fresh(str(int(at.timestamp())), now, tolerance_s)


def sign_timestamped_hex(secret: bytes, body: bytes, timestamp: int) -> str:
    """The header value a sender computes (used by our docs and tests)."""
    return f"t={timestamp},v1={_hmac(secret, str(timestamp).encode() + b'.' + body).hex()}"
