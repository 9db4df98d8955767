"""``clm status``: is everything up, and is anything behind?

Each service's ``/healthz`` and ``/readyz``; Kafka and Postgres reachable; every consumer
group's lag per partition (offsets live in Postgres, next to the data they guard, so lag is
the topic's end offset minus the stored next offset); the outbox backlog; webhook deliveries
waiting or parked; the DLQ's size. Exit status 0 when every part answers and is ready, 1 when
something is down or not ready, with the reason (a consumer stalled: lag on a partition
whose offset has not advanced for the service's stall limit; lag alone is reported, not
judged).

When the pipeline is quiet (no consumer lag, an empty outbox), the stage engine's customers per
stage (``GET /v1/stages``) and the metrics service's (``customers_by_stage`` of a window ending
now) must be equal, and no count negative: a difference seen twice, a short interval apart,
or a negative count is a problem (the two services disagree about who is where).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import httpx
from aiokafka import TopicPartition
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from clm_cli import output
from clm_cli.api import NotFound, request
from clm_cli.errors import CliError
from clm_cli.settings import CliSettings, Service
from clm_infra.db import create_engine
from clm_infra.kafka import log_offsets


@dataclass(slots=True)
class ServiceStatus:
    name: str
    url: str
    state: str  # ready | not ready | down
    checks: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Lag:
    group: str
    topic: str
    partition: int
    committed: int | None
    end: int
    lag: int


@dataclass(slots=True)
class Status:
    services: list[ServiceStatus]
    kafka: str
    postgres: str
    lag: list[Lag] = field(default_factory=list)
    outbox: dict[str, Any] = field(default_factory=dict)
    webhooks: dict[str, int] = field(default_factory=dict)
    dlq_records: int | None = None
    #: The stage counts compared: ``engine`` and ``metrics`` (when read), and ``note`` when
    #: they were not compared (the pipeline busy, no read token …).
    stages: dict[str, Any] = field(default_factory=dict)
    stage_problems: list[str] = field(default_factory=list)
    #: The predictive models: the version scored with and the last fit attempt.
    model: dict[str, Any] = field(default_factory=dict)
    #: Segments: how many, backfills under way, paused by a replay, clocks overdue.
    segments: dict[str, Any] = field(default_factory=dict)

    @property
    def problems(self) -> list[str]:
        """Why it is not healthy, one line a part (``stage-engine: consumer stalled: …``)."""
        out = []
        for s in self.services:
            if s.state == "down":
                out.append(f"{s.name}: down")
            elif s.state != "ready":
                failing = [f"{k} {v}" for k, v in s.checks.items() if v != "ok"]
                out.append(f"{s.name}: " + ("; ".join(failing) or "not ready"))
        out += [f"{name}: {state}" for name, state in self._stores() if state != "ok"]
        return out + self.stage_problems

    def _stores(self) -> list[tuple[str, str]]:
        return [("kafka", self.kafka), ("postgres", self.postgres)]

    @property
    def healthy(self) -> bool:
        return (
            all(s.state == "ready" for s in self.services)
            and self.kafka == "ok"
            and self.postgres == "ok"
            and not self.stage_problems
        )

    @property
    def quiet(self) -> bool:
        """Nothing in flight: every consumer caught up and the outbox empty."""
        return (
            self.kafka == "ok"
            and self.postgres == "ok"
            and all(r.lag == 0 for r in self.lag)
            and self.outbox.get("records") == 0
        )


def stage_differences(engine: Mapping[str, int], metrics: Mapping[str, int]) -> list[str]:
    """What is wrong between the engine's customers per stage and the metrics service's: any
    count below zero, and the stages where they differ (``stage counts differ: engine
    retention=0 conversion=8, metrics retention=-1 conversion=9``)."""
    out = [
        f"{who}: {stage} has {n} customers (below zero)"
        for who, counts in (("stage engine", engine), ("metrics service", metrics))
        for stage, n in counts.items()
        if n < 0
    ]
    differ = [
        s
        for s in [*engine, *(s for s in metrics if s not in engine)]
        if engine.get(s, 0) != metrics.get(s, 0)
    ]
    if differ:
        out.append(
            "stage counts differ: engine "
            + " ".join(f"{s}={engine.get(s, 0)}" for s in differ)
            + ", metrics "
            + " ".join(f"{s}={metrics.get(s, 0)}" for s in differ)
        )
    return out


async def service_status(client: httpx.AsyncClient, service: Service) -> ServiceStatus:
    try:
        ready = await client.get(f"{service.url}/readyz")
    except httpx.HTTPError as exc:
        return ServiceStatus(service.name, service.url, "down", {"error": type(exc).__name__})
    try:
        checks = {k: str(v) for k, v in ready.json().get("checks", {}).items()}
    except ValueError:
        checks = {}
    state = "ready" if ready.status_code == 200 else "not ready"
    return ServiceStatus(service.name, service.url, state, checks)


@dataclass(frozen=True, slots=True)
class Facts:
    """What ``clm status`` reads from Postgres."""

    offsets: dict[tuple[str, str, int], int]
    outbox: dict[str, Any]
    webhooks: dict[str, int]
    model: dict[str, Any]
    segments: dict[str, Any]


async def database_facts(settings: CliSettings) -> Facts:
    """Stored offsets, outbox backlog, webhook delivery counts, the models and the segments,
    from the operators' read model (the ``status_*`` views, ``docs/read-model.md``), never
    the services' own tables."""
    engine = create_engine(settings.database.url, pool_size=1, app_name="clm-cli")
    try:
        async with engine.connect() as conn:
            offsets = {
                (r.group_id, r.topic, r.partition): r.next_offset
                for r in await conn.execute(_OFFSETS)
            }
            row = (await conn.execute(_BACKLOG)).one()
            outbox = {
                "records": int(row.records),
                "oldest_age_s": (
                    round(float(row.oldest_age_s), 1) if row.oldest_age_s is not None else None
                ),
            }
            webhooks = {r.status: int(r.deliveries) for r in await conn.execute(_WEBHOOKS)}
            model = {
                k: (v.isoformat() if isinstance(v, datetime) else v)
                for k, v in (await conn.execute(_MODEL)).one()._mapping.items()
            }
            segments = dict((await conn.execute(_SEGMENTS)).one()._mapping)
            return Facts(offsets, outbox, webhooks, model, segments)
    finally:
        await engine.dispose()


