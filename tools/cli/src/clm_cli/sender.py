"""Posting events to the ingest: pacing to a target rate, retries, refusals, progress.

Retries follow Segment's client rules: ``429`` and ``5xx`` (and a dropped connection) are
retried with the same ``event_id`` — after ``Retry-After`` when the answer has one, else an
exponential backoff — and never another ``4xx``. A refused write key (``401``/``403``) or an
ingest that cannot be reached stops the run with one line saying what to do; events the ingest
refuses (``422``) are reported with the field and counted, and the run goes on.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, TextIO

import httpx

from clm_cli.errors import CliError

MAX_RETRY_WAIT_S = 60.0


class Pacer:
    """A token bucket for a target rate: how long to wait before sending ``n`` more events.

    ``rate`` events/s on average, up to ``burst`` at once (default: one second's worth). A rate
    of 0 means no limit. Waits are reserved: a caller that waits the returned time and sends
    keeps the average at ``rate``.
    """

    def __init__(self, rate: float, burst: float | None = None, now: float = 0.0) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self.tokens = self.burst
        self.last = now

    def wait_for(self, n: int, now: float) -> float:
        if self.rate <= 0:
            return 0.0
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        self.tokens -= n
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


def retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def backoff(attempt: int, rng: random.Random) -> float:
    """Exponential backoff with jitter: ~0.5 s, 1 s, 2 s … up to 30 s."""
    return float(min(30.0, 0.5 * 2**attempt) * (0.5 + rng.random() / 2))


def describe_errors(errors: Any) -> str:
    """``field: message; …`` from a problem's ``errors`` list."""
    if not isinstance(errors, list):
        return ""
    return "; ".join(
        f"{e.get('field', '?')}: {e.get('message', '?')}" for e in errors if isinstance(e, dict)
    )


@dataclass
class Outcome:
    accepted: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (event_id, why)
    retries: int = 0


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {"detail": response.text[:200]}
    return body if isinstance(body, dict) else {"detail": str(body)[:200]}


class IngestClient:
    """Sends event documents one by one (``POST /v1/events``) or in batches
    (``POST /v1/events/batch``), retrying what may be retried."""

    def __init__(
        self,
        url: str,
        key: str,
        *,
        client: httpx.AsyncClient | None = None,
        max_attempts: int = 8,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        seed: int = 0,
    ) -> None:
        self.url = url.rstrip("/")
        self.client = client or httpx.AsyncClient(timeout=30.0)
        self.headers = {"Authorization": f"Bearer {key}"}
        self.max_attempts = max_attempts
        self.sleep = sleep
        self.rng = random.Random(seed)  # noqa: S311 - jitter, not secrets
        self.reached = False

    async def aclose(self) -> None:
        await self.client.aclose()

    def _unreachable(self, exc: Exception) -> CliError:
        return CliError(
            f"cannot reach the ingest at {self.url} — {type(exc).__name__}: {exc or 'no answer'}"
            " (start it with `make run`, or pass --url)",
            2,
        )

    async def _post(self, path: str, body: Any) -> tuple[httpx.Response, int]:
        """The first answer that is not retried, and how many retries it took."""
        for attempt in range(self.max_attempts):
            wait: float | None
            try:
                response = await self.client.post(self.url + path, json=body, headers=self.headers)
            except httpx.TransportError as exc:
                if not self.reached or attempt == self.max_attempts - 1:
                    raise self._unreachable(exc) from None
                wait = backoff(attempt, self.rng)
            else:
                self.reached = True
                if response.status_code != 429 and response.status_code < 500:
                    return response, attempt
                if attempt == self.max_attempts - 1:
                    problem = _problem(response)
                    raise CliError(
                        f"the ingest at {self.url} kept answering {response.status_code} "
                        f"({problem.get('detail') or problem.get('title') or 'no detail'}) after "
                        f"{self.max_attempts} attempts — check its /readyz and log, then rerun "
                        "(event ids are stable: nothing is counted twice)"
                    )
                wait = retry_after(response.headers.get("Retry-After"))
                if wait is None:
                    wait = backoff(attempt, self.rng)
            await self.sleep(min(wait, MAX_RETRY_WAIT_S))
        raise AssertionError("unreachable")  # pragma: no cover

    def _refused(self, response: httpx.Response) -> CliError:
        problem = _problem(response)
        detail = problem.get("detail") or problem.get("title") or response.reason_phrase
        fields = describe_errors(problem.get("errors"))
        why = f"{response.status_code} {detail}" + (f"; {fields}" if fields else "")
        if response.status_code == 401:
            return CliError(
                f"the ingest at {self.url} refused the write key ({why}) — pass a valid "
                "write key with --key or CLM_WRITE_KEY (`clm keys create --source NAME`)",
                2,
            )
        if response.status_code == 403:
            return CliError(
                f"the ingest at {self.url} refused the events ({why}) — use a write key (not a "
                "read token), and a --source matching the key's source (or none)",
                2,
            )
        if response.status_code == 413:
            return CliError(f"the ingest refused a request as too large ({why}) — lower --batch")
        return CliError(f"the ingest at {self.url} refused the request ({why})")

    async def send(self, docs: Sequence[dict[str, Any]], *, batch: bool) -> Outcome:
        """Send ``docs`` (one request when ``batch``, else one request per event)."""
        if batch:
            return await self._send_batch(docs)
        out = Outcome()
        for doc in docs:
            response, retries = await self._post("/v1/events", doc)
            out.retries += retries
            if response.status_code == 202:
                out.accepted += 1
            elif response.status_code == 422:
                problem = _problem(response)
                why = describe_errors(problem.get("errors")) or str(problem.get("detail"))
                out.rejected.append((str(doc.get("event_id")), why))
            else:
                raise self._refused(response)
        return out

    async def _send_batch(self, docs: Sequence[dict[str, Any]]) -> Outcome:
        response, retries = await self._post("/v1/events/batch", {"events": list(docs)})
        out = Outcome(retries=retries)
        if response.status_code == 202:
            body = response.json()
            out.accepted = int(body.get("accepted", 0))
            for r in body.get("rejected") or []:
                doc = docs[int(r["index"])]
                why = describe_errors(r.get("errors")) or str(r.get("reason"))
                out.rejected.append((str(doc.get("event_id")), why))
            return out
        if response.status_code == 422:
            problem = _problem(response)
            errors = problem.get("errors") or []
            for i, doc in enumerate(docs):
                prefix = f"events[{i}]."
                mine = [
                    {**e, "field": str(e.get("field", ""))[len(prefix) :]}
                    for e in errors
                    if isinstance(e, dict) and str(e.get("field", "")).startswith(prefix)
                ]
                why = describe_errors(mine) or str(problem.get("detail"))
                out.rejected.append((str(doc.get("event_id")), why))
            return out
        raise self._refused(response)


class Progress:
    """Sent, refused and retried counts with the achieved rate, on one stderr line.

    On a terminal the line is rewritten in place; elsewhere (a log file) a line is written
    every ``every`` seconds.
    """

    def __init__(
        self,
        target: float,
        *,
        stream: TextIO | None = None,
        every: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.target = target
        self.every = every if self.tty else max(every, 5.0)
        self.clock = clock
        self.began = clock()
        self.shown = self.began
        self.accepted = 0
        self.rejected = 0
        self.retries = 0

    def add(self, outcome: Outcome) -> None:
        self.accepted += outcome.accepted
        self.rejected += len(outcome.rejected)
        self.retries += outcome.retries
        now = self.clock()
        if now - self.shown >= self.every:
            self.shown = now
            self._write(self.line(now))

    def line(self, now: float) -> str:
        elapsed = max(now - self.began, 1e-9)
        sent = self.accepted + self.rejected
        target = f" (target {self.target:g}/s)" if self.target > 0 else ""
        return (
            f"simulate: {self.accepted} accepted, {self.rejected} refused, "
            f"{self.retries} retried in {elapsed:.1f}s: {sent / elapsed:.1f} events/s{target}"
        )

    def _write(self, line: str) -> None:
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def done(self) -> str:
        line = self.line(self.clock())
        if self.tty:
            self.stream.write("\r\x1b[K")
        return line


def customer_of(doc: dict[str, Any]) -> str:
    """What keeps one customer's events in order: they go through one worker."""
    return str(doc.get("customer_id") or doc.get("anonymous_id") or doc.get("event_id"))


@dataclass
class Plan:
    """How to send: events per request (1: ``/v1/events``), workers, target rate."""

    batch: int = 100
    workers: int = 4
    rate: float = 0.0
    show_refused: int = 20


Chunk = list[dict[str, Any]]


async def post_all(
    docs: Sequence[dict[str, Any]],
    client: IngestClient,
    plan: Plan,
    progress: Progress,
    *,
    due: Callable[[int], float | None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    stop: asyncio.Event | None = None,
) -> tuple[int, int]:
    """Send every doc; return (accepted, refused).

    A customer's events always go through the same worker, in order, so the ingest receives
    them in the order given. ``due(i)``, when given, is the ``clock()`` time doc ``i`` may be
    sent at (a replay in compressed time); otherwise the pace is ``plan.rate``.
    """
    delivery = _Delivery(client, plan, progress, clock)
    workers = [asyncio.create_task(delivery.work(q)) for q in delivery.queues]
    feeder = asyncio.create_task(delivery.feed(docs, due, stop))
    await _until_done_or_failed([feeder, *workers])
    return progress.accepted, progress.rejected


class _Delivery:
    """One :func:`post_all` run: a feeder cuts the docs into paced chunks and hands each
    customer's part to its worker's queue; the workers post them and count the outcomes."""

    def __init__(
        self, client: IngestClient, plan: Plan, progress: Progress, clock: Callable[[], float]
    ) -> None:
        self.client, self.plan, self.progress, self.clock = client, plan, progress, clock
        self.pacer = Pacer(plan.rate, now=clock())
        self.queues: list[asyncio.Queue[Chunk | None]] = [
            asyncio.Queue(maxsize=4) for _ in range(plan.workers)
        ]
        self.shown = 0

    async def work(self, queue: asyncio.Queue[Chunk | None]) -> None:
        """Post the chunks of one queue until its end marker; report the first refusals."""
        while (chunk := await queue.get()) is not None:
            outcome = await self.client.send(chunk, batch=self.plan.batch > 1)
            for event_id, why in outcome.rejected:
                if self.shown < self.plan.show_refused:
                    print(f"simulate: refused {event_id}: {why}", file=sys.stderr)
                self.shown += 1
            self.progress.add(outcome)

    async def feed(
        self,
        docs: Sequence[dict[str, Any]],
        due: Callable[[int], float | None] | None,
        stop: asyncio.Event | None,
    ) -> None:
        """Cut the docs into chunks of ``plan.batch`` (earlier when one is not due yet), then
        tell every worker the end."""
        chunk: Chunk = []
        for i, doc in enumerate(docs):
            if stop is not None and stop.is_set():
                break
            when = due(i) if due is not None else None
            if when is not None and when > self.clock():
                await self.flush(chunk)
                chunk = []
                await asyncio.sleep(when - self.clock())
            chunk.append(doc)
            if len(chunk) >= self.plan.batch:
                await self.flush(chunk)
                chunk = []
        await self.flush(chunk)
        for queue in self.queues:
            await queue.put(None)

    async def flush(self, chunk: Chunk) -> None:
        """Wait for the pace, then queue each customer's part of the chunk to its worker."""
        if not chunk:
            return
        wait = self.pacer.wait_for(len(chunk), self.clock())
        if wait > 0:
            await asyncio.sleep(wait)
        parts: dict[int, Chunk] = {}
        for doc in chunk:
            worker = zlib.crc32(customer_of(doc).encode()) % self.plan.workers
            parts.setdefault(worker, []).append(doc)
        for index, part in parts.items():
            await self.queues[index].put(part)


async def _until_done_or_failed(tasks: list[asyncio.Task[None]]) -> None:
    """Wait for every task; the first failure cancels the others and is raised."""
    try:
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
