"""``python -m clm_domain.segments --schema [DIR]``: write the segment JSON Schemas."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clm_domain.segments import schema_files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clm_domain.segments")
    parser.add_argument(
        "--schema",
        metavar="DIR",
        nargs="?",
        const="deploy/schemas",
        required=True,
        help="write the segment condition and record JSON Schemas into DIR (deploy/schemas)",
    )
    out = Path(parser.parse_args(argv).schema)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in schema_files().items():
        (out / name).write_text(text)
        print(f"wrote {out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
