"""The stage engine's batches with the P(alive) rule on: whatever the arrival order, the
batching, the duplicates and when the sweeper passes, a customer ends where a rebuild of its
events under the same rules and model puts it (so a batch and a sweep agree)."""

from __future__ import annotations

import random
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from clm_domain.events import Event, parse_event
from clm_domain.lifecycle import CustomerState, advance, rebuild
from clm_stage_engine.processor import Item, first_of_each, fold, needs_history
from tests.factories import NOW, event_doc
from tests.unit.test_lifecycle_p_alive import CDNOW, ON, T0

# purchases close together (so P(alive) can fall below 0.3 before 60 quiet days), visits
steps = st.lists(
    st.tuples(st.sampled_from(["purchase", "purchase", "site_visit"]), st.integers(0, 150)),
    min_size=1,
    max_size=20,
)


@settings(max_examples=200, deadline=None)
@given(steps, st.randoms(use_true_random=False), st.integers(1, 5), st.integers(0, 5))
def test_batches_and_sweeps_under_the_rule_give_the_rebuilt_state(
    picked: list[tuple[str, int]], rnd: random.Random, batch_size: int, repeats: int
) -> None:
    events: list[Event] = []
    for n, (type_, day) in enumerate(picked):
        doc = event_doc(
            type_,
            event_id=f"e{n:03d}",
            occurred_at=(T0 + timedelta(days=day, hours=n % 24)).isoformat(),
            **({"order_id": f"o-{n}"} if type_ == "purchase" else {}),
        )
        events.append(parse_event(doc, now=NOW))
    arrival = list(events) + [rnd.choice(events) for _ in range(repeats)]
    rnd.shuffle(arrival)
    now = T0 + timedelta(days=400)
    loaded: dict[str, CustomerState] = {}
    stored: list[Event] = []
    processed: set[tuple[str, str]] = set()
    for start in range(0, len(arrival), batch_size):
        unique = first_of_each([(0, e) for e in arrival[start : start + batch_size]])
        fresh = [e for _, e in unique if (e.source, e.event_id) not in processed]
        processed.update((e.source, e.event_id) for e in fresh)
        batch = [Item.of(0, e, "cust-1") for e in fresh]
        histories = {"cust-1": [list(stored)]} if needs_history(batch, loaded, {}) else {}
        result = fold(batch, loaded, ON, now=now, histories=histories, model=CDNOW)
        loaded.update(result.states)
        stored.extend(i.event for i in result.applied)
        if "cust-1" in loaded and rnd.random() < 0.4:  # the sweeper passes, at some time
            when = T0 + timedelta(days=rnd.randint(0, 300))
            loaded["cust-1"], _ = advance(loaded["cust-1"], when, ON, CDNOW)
    final, _ = advance(loaded["cust-1"], now, ON, CDNOW)
    assert final == rebuild("cust-1", events, ON, now, CDNOW)
