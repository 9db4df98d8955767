"""The ingest's per-key limit counts events: :class:`clm_web.ratelimit.TokenBuckets` (one
token an event), kept here under its old name for the ingest's modules."""

from __future__ import annotations

from clm_web.ratelimit import TokenBuckets, retry_after_header

__all__ = ["TokenBuckets", "retry_after_header"]
