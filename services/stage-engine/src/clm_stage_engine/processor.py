"""Folding a batch of new events into customer states: pure, no I/O.

A customer's events in one batch are folded in memory, so a hot customer costs one row write
per batch. Events the reducer cannot apply come back as poison with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from clm_common.events import Event, partition_key
from clm_common.lifecycle import CustomerState, Transition, apply_event, customer_key
from clm_stage_engine.records import lifecycle_record

T = TypeVar("T")


@dataclass(slots=True)
class FoldResult(Generic[T]):
    states: dict[str, CustomerState] = field(default_factory=dict)
    transitions: list[Transition] = field(default_factory=list)
    outbox: list[tuple[str, bytes]] = field(default_factory=list)
    applied: int = 0
    failed: list[tuple[T, str]] = field(default_factory=list)


def fold(items: Sequence[tuple[T, Event]], loaded: Mapping[str, CustomerState]) -> FoldResult[T]:
    """Apply ``items`` (a tag, e.g. the Kafka record, and its event) in order."""
    result: FoldResult[T] = FoldResult()
    current: dict[str, CustomerState] = dict(loaded)
    for tag, event in items:
        key = customer_key(event)
        if key is None:
            result.outbox.append((partition_key(event), lifecycle_record(event, None, None)))
            result.applied += 1
            continue
        before = current.get(key)
        try:
            applied = apply_event(before, event)
        except Exception as exc:
            result.failed.append((tag, f"reducer: {exc!r}"))
            continue
        current[key] = applied.state
        result.states[key] = applied.state
        if applied.transition is not None:
            result.transitions.append(applied.transition)
        result.outbox.append((key, lifecycle_record(event, before, applied)))
        result.applied += 1
    return result
