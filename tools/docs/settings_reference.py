"""The settings tables of ``docs/configuration.md``, written from the settings models.

``python tools/docs/settings_reference.py`` prints them; ``--write`` puts them between the
page's ``<!-- settings:begin -->`` and ``<!-- settings:end -->`` markers. A unit test fails
when the page and the models disagree.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from clm_cli.settings import CliSettings
from clm_infra.settings import CommonSettings, variables
from clm_ingest.settings import IngestSettings
from clm_metrics.settings import MetricsSettings
from clm_stage_engine.settings import StageEngineSettings

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"

#: (heading, model): a service's table lists what it reads beyond every process's settings
SECTIONS: list[tuple[str, type[BaseSettings]]] = [
    ("Every process", CommonSettings),
    ("Ingest", IngestSettings),
    ("Stage engine", StageEngineSettings),
    ("Metrics", MetricsSettings),
    ("The `clm` command", CliSettings),
]


def default_of(field: FieldInfo) -> str:
    """The default as a reader would write it in the environment."""
    if field.default_factory is not None:
        value: Any = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    if value == "":
        return "empty"
    return str(value)


def table(model: type[BaseSettings], common: dict[str, str]) -> list[str]:
    """The variables ``model`` reads beyond ``common`` (or with another default)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for variable, (_, field) in variables(model).items():
        default = default_of(field)
        if common.get(variable) == default:
            continue  # as every process reads it
        meaning = (field.description or "").replace("|", "\\|").replace("\n", " ")
        rows.append(f"| `{variable}` | `{default}` | {meaning} |")
    return rows


def reference() -> str:
    common: dict[str, str] = {}
    lines: list[str] = []
    for heading, model in SECTIONS:
        lines += [f"### {heading}", "", *table(model, common), ""]
        if model is CommonSettings:
            common = {v: default_of(f) for v, (_, f) in variables(CommonSettings).items()}
    return "\n".join(lines).rstrip() + "\n"


def written(page: str) -> str:
    """``page`` with the generated tables between its markers."""
    start, end = page.index(BEGIN) + len(BEGIN), page.index(END)
    return page[:start] + "\n" + reference() + page[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help=f"update {PAGE.name} in place")
    args = parser.parse_args(argv)
    if not args.write:
        sys.stdout.write(reference())
        return 0
    PAGE.write_text(written(PAGE.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
