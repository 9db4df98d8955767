"""``python -m bench [name ...]``: run the named benchmarks (default: all), in order.

Each benchmark is a module ``bench/<name>.py`` with ``main() -> None`` that measures and calls
``bench.results.write_section``. They expect Kafka and Postgres from ``CLM_KAFKA_BOOTSTRAP`` and
``CLM_DATABASE_URL`` (``make bench`` starts them). After them, ``bench.summary`` rewrites the
summary of the targets at the top of RESULTS.md from every section (``summary`` alone: only that).
"""

from __future__ import annotations

import importlib
import sys

ALL: list[str] = [
    "ingest",
    "stage_engine",
    "e2e",
    "metrics",
    "model_fit",
    "segments",
]  # benchmark modules, in run order


def main(argv: list[str]) -> int:
    names = argv or ALL
    if not names:
        print("bench: no benchmarks yet", file=sys.stderr)
        return 1
    for name in names:
        if name not in ALL and name != "summary":
            print(f"bench: unknown benchmark {name!r}; known: {', '.join(ALL)}", file=sys.stderr)
            return 2
    for name in names:
        if name != "summary":
            print(f"bench: running {name}", flush=True)
            importlib.import_module(f"bench.{name}").main()
    importlib.import_module("bench.summary").main()
    print("bench: results in bench/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
