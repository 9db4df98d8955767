"""Compiling a condition: :func:`compile_condition` turns the tree into a
:class:`Predicate`, closures built once per segment version and run for every customer a
write changes (:mod:`~clm_domain.segments.evaluate` for ``matches``,
:mod:`~clm_domain.segments.timing` for ``next_change``). Pure: time is passed in, scores come
from a :data:`ScoreSource`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from clm_domain.customer_state import CustomerState
from clm_domain.segments.evaluate import LazyScores, ScoreSource, test_of, uses_scores
from clm_domain.segments.nodes import Node
from clm_domain.segments.timing import change_of, time_relative

__all__ = ["Predicate", "ScoreSource", "compile_condition"]


@dataclass(frozen=True, slots=True)
class Predicate:
    """A compiled condition.

    - ``matches(state, now, scores)``: whether the customer is in; ``scores`` is asked at
      most once, and only when a score fact decides.
    - ``next_change(state, now)``: the earliest instant after ``now`` at which ``matches``
      may change by time passing alone (None: never); it is constant until then.
    """

    node: Node
    matches: Callable[[CustomerState, datetime, ScoreSource | None], bool]
    next_change: Callable[[CustomerState, datetime], datetime | None]
    uses_scores: bool
    time_relative: bool


def compile_condition(node: Node) -> Predicate:
    """The predicate of a parsed condition."""
    root = test_of(node)
    reads_scores, moves = uses_scores(node), time_relative(node)
    matches: Callable[[CustomerState, datetime, ScoreSource | None], bool]
    if reads_scores:

        def matches(state: CustomerState, now: datetime, scores: ScoreSource | None) -> bool:
            return root(state, now, LazyScores(scores, state, now))

    else:
        matches = root  # reads no scores: the third argument is never touched
    next_change: Callable[[CustomerState, datetime], datetime | None] = _never
    if moves:
        change = change_of(node)

        def next_change(state: CustomerState, now: datetime) -> datetime | None:
            return change(state, now)[1]

    return Predicate(node, matches, next_change, reads_scores, moves)


def _never(state: CustomerState, now: datetime) -> datetime | None:
    return None
