"""The documentation stays true: every setting is in the configuration reference, every ``clm``
command in the operations guide, every alert has a runbook line, every route, KPI and make
target is documented, and the README stays a short front page whose links lead somewhere."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from fastapi import FastAPI
from pydantic_settings import BaseSettings

from clm_cli.settings import CliSettings
from clm_infra.settings import CommonSettings
from clm_infra.settings import variables as settings_variables
from clm_ingest.app import create_app as ingest_app
from clm_ingest.settings import IngestSettings
from clm_metrics.api.kpis import KPI_NAMES
from clm_metrics.app import create_app as metrics_app
from clm_metrics.settings import MetricsSettings
from clm_stage_engine.app import create_app as stage_engine_app
from clm_stage_engine.settings import StageEngineSettings
from tests.unit.test_clm_help import ALL as CLM_COMMANDS

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text()


def page(name: str) -> str:
    return (DOCS / name).read_text()


def section(text: str, title: str) -> str:
    """The text of a ``## title`` section, up to the next ``## `` (its ``###`` included)."""
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def settings_reference() -> str:
    """The generated part of docs/configuration.md, between its markers."""
    text = page("configuration.md")
    start = text.index("<!-- settings:begin -->")
    return text[start : text.index("<!-- settings:end -->", start)]


def variables(cls: type[BaseSettings]) -> list[str]:
    return list(settings_variables(cls))


@pytest.mark.parametrize(
    "cls", [CommonSettings, IngestSettings, StageEngineSettings, MetricsSettings, CliSettings]
)
def test_every_setting_is_in_the_configuration_reference(cls: type[BaseSettings]) -> None:
    table = settings_reference()
    missing = [v for v in variables(cls) if f"`{v}`" not in table]
    assert missing == []


def test_every_clm_command_is_in_the_operations_guide() -> None:
    text = page("operations.md")
    paths = sorted(" ".join(path) for path in CLM_COMMANDS if path)
    missing = [p for p in paths if not re.search(rf"\bclm {re.escape(p)}(?![\w-])", text)]
    assert paths
    assert missing == []


def test_every_alert_has_a_runbook_line() -> None:
    rules = yaml.safe_load((ROOT / "deploy/prometheus/rules/clm.yml").read_text())
    alerts = [r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r]
    guide = section(page("operations.md"), "Monitoring")
    assert alerts
    missing = [a for a in alerts if not re.search(rf"^\| [^|]*`{a}`", guide, re.MULTILINE)]
    assert missing == []


def _template(path: str) -> str:
    """A route path with its parameters' names dropped: ``/v1/customers/{}``."""
    return re.sub(r"\{\w+\}", "{}", path)


@pytest.mark.parametrize(
    "app", [ingest_app, stage_engine_app, metrics_app], ids=["ingest", "stage-engine", "metrics"]
)
def test_every_route_is_in_the_api_reference(app: Callable[[], FastAPI]) -> None:
    text = _template(page("api.md"))
    paths = [_template(p) for p in app().openapi()["paths"]]
    missing = [p for p in paths if not re.search(rf"(?<![\w/]){re.escape(p)}(?![\w/{{])", text)]
    assert paths
    assert missing == []


def test_every_kpi_is_in_the_kpi_reference() -> None:
    text = page("kpis.md")
    table = section(text, "The KPIs")
    missing = [k for k in sorted(KPI_NAMES) if f"`{k}`" not in table]
    assert "currency" in KPI_NAMES
    assert missing == ["currency"]  # the answer's reporting currency, not a KPI of the table
    assert "`currency`" in section(text, "Money and rates")


def test_every_make_target_is_in_getting_started() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = re.findall(r"^([a-z][a-z-]*):.*## ", makefile, re.MULTILINE)
    table = section(page("getting-started.md"), "Make targets")
    missing = [t for t in targets if f"`make {t}`" not in table]
    assert "docs" in targets
    assert missing == []


def test_the_readme_is_a_short_front_page() -> None:
    assert len(README.splitlines()) <= 200
    for command in ("make run", "make test"):
        assert f"\n{command} " in README


def _slug(heading: str) -> str:
    """The anchor of a heading, as MkDocs (and GitHub, for these headings) makes it."""
    text = re.sub(r"[`*]", "", heading).strip().lower()
    text = re.sub(r"[^\w\s-]", "", text)
    return re.sub(r"[\s]+", "-", text)


def test_the_readme_links_lead_to_pages_and_headings() -> None:
    links = re.findall(r"\]\(([^)\s]+)\)", README)
    local = [link for link in links if not re.match(r"[a-z]+:", link)]
    assert local
    for link in local:
        target, _, anchor = link.partition("#")
        path = ROOT / target
        assert path.is_file(), link
        if anchor:
            headings = re.findall(r"^#+ (.+)$", path.read_text(), re.MULTILINE)
            assert anchor in {_slug(h) for h in headings}, link
