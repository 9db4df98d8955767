"""The README stays true: every setting is in its configuration reference, every ``clm``
command in its CLI section, every alert in the operations guide."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic_settings import BaseSettings

from clm_cli.settings import CliSettings
from clm_infra.settings import CommonSettings
from clm_ingest.settings import IngestSettings
from clm_metrics.settings import MetricsSettings
from clm_stage_engine.settings import StageEngineSettings
from tests.unit.test_clm_help import ALL as CLM_COMMANDS

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    """The text of a ``## title`` section, up to the next ``## ``."""
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end > 0 else None]


def variables(cls: type[BaseSettings]) -> list[str]:
    prefix = str(cls.model_config.get("env_prefix", ""))
    return [(prefix + name).upper() for name in cls.model_fields]


@pytest.mark.parametrize(
    "cls", [CommonSettings, IngestSettings, StageEngineSettings, MetricsSettings, CliSettings]
)
def test_every_setting_is_in_the_configuration_reference(cls: type[BaseSettings]) -> None:
    table = section("Configuration")
    missing = [v for v in variables(cls) if f"`{v}`" not in table]
    assert missing == []


def test_every_clm_command_is_in_the_readme() -> None:
    text = section("API")
    top = sorted({path[0] for path in CLM_COMMANDS if path})
    missing = [name for name in top if not re.search(rf"\bclm {name}\b", text)]
    assert missing == []


def test_every_alert_has_a_runbook_line() -> None:
    rules = yaml.safe_load((ROOT / "deploy/prometheus/rules/clm.yml").read_text())
    alerts = [r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r]
    guide = section("Operations")
    assert alerts
    missing = [a for a in alerts if not re.search(rf"^\| [^|]*`{a}`", guide, re.MULTILINE)]
    assert missing == []