_OFFSETS = text("SELECT group_id, topic, partition, next_offset FROM status_consumer_offsets")
_BACKLOG = text("SELECT records, oldest_age_s FROM status_outbox_backlog")
_MODEL = text(
    "SELECT version, fitted_at, customers, repeat_customers, last_attempt_at, last_outcome,"
    " last_reason FROM status_model"
)
_SEGMENTS = text("SELECT active, backfilling, paused, overdue FROM status_segments")
_WEBHOOKS = text(
    "SELECT status, deliveries FROM status_webhook_deliveries WHERE status <> 'delivered'"
)


def lag_rows(
    offsets: dict[tuple[str, str, int], int], log: dict[TopicPartition, tuple[int, int]]
) -> list[Lag]:
    """Lag of every partition of every topic a group has stored offsets for."""
    groups = {(g, t) for g, t, _ in offsets}
    rows = []
    for group, topic in sorted(groups):
        for tp in sorted((tp for tp in log if tp.topic == topic), key=lambda tp: tp.partition):
            begin, end = log[tp]
            committed = offsets.get((group, topic, tp.partition))
            rows.append(
                Lag(
                    group,
                    topic,
                    tp.partition,
                    committed,
                    end,
                    end - (committed if committed is not None else begin),
                )
            )
    return rows


async def collect(settings: CliSettings) -> Status:
    async with httpx.AsyncClient(timeout=5.0) as client:
        services = list(
            await asyncio.gather(
                *(
                    service_status(client, s)
                    for s in (settings.ingest(), settings.stage_engine(), settings.metrics())
                )
            )
        )
    status = Status(services=services, kafka="ok", postgres="ok")
    offsets: dict[tuple[str, str, int], int] = {}
    try:
        facts = await database_facts(settings)
        offsets, status.outbox, status.webhooks = facts.offsets, facts.outbox, facts.webhooks
        status.model, status.segments = facts.model, facts.segments
    except (OSError, DBAPIError) as exc:
        status.postgres = f"unreachable ({type(exc).__name__})"
    topics = {t for _, t, _ in offsets} | {settings.topics.events, settings.topics.dlq}
    try:
        log = await log_offsets(settings.kafka, topics)
    except Exception as exc:  # any client failure means "unreachable" here
        status.kafka = f"unreachable ({type(exc).__name__})"
        return status
    status.lag = lag_rows(offsets, log)
    status.dlq_records = sum(e - b for tp, (b, e) in log.items() if tp.topic == settings.topics.dlq)
    await compare_stages(settings, status)
    return status


#: How long a difference must last to count: the second read after this.
RECHECK_S = 1.0


