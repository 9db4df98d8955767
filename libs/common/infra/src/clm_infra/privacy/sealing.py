"""Sealing an event's personal fields for the topic, and opening them for a reader.

The ingest publishes an event with its personal fields (:mod:`clm_domain.personal`) taken
out and put, as JSON encrypted under its subject's data key, in ``sealed``; the clear fields
are all the stage engine and the metrics read. The associated data binds a sealed part to its
event (source and id) and key: it does not open on another event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import orjson

from clm_domain.events import Event, dump_event, partition_key
from clm_domain.personal import Found, personal_fields, personal_part, reveal
from clm_infra.privacy.ciphers import DataKey, Undecryptable

#: What a reader learns of an event's personal part: there was none, it was opened, or its
#: key is gone (the customer was erased; or it does not open).
Personal = Literal["none", "opened", "erased"]


def _aad(subject: str, key_id: str, source: str, event_id: str) -> bytes:
    return f"clm-event\x00{subject}\x00{key_id}\x00{source}\x00{event_id}".encode()


def subject_of(event: Event, found: Found | None = None) -> str | None:
    """Whose data key seals the event's personal fields (``found``: its
    :func:`personal_fields`, if known); None when it carries none."""
    envelope, fields = personal_fields(event) if found is None else found
    return partition_key(event) if envelope or fields else None


def seal_event(event: Event, key: DataKey | None, found: Found | None = None) -> bytes:
    """The event's record value on the topic: its personal fields (``found``, if known) taken
    out and sealed under ``key``, the data key of :func:`subject_of` (None only when that is
    None)."""
    envelope, fields = found = personal_fields(event) if found is None else found
    if not envelope and not fields:
        return dump_event(event)
    if key is None:
        raise ValueError("an event with personal fields needs its subject's data key")
    spec: dict[str, Any] = dict.fromkeys(envelope, True)
    if fields:
        spec["properties"] = set(fields)
    clear = event.__pydantic_serializer__.to_json(event, exclude=spec, exclude_none=True)
    aad = _aad(key.subject, key.key_id, event.source, event.event_id)
    data = key.seal(orjson.dumps(personal_part(event, found)), aad)
    sealed = orjson.dumps({"v": 1, "subject": key.subject, "key": key.key_id, "data": data})
    # one more member of the JSON object: cheaper than a document made and dumped again
    return clear[:-1] + b',"sealed":' + sealed + b"}"


def sealed_subject(doc: Mapping[str, Any]) -> str | None:
    """Whose key sealed a stored event document's personal part; None if it has none."""
    sealed = doc.get("sealed")
    return str(sealed.get("subject")) if isinstance(sealed, dict) else None


def open_event(doc: dict[str, Any], keys: Mapping[str, DataKey]) -> tuple[dict[str, Any], Personal]:
    """A stored event document with its personal fields put back (``keys``: the data keys of
    the subjects there are, by subject), and what became of them."""
    sealed = doc.get("sealed")
    if not isinstance(sealed, dict):
        return doc, "none"
    clear = {k: v for k, v in doc.items() if k != "sealed"}
    key = keys.get(str(sealed.get("subject")))
    if key is None or key.key_id != sealed.get("key"):
        return clear, "erased"
    aad = _aad(key.subject, key.key_id, str(doc.get("source")), str(doc.get("event_id")))
    try:
        part = orjson.loads(key.open(str(sealed.get("data")), aad))
    except (Undecryptable, orjson.JSONDecodeError):
        return clear, "erased"
    return reveal(clear, part), "opened"
