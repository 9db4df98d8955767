"""Webhook signatures: good, wrong, missing, malformed, stale (replayed)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import timedelta

import pytest

from clm_ingest import signatures
from clm_ingest.signatures import BadSignature
from tests.factories import NOW

SECRET = b"whsec_test"
BODY = b'{"id": 1}'
T = int(NOW.timestamp())


def b64(secret: bytes, payload: bytes) -> str:
    return base64.b64encode(hmac.new(secret, payload, hashlib.sha256).digest()).decode()


def test_shopify() -> None:
    signatures.shopify(SECRET, BODY, b64(SECRET, BODY))
    with pytest.raises(BadSignature, match="does not match"):
        signatures.shopify(SECRET, BODY + b" ", b64(SECRET, BODY))
    with pytest.raises(BadSignature, match="does not match"):
        signatures.shopify(b"other", BODY, b64(SECRET, BODY))
    with pytest.raises(BadSignature, match="missing"):
        signatures.shopify(SECRET, BODY, None)


def test_stripe_scheme_accepts_a_fresh_signature_and_any_matching_v1() -> None:
    header = signatures.sign_timestamped_hex(SECRET, BODY, T)
    assert header.startswith(f"t={T},v1=")
    signatures.timestamped_hex(SECRET, BODY, header, NOW, name="Stripe-Signature")
    rolled = f"t={T},v1={'0' * 64},{header.split(',')[1]}"
    signatures.timestamped_hex(SECRET, BODY, rolled, NOW, name="Stripe-Signature")


def test_stripe_scheme_refuses_a_replayed_stale_signature() -> None:
    old = int((NOW - timedelta(minutes=6)).timestamp())
    header = signatures.sign_timestamped_hex(SECRET, BODY, old)
    with pytest.raises(BadSignature, match="300s from now"):
        signatures.timestamped_hex(SECRET, BODY, header, NOW, name="Stripe-Signature")
    # within the tolerance it passes
    recent = signatures.sign_timestamped_hex(SECRET, BODY, T - 290)
    signatures.timestamped_hex(SECRET, BODY, recent, NOW, name="Stripe-Signature")


@pytest.mark.parametrize(
    ("header", "match"),
    [
        (None, "missing"),
        ("", "missing"),
        ("v1=abc", "needs t="),
        (f"t={T}", "needs t="),
        (f"t={T},v1={'0' * 64}", "does not match"),
        (
            "t=soon,v1=" + hmac.new(SECRET, b"soon." + BODY, hashlib.sha256).hexdigest(),
            "not a number",
        ),
    ],
)
def test_stripe_scheme_refuses_malformed_and_wrong_headers(header: str | None, match: str) -> None:
    with pytest.raises(BadSignature, match=match):
        signatures.timestamped_hex(SECRET, BODY, header, NOW, name="Stripe-Signature")


def test_zendesk() -> None:
    ts = NOW.isoformat().replace("+00:00", "Z")
    good = b64(SECRET, ts.encode() + BODY)
    signatures.zendesk(SECRET, BODY, good, ts, NOW)
    with pytest.raises(BadSignature, match="does not match"):
        signatures.zendesk(SECRET, BODY, b64(SECRET, BODY), ts, NOW)
    with pytest.raises(BadSignature, match="required"):
        signatures.zendesk(SECRET, BODY, good, None, NOW)
    stale = (NOW - timedelta(hours=1)).isoformat()
    with pytest.raises(BadSignature, match="from now"):
        signatures.zendesk(SECRET, BODY, b64(SECRET, stale.encode() + BODY), stale, NOW)
