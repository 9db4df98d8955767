"""The lifecycle record contract: what the stage engine publishes on ``clm.lifecycle.v1`` and
every downstream consumer (the metrics service first) reads. ``docs/lifecycle-records.md``
explains each kind and how to count it; the JSON Schemas in ``deploy/schemas/`` are generated
from these types (``python -m clm_domain.lifecycle_records --schema``).

The types are ``TypedDict``s (:mod:`clm_domain.record_types`): a record is the plain ``dict``
``orjson`` gives, so typing it costs nothing at run time. Two versions, named by each record's
``schema`` field (the topic's name stays ``clm.lifecycle.v1``: it names the stream, each record
names its shape):

* ``clm.lifecycle.v1``: ``event``, ``time``, ``identity_merge``, ``erasure``,
  ``customer_merge`` and ``correction``;
* ``clm.lifecycle.v2``: the same kinds but ``correction``, each with an optional ``restated``
  flag, and ``restatement`` (what was counted for some profiles, taken back, and what counts
  now).

The shared kinds have one type for both versions: a v1 record is a v2 record whose
``restated`` is absent (false). :func:`decode` (:mod:`clm_domain.record_codec`) checks only
what is cheap (the schema, the kind, the kind's required keys); times and money stay text as on
the wire (:func:`as_datetime`, :func:`as_decimal` read them). Events inside records are the
event contract's JSON (:mod:`clm_domain.events`), typed by their common fields only
(:class:`EventDoc`). The JSON Schemas come from :mod:`clm_domain.record_schema`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clm_domain.record_codec import (
    ESSENTIAL,
    KINDS,
    REQUIRED_KEYS,
    SLIM_PROPERTIES,
    BadRecord,
    as_datetime,
    as_decimal,
    decode,
    encode,
    event_json,
    slim_event,
)
from clm_domain.record_schema import json_schema, record_adapter, schema_files
from clm_domain.record_types import (
    SCHEMA_V1,
    SCHEMA_V2,
    SCHEMAS,
    CorrectedEvent,
    CorrectionRecord,
    CustomerMergeRecord,
    ErasureRecord,
    EventDoc,
    EventRecord,
    Facts,
    IdentityMergeRecord,
    LifecycleRecord,
    LifecycleRecordV1,
    LifecycleRecordV2,
    Money,
    Move,
    ProfileTimeline,
    RestatementRecord,
    SchemaName,
    SlimEvent,
    SlimProperties,
    StageName,
    TimelineItem,
    TimeRecord,
    Timestamp,
)

__all__ = [
    "ESSENTIAL",
    "KINDS",
    "REQUIRED_KEYS",
    "SCHEMAS",
    "SCHEMA_V1",
    "SCHEMA_V2",
    "SLIM_PROPERTIES",
    "BadRecord",
    "CorrectedEvent",
    "CorrectionRecord",
    "CustomerMergeRecord",
    "ErasureRecord",
    "EventDoc",
    "EventRecord",
    "Facts",
    "IdentityMergeRecord",
    "LifecycleRecord",
    "LifecycleRecordV1",
    "LifecycleRecordV2",
    "Money",
    "Move",
    "ProfileTimeline",
    "RestatementRecord",
    "SchemaName",
    "SlimEvent",
    "SlimProperties",
    "StageName",
    "TimeRecord",
    "TimelineItem",
    "Timestamp",
    "as_datetime",
    "as_decimal",
    "decode",
    "encode",
    "event_json",
    "json_schema",
    "main",
    "record_adapter",
    "schema_files",
    "slim_event",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clm_domain.lifecycle_records")
    parser.add_argument(
        "--schema",
        metavar="DIR",
        nargs="?",
        const="deploy/schemas",
        required=True,
        help="write the JSON Schemas of every record version into DIR (deploy/schemas)",
    )
    args = parser.parse_args(argv)
    out = Path(args.schema)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in schema_files().items():
        (out / name).write_text(text)
        print(f"wrote {out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
