"""``python -m clm_common.topics ensure``: create CLM Stream's Kafka topics if missing."""

from __future__ import annotations

import argparse
import asyncio
import sys

from clm_common.kafka import ensure_topics, topic_specs
from clm_common.settings import CommonSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clm_common.topics")
    parser.add_argument("command", choices=["ensure", "list"])
    args = parser.parse_args(argv)
    settings = CommonSettings()
    if args.command == "list":
        for spec in topic_specs(settings):
            print(f"{spec.name}\tpartitions={spec.partitions}")
        return 0
    try:
        created = asyncio.run(ensure_topics(settings))
    except Exception as exc:
        print(
            f"topics: error: cannot reach Kafka at {settings.kafka_bootstrap} ({exc!r}) — "
            "start it (make run) or set CLM_KAFKA_BOOTSTRAP",
            file=sys.stderr,
        )
        return 2
    for name in created:
        print(f"created topic {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
