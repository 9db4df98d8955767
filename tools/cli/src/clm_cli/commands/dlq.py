"""``clm dlq list|show|replay``: inspect the dead-letter topic and re-submit records.

A record lands in the DLQ when a consumer cannot apply it (bad JSON, an unknown type, a value
out of range); its headers say why and where it came from. ``replay`` publishes records back
to the events topic, as they are (after the consumer was fixed) or with a corrected value
from a file, validated against the event contract first. Re-submitting twice is harmless:
consumers drop an event id they have already applied.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from clm_cli import output
from clm_cli.errors import CliError
from clm_cli.settings import CliSettings
from clm_domain.events import dump_event, parse_event_json, partition_key, record_headers
from clm_infra.kafka import make_producer, topic_partitions

PREVIEW = 80


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record of the dead-letter topic, headers decoded."""

    partition: int
    offset: int
    timestamp: datetime
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]

    @property
    def ref(self) -> str:
        return f"{self.partition}:{self.offset}"

    def doc(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp.isoformat(),
            "key": self.key.decode(errors="replace") if self.key is not None else None,
            "value": self.value.decode(errors="replace") if self.value is not None else None,
            "headers": self.headers,
        }


def parse_ref(text: str) -> tuple[int, int]:
    """``PARTITION:OFFSET`` as printed by ``clm dlq list``."""
    partition, sep, offset = text.partition(":")
    if not sep or not partition.isdigit() or not offset.isdigit():
        raise CliError(f"bad record reference {text!r}: expected PARTITION:OFFSET, e.g. 0:42", 2)
    return int(partition), int(offset)


def preview(value: bytes | None) -> str:
    if value is None:
        return "(null)"
    text = repr(value[:PREVIEW])[2:-1]
    return text + ("…" if len(value) > PREVIEW else "")


async def read_dead_letters(settings: CliSettings, timeout_s: float = 15.0) -> list[DeadLetter]:
    """Every record of the DLQ topic, oldest first per partition (no consumer group)."""
    try:
        partitions = await asyncio.wait_for(
            topic_partitions(settings.kafka, [settings.topics.dlq]), timeout_s
        )
    except (TimeoutError, KafkaError, OSError) as exc:
        raise CliError(
            f"cannot reach Kafka at {settings.kafka.bootstrap} ({type(exc).__name__}) — is it "
            "running? "
            "(make run, or set CLM_KAFKA_BOOTSTRAP)",
            2,
        ) from exc
    if settings.topics.dlq not in partitions:
        raise CliError(f"no topic {settings.topics.dlq} (run: clm migrate)", 2)
    tps = [TopicPartition(settings.topics.dlq, p) for p in partitions[settings.topics.dlq]]
    consumer = AIOKafkaConsumer(
        **settings.kafka.client_options(),
        client_id="clm-cli-dlq",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        request_timeout_ms=10_000,
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        begins = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, begins[tp])
        # next offset to see per partition; done when it reaches the end taken above
        # (transaction markers never arrive as records, so the position is checked too)
        letters: list[DeadLetter] = []
        deadline = asyncio.get_running_loop().time() + timeout_s
        pending = {tp for tp in tps if begins[tp] < ends[tp]}
        while pending:
            if asyncio.get_running_loop().time() > deadline:
                raise CliError(f"reading {settings.topics.dlq} took over {timeout_s:.0f} s", 1)
            batch = await consumer.getmany(*pending, timeout_ms=500)
            for tp, records in batch.items():
                letters += [letter_of(rec) for rec in records if rec.offset < ends[tp]]
            pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
        return sorted(letters, key=lambda d: (d.timestamp, d.partition, d.offset))
    finally:
        await consumer.stop()


def letter_of(rec: ConsumerRecord[bytes, bytes]) -> DeadLetter:
    return DeadLetter(
        partition=rec.partition,
        offset=rec.offset,
        timestamp=datetime.fromtimestamp(rec.timestamp / 1000, UTC),
        key=rec.key,
        value=rec.value,
        headers={k: v.decode(errors="replace") for k, v in rec.headers},
    )


