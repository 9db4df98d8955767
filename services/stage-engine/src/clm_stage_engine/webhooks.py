"""Stage-change webhooks: signed POSTs to subscribers, retried with backoff, then parked.

Deliveries are rows written in the same transaction as the transitions they announce, so a
move is never announced without having happened, nor lost when the dispatcher is down. Each
POST carries ``X-CLM-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "t.body")>``;
a subscriber verifies it in constant time and rejects stale timestamps. A failed delivery is
retried after 2, 4, 8 … seconds (at most an hour); after ``max_attempts`` it is parked.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from datetime import UTC, datetime, timedelta

import httpx
from cryptography.fernet import MultiFernet
from prometheus_client import Counter
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_common.schema import webhook_deliveries, webhook_subscriptions
from clm_common.subscription_secrets import SecretUnreadable, open_secret
from clm_common.webhook_urls import UrlPolicy, UrlRefused, delivery_target

log = logging.getLogger(__name__)

DELIVERIES = Counter("clm_webhook_deliveries_total", "Webhook delivery attempts", ["outcome"])


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(
    secret: str, header: str, body: bytes, *, now: float, tolerance_s: float = 300
) -> bool:
    """What a subscriber does with the header (used by our tests, documented for users)."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = signature(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(2**attempts, 3600))


class Dispatcher:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        timeout_s: float,
        max_attempts: int,
        poll_s: float,
        batch: int = 100,
        url_policy: UrlPolicy,
        secrets_box: MultiFernet,
    ) -> None:
        self.engine = engine
        self.url_policy = url_policy  # checked again before each POST (DNS may have changed)
        self.secrets_box = secrets_box  # opens the stored (encrypted) secrets
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.poll_s = poll_s
        self.batch = batch
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=self.timeout_s) as http:
            while not self._stopping.is_set():
                try:
                    sent = await self.deliver_due(http)
                except Exception:
                    log.warning("webhook dispatch failed; retrying", exc_info=True)
                    sent = 0
                if sent < self.batch:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), timeout=self.poll_s)

    async def deliver_due(self, http: httpx.AsyncClient) -> int:
        """Attempt every due delivery once (rows locked, skipped by other replicas)."""
        async with self.engine.begin() as conn:
            due = (
                await conn.execute(
                    select(
                        webhook_deliveries.c.id,
                        webhook_deliveries.c.payload,
                        webhook_deliveries.c.attempts,
                        webhook_subscriptions.c.url,
                        webhook_subscriptions.c.secret,
                    )
                    .join(
                        webhook_subscriptions,
                        webhook_subscriptions.c.id == webhook_deliveries.c.subscription_id,
                    )
                    .where(
                        webhook_deliveries.c.status == "pending",
                        webhook_deliveries.c.next_attempt_at <= datetime.now(UTC),
                    )
                    .order_by(webhook_deliveries.c.id)
                    .limit(self.batch)
                    .with_for_update(of=webhook_deliveries, skip_locked=True)
                )
            ).all()
            for row in due:
                error = await self._post(http, row.url, row.secret, row.payload)
                attempts = row.attempts + 1
                if error is None:
                    values: dict[str, object] = {"status": "delivered", "attempts": attempts}
                    DELIVERIES.labels("delivered").inc()
                elif attempts >= self.max_attempts:
                    values = {"status": "parked", "attempts": attempts, "last_error": error}
                    DELIVERIES.labels("parked").inc()
                    log.warning("webhook parked", extra={"delivery": row.id, "error": error})
                else:
                    values = {
                        "attempts": attempts,
                        "last_error": error,
                        "next_attempt_at": datetime.now(UTC) + backoff(attempts),
                    }
                    DELIVERIES.labels("retry").inc()
                await conn.execute(
                    update(webhook_deliveries)
                    .where(webhook_deliveries.c.id == row.id)
                    .values(**values)
                )
        return len(due)

    async def _post(
        self, http: httpx.AsyncClient, url: str, secret: str, body: bytes
    ) -> str | None:
        try:  # the URL's host resolved and checked now, the POST pinned to what was checked
            target = await delivery_target(url, self.url_policy)
            key = open_secret(self.secrets_box, secret)
        except (UrlRefused, SecretUnreadable) as exc:
            return f"refused: {exc}"[:500]
        headers = {
            **target.headers,
            "Content-Type": "application/json",
            "X-CLM-Signature": signature(key, int(time.time()), body),
        }
        try:  # never follows a redirect (httpx's default)
            response = await http.post(
                target.url, content=body, headers=headers, extensions=target.extensions
            )
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"[:500]
        if response.is_success:
            return None
        return f"HTTP {response.status_code}"