async def stage_counts(settings: CliSettings) -> tuple[dict[str, int], dict[str, int]]:
    """The engine's customers per stage and the metrics service's (a window ending now)."""
    token = settings.token("read", None)
    engine, kpis = await asyncio.gather(
        request(settings.stage_engine(), "GET", "/v1/stages", token=token),
        request(settings.metrics(), "GET", "/v1/kpis", token=token, params={"window": "1h"}),
    )
    return (
        {str(k): int(v) for k, v in engine["stages"].items()},
        {str(k): int(v) for k, v in kpis["customers_by_stage"].items()},
    )


async def compare_stages(
    settings: CliSettings, status: Status, recheck_s: float = RECHECK_S
) -> None:
    """Compare the two services' stage counts when the pipeline is quiet; a difference counts
    only when a second read ``recheck_s`` later finds the same counts (nothing moved)."""
    if not status.quiet or not all(s.state == "ready" for s in status.services):
        status.stages = {"note": "not compared: the pipeline is busy or a service not ready"}
        return
    try:
        first = await stage_counts(settings)
        problems = stage_differences(*first)
        if problems:
            await asyncio.sleep(recheck_s)
            second = await stage_counts(settings)
            problems = stage_differences(*second) if second == first else []
            if second != first:
                status.stages = {"note": "not compared: the counts moved between two reads"}
                return
    except (CliError, NotFound) as exc:
        status.stages = {"note": f"not compared: {exc}"}
        return
    status.stages = {"engine": first[0], "metrics": first[1]}
    status.stage_problems = problems


def render(status: Status) -> str:
    parts = [
        output.table(
            ["service", "url", "state", "checks"],
            [
                (s.name, s.url, s.state, ", ".join(f"{k}={v}" for k, v in s.checks.items()))
                for s in status.services
            ]
            + [("kafka", "", status.kafka, ""), ("postgres", "", status.postgres, "")],
        )
    ]
    if status.lag:
        parts.append(
            output.table(
                ["group", "topic", "partition", "committed", "end", "lag"],
                [(r.group, r.topic, r.partition, r.committed, r.end, r.lag) for r in status.lag],
            )
        )
        totals: dict[str, int] = {}
        for r in status.lag:
            totals[r.group] = totals.get(r.group, 0) + r.lag
        parts.append("total lag: " + ", ".join(f"{g} {n}" for g, n in totals.items()))
    if status.outbox:
        age = status.outbox["oldest_age_s"]
        parts.append(
            f"outbox backlog: {status.outbox['records']} record(s)"
            + (f", oldest {age} s" if age is not None else "")
        )
    if status.postgres == "ok":
        pending, parked = status.webhooks.get("pending", 0), status.webhooks.get("parked", 0)
        parts.append(f"webhook deliveries: {pending} pending, {parked} parked")
    if status.dlq_records is not None:
        parts.append(f"dead-letter records: {status.dlq_records}")
    if status.model:
        parts.append(model_line(status.model))
    if status.segments:
        parts.append(segments_line(status.segments))
    if status.stages:
        note = status.stages.get("note")
        parts.append(
            f"stage counts: {note}"
            if note
            else "stage counts: engine and metrics "
            + ("differ" if status.stage_problems else "agree")
        )
    parts.append("healthy" if status.healthy else "\n".join(["NOT HEALTHY", *status.problems]))
    return "\n\n".join(parts)


def segments_line(segments: dict[str, Any]) -> str:
    """Segments in one line: how many, backfills, a replay's pause, overdue clocks."""
    line = f"segments: {segments['active']} active, {segments['backfilling']} backfilling"
    if segments["paused"]:
        line += "; memberships paused until the replay is done"
    if segments["overdue"]:
        line += f"; {segments['overdue']} segment clock(s) overdue by over 5 minutes"
    return line


def model_line(model: dict[str, Any]) -> str:
    """The predictive models in one line: the version scored with, and a refused refit."""
    if model.get("version") is None:
        line = "predictions: no model fitted yet"
    else:
        line = (
            f"predictions: model version {model['version']} fitted {model['fitted_at']} "
            f"({model['repeat_customers']} of {model['customers']} customers repeat buyers)"
        )
    if model.get("last_outcome") == "refused":
        line += f"; last refit refused at {model['last_attempt_at']}: {model['last_reason']}"
    return line


async def _status(args: argparse.Namespace, settings: CliSettings) -> int:
    status = await collect(settings)
    if args.json:
        output.print_json(
            {**asdict(status), "healthy": status.healthy, "problems": status.problems}
        )
    else:
        print(render(status))
    return 0 if status.healthy else 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = sub.add_parser(
        "status",
        parents=[output.json_parent()],
        help="services' health, consumer lag per partition, outbox backlog, DLQ size",
    )
    cmd.set_defaults(action_fn=_status)