async def _list(args: argparse.Namespace, settings: CliSettings) -> int:
    letters = await read_dead_letters(settings)
    if args.reason:
        letters = [d for d in letters if args.reason.lower() in d.headers.get("reason", "").lower()]
    shown = letters[-args.limit :] if args.limit else letters
    if args.json:
        output.print_json([d.doc() for d in shown])
        return 0
    rows = [
        (
            d.ref,
            d.timestamp.strftime("%Y-%m-%d %H:%M:%S"),
            d.headers.get("consumer_group", "-"),
            d.headers.get("reason", "-")[:70],
            preview(d.value)[:50],
        )
        for d in shown
    ]
    print(output.table(["record", "at (UTC)", "consumer", "reason", "value"], rows))
    print(
        f"\n{len(letters)} record(s) in {settings.topics.dlq}"
        + (f", last {len(shown)} shown" if len(shown) < len(letters) else "")
    )
    return 0


def pick(letters: Iterable[DeadLetter], refs: Sequence[str]) -> list[DeadLetter]:
    by_ref = {d.ref: d for d in letters}
    wanted = [f"{p}:{o}" for p, o in map(parse_ref, refs)]
    missing = [r for r in wanted if r not in by_ref]
    if missing:
        raise CliError(f"no record {', '.join(missing)} in the DLQ (see: clm dlq list)")
    return [by_ref[r] for r in wanted]


async def _show(args: argparse.Namespace, settings: CliSettings) -> int:
    (letter,) = pick(await read_dead_letters(settings), [args.ref])
    if args.json:
        output.print_json(letter.doc())
        return 0
    doc = letter.doc()
    print(
        output.table(
            ["field", "value"], [(k, v) for k, v in doc.items() if k not in ("headers", "value")]
        )
    )
    print(output.table(["header", "value"], sorted(letter.headers.items())))
    print("\nvalue:")
    print(doc["value"])
    return 0


def corrected(path: Path) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """Key, value and headers of a corrected event read from a file (validated first)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", 2) from exc
    try:
        event = parse_event_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(document)"
        raise CliError(f"{path} is not a valid event: {field}: {first['msg']}", 2) from exc
    return partition_key(event).encode(), dump_event(event), record_headers(event)


async def _replay(args: argparse.Namespace, settings: CliSettings) -> int:
    if args.fixed and (args.all or len(args.refs) != 1):
        raise CliError(
            "--fixed replaces the value of exactly one record: give one PARTITION:OFFSET", 2
        )
    if not args.all and not args.refs:
        raise CliError("name the records (PARTITION:OFFSET …) or pass --all", 2)
    fix = corrected(Path(args.fixed)) if args.fixed else None
    letters = await read_dead_letters(settings)
    chosen = letters if args.all else pick(letters, args.refs)
    producer = make_producer(settings, client_id="clm-cli-dlq-replay")
    try:
        await producer.start()
        sends = []
        for d in chosen:
            key, value, headers = fix if fix else (d.key, d.value, [])
            trail = [("dlq_replayed_from", f"{settings.topics.dlq}:{d.ref}".encode())]
            sends.append(
                await producer.send(
                    settings.topics.events, value=value, key=key, headers=[*headers, *trail]
                )
            )
        await asyncio.gather(*sends)
    except KafkaError as exc:
        raise CliError(
            f"Kafka refused the re-submission ({exc!r}); nothing is lost, try again", 1
        ) from exc
    finally:
        await producer.stop()
    what = "corrected record" if fix else "record(s)"
    print(f"re-submitted {len(chosen)} {what} to {settings.topics.events}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser("dlq", help="the dead-letter topic: list, show, re-submit records")
    cmds = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = cmds.add_parser("list", parents=[output.json_parent()], help="records, oldest first")
    listing.add_argument("--limit", type=int, default=50, help="only the newest N (0: all)")
    listing.add_argument("--reason", help="only records whose reason contains this text")
    listing.set_defaults(action_fn=_list)
    show = cmds.add_parser("show", parents=[output.json_parent()], help="one record, whole")
    show.add_argument("ref", metavar="PARTITION:OFFSET")
    show.set_defaults(action_fn=_show)
    replay = cmds.add_parser(
        "replay",
        help="publish records back to the events topic (as they are, or one --fixed)",
    )
    replay.add_argument("refs", nargs="*", metavar="PARTITION:OFFSET")
    replay.add_argument("--all", action="store_true", help="every record in the DLQ")
    replay.add_argument(
        "--fixed", metavar="FILE", help="a corrected event (JSON) for the one record"
    )
    replay.set_defaults(action_fn=_replay)
