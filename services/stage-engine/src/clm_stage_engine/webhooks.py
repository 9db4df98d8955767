"""Stage-change webhooks: signed POSTs to subscribers, retried with backoff, then parked.

Deliveries are rows written in the same transaction as the transitions they announce, so a
move is never announced without having happened, nor lost when the dispatcher is down. Each
POST carries ``X-CLM-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "t.body")>``;
a subscriber verifies it in constant time and rejects stale timestamps. A failed delivery is
retried after 2, 4, 8 … seconds (at most an hour); after ``max_attempts`` it is parked.

Subscribers are served concurrently, one worker per subscriber with due deliveries (at most
``concurrency`` at a time), each sending its subscriber's deliveries one after the other in
id order; every POST has a deadline (``timeout_s``, the whole exchange). So a slow or hanging
subscriber holds its own worker only: the others' deliveries go out meanwhile. No database
transaction is held across a POST: a worker claims a few due rows by moving their
``next_attempt_at`` past the POST's deadline (a lease: another replica skips them; if this
process dies they fall due again), posts, then records the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import httpx
import orjson
from cryptography.fernet import MultiFernet
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncEngine

from clm_domain.lifecycle import Transition
from clm_infra.subscription_secrets import SecretUnreadable, open_secret
from clm_infra.webhook_urls import UrlPolicy, UrlRefused, delivery_target
from clm_stage_engine.repository import webhooks

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


def stage_change_deliveries(
    transitions: Sequence[Transition],
    subscriptions: Sequence[tuple[int, list[str] | None, list[int] | None]],
) -> list[tuple[int, bytes]]:
    """The deliveries (subscription id, payload) announcing ``transitions`` to the
    subscriptions (id, stages it wants, None or empty: all; segments it wants: a
    subscription to segments gets their entries and exits, no stage changes) that want them."""
    rows: list[tuple[int, bytes]] = []
    staged = [(sid, stages) for sid, stages, segments in subscriptions if not segments]
    if not staged:
        return rows
    for t in transitions:
        payload = orjson.dumps(
            {
                "type": "stage.changed",
                "customer_id": t.customer_id,
                "from": t.from_stage.value if t.from_stage else None,
                "to": t.to_stage.value,
                "at": t.at,
                "event_id": t.event_id,
                "reason": t.reason,
            }
        )
        rows.extend((sid, payload) for sid, stages in staged if not stages or t.to_stage in stages)
    return rows


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
        url_policy: UrlPolicy,
        secrets_box: MultiFernet,
        concurrency: int = 16,
        batch: int = 20,
    ) -> None:
        self.engine = engine
        self.url_policy = url_policy  # checked again before each POST (DNS may have changed)
        self.secrets_box = secrets_box  # opens the stored (encrypted) secrets
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.poll_s = poll_s
        self.concurrency = concurrency
        self.batch = batch  # deliveries a worker claims at a time
        self._stopping = asyncio.Event()
        self._workers: dict[int, asyncio.Task[None]] = {}  # subscription id → its worker

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=self.concurrency)
        async with httpx.AsyncClient(timeout=self.timeout_s, limits=limits) as http:
            try:
                while not self._stopping.is_set():
                    try:
                        self.start_workers(http, await self.due_subscriptions())
                    except Exception:
                        log.warning("webhook dispatch failed; retrying", exc_info=True)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), timeout=self.poll_s)
            finally:
                workers = list(self._workers.values())
                for task in workers:
                    task.cancel()  # an interrupted POST's lease runs out: it is sent again
                await asyncio.gather(*workers, return_exceptions=True)

    async def due_subscriptions(self) -> list[int]:
        """Subscriptions with a due delivery, oldest delivery first."""
        async with self.engine.connect() as conn:
            return await webhooks.due_subscriptions(conn, datetime.now(UTC))

    def start_workers(self, http: httpx.AsyncClient, subscriptions: Sequence[int]) -> None:
        """A worker for each subscription that has none, while fewer than ``concurrency``
        run (the others wait for a free one at a later poll)."""
        for sid in subscriptions:
            if len(self._workers) >= self.concurrency:
                return
            if sid in self._workers:
                continue
            task = asyncio.create_task(self._worker(http, sid), name=f"webhooks:{sid}")
            self._workers[sid] = task
            task.add_done_callback(functools.partial(self._finished, sid))

    def _finished(self, subscription_id: int, _: asyncio.Task[None]) -> None:
        self._workers.pop(subscription_id, None)

    async def _worker(self, http: httpx.AsyncClient, subscription_id: int) -> None:
        """Send the subscription's due deliveries in id order until none is due."""
        try:
            while not self._stopping.is_set():
                if not await self.deliver_due(http, subscription_id):
                    return
        except Exception:
            log.warning(
                "webhook worker failed; retrying at the next poll",
                extra={"subscription": subscription_id},
                exc_info=True,
            )

    async def deliver_due(self, http: httpx.AsyncClient, subscription_id: int) -> int:
        """Claim up to ``batch`` due deliveries of one subscription and attempt each once, in
        id order; returns how many were claimed."""
        lease = datetime.now(UTC) + timedelta(seconds=self.timeout_s * self.batch + 60)
        async with self.engine.begin() as conn:
            due = await webhooks.lease_due(
                conn, subscription_id, datetime.now(UTC), self.batch, lease
            )
        for row in due:
            error = await self._post(http, row.url, row.secret, row.payload)
            await self._record(row.id, row.attempts + 1, error)
        return len(due)

    async def _record(self, delivery_id: int, attempts: int, error: str | None) -> None:
        if error is None:
            values: dict[str, object] = {"status": "delivered", "attempts": attempts}
            DELIVERIES.labels("delivered").inc()
        elif attempts >= self.max_attempts:
            values = {"status": "parked", "attempts": attempts, "last_error": error}
            DELIVERIES.labels("parked").inc()
            log.warning("webhook parked", extra={"delivery": delivery_id, "error": error})
        else:
            values = {
                "attempts": attempts,
                "last_error": error,
                "next_attempt_at": datetime.now(UTC) + backoff(attempts),
            }
            DELIVERIES.labels("retry").inc()
        async with self.engine.begin() as conn:
            await webhooks.record_attempt(conn, delivery_id, values)

    async def _post(
        self, http: httpx.AsyncClient, url: str, secret: str, body: bytes
    ) -> str | None:
        try:
            # the deadline covers the whole exchange, the host's resolution included (httpx's
            # timeout is per read/write: a subscriber trickling bytes would stay under it)
            async with asyncio.timeout(self.timeout_s):
                # the URL's host resolved and checked now, the POST pinned to what was checked
                target = await delivery_target(url, self.url_policy)
                headers = {
                    **target.headers,
                    "Content-Type": "application/json",
                    "X-CLM-Signature": signature(
                        open_secret(self.secrets_box, secret), int(time.time()), body
                    ),
                }
                # never follows a redirect (httpx's default)
                response = await http.post(
                    target.url, content=body, headers=headers, extensions=target.extensions
                )
        except (UrlRefused, SecretUnreadable) as exc:
            return f"refused: {exc}"[:500]
        except TimeoutError:
            return f"timed out after {self.timeout_s:g}s"
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"[:500]
        if response.is_success:
            return None
        return f"HTTP {response.status_code}"
