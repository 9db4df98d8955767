"""Identity resolution: which customer each of a batch's events lands on, which anonymous ids
it links, and which profiles those links merge. Pure: plain data in, plain data out.

An event carrying both ids links its anonymous id to its customer (the earliest such event
of the batch wins, and an id linked before keeps its link); an anonymous-only event lands on
its linked customer, if any; a customer merged into another lands on the survivor.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from clm_domain.events import Event
from clm_domain.lifecycle import customer_key, event_order


@dataclass(frozen=True, slots=True)
class Identities:
    """The stored links (anonymous id → customer id) and the batch's new ones
    (anonymous id → (customer id, id of the event that links it))."""

    links: Mapping[str, str]
    new_links: dict[str, tuple[str, str]] = field(default_factory=dict)

    def landing(self, event: Event) -> str | None:
        """The customer an event lands on: its own id unless merged or linked away (None:
        no customer, as marketing spend)."""
        key = customer_key(event)
        if key is None:
            return None
        if event.customer_id:
            return self.links.get(key, key)  # a customer merged into another
        return self.links.get(key) or self.new_links.get(key, (key, ""))[0]

    def merges(self, stored: Collection[str], landed: Collection[str]) -> dict[str, list[str]]:
        """The profiles each customer absorbs: a newly linked anonymous id that has a row of
        its own (``stored``), linked to a customer the batch's events land on (``landed``)."""
        out: dict[str, list[str]] = {}
        for anon, (cid, _) in self.new_links.items():
            if anon in stored and cid in landed:
                out.setdefault(cid, []).append(anon)
        return out


def resolve_identities(events: Iterable[Event], links: Mapping[str, str]) -> Identities:
    """The batch's new links, from the events carrying both ids, in event order."""
    new_links: dict[str, tuple[str, str]] = {}
    linking = [e for e in events if e.anonymous_id and e.customer_id]  # few: sort only them
    for e in sorted(linking, key=event_order):
        anon, cid = e.anonymous_id, e.customer_id
        if anon and cid and anon != cid and anon not in links and anon not in new_links:
            new_links[anon] = (links.get(cid, cid), e.event_id)
    return Identities(links, new_links)
