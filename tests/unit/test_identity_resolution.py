"""Identity resolution: where a batch's events land, what they link, which profiles merge."""

from __future__ import annotations

from typing import Any

from clm_domain.events import Event, parse_event
from clm_stage_engine.usecases.identity import resolve_identities
from tests.factories import NOW, event_doc


def event(
    event_id: str, *, customer_id: str | None = None, anonymous_id: str | None = None, at: str
) -> Event:
    doc: dict[str, Any] = event_doc("site_visit", customer_id=customer_id, event_id=event_id)
    doc["occurred_at"] = at
    if anonymous_id is not None:
        doc["anonymous_id"] = anonymous_id
    return parse_event(doc, now=NOW)


def test_an_event_with_both_ids_links_and_anonymous_events_land_on_the_customer() -> None:
    ident = event("e1", customer_id="c1", anonymous_id="a1", at="2026-11-23T10:00:00Z")
    anon = event("e2", anonymous_id="a1", at="2026-11-23T10:05:00Z")
    found = resolve_identities([ident, anon], {})
    assert found.new_links == {"a1": ("c1", "e1")}
    assert found.landing(anon) == "c1"
    assert found.landing(ident) == "c1"


def test_the_earliest_linking_event_wins_and_a_stored_link_is_kept() -> None:
    late = event("e2", customer_id="c2", anonymous_id="a1", at="2026-11-23T11:00:00Z")
    early = event("e1", customer_id="c1", anonymous_id="a1", at="2026-11-23T10:00:00Z")
    assert resolve_identities([late, early], {}).new_links == {"a1": ("c1", "e1")}
    stored = resolve_identities([late, early], {"a1": "c9"})
    assert stored.new_links == {}
    assert stored.landing(event("e3", anonymous_id="a1", at="2026-11-23T12:00:00Z")) == "c9"


def test_a_customer_merged_away_lands_on_its_survivor_and_links_go_to_it() -> None:
    merged = event("e1", customer_id="old", anonymous_id="a2", at="2026-11-23T10:00:00Z")
    found = resolve_identities([merged], {"old": "survivor"})
    assert found.landing(merged) == "survivor"
    assert found.new_links == {"a2": ("survivor", "e1")}


def test_an_unlinked_anonymous_event_lands_on_its_own_profile_and_same_ids_do_not_link() -> None:
    alone = event("e1", anonymous_id="a3", at="2026-11-23T10:00:00Z")
    same = event("e2", customer_id="x", anonymous_id="x", at="2026-11-23T10:00:00Z")
    found = resolve_identities([alone, same], {})
    assert found.landing(alone) == "a3"
    assert found.new_links == {}


def test_marketing_spend_lands_nowhere() -> None:
    spend = parse_event(event_doc("marketing_spend", event_id="m1"), now=NOW)
    assert resolve_identities([spend], {}).landing(spend) is None


def test_only_a_stored_profile_linked_to_a_customer_of_the_batch_is_merged() -> None:
    ident = event("e1", customer_id="c1", anonymous_id="a1", at="2026-11-23T10:00:00Z")
    other = event("e2", customer_id="c2", anonymous_id="a2", at="2026-11-23T10:00:00Z")
    found = resolve_identities([ident, other], {})
    assert found.merges(stored={"a1", "a2", "c1"}, landed={"c1"}) == {"c1": ["a1"]}
    assert found.merges(stored={"c1"}, landed={"c1", "c2"}) == {}
