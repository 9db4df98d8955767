"""The metric names a PromQL expression reads (for checking dashboards against live services).

Small and deliberately strict: string literals, label matchers ``{…}``, range/subquery
selectors ``[…]`` and grouping clauses ``by (…)`` / ``without (…)`` / ``on (…)`` /
``ignoring (…)`` / ``group_left (…)`` / ``group_right (…)`` are removed; every remaining
identifier that is not a function, an aggregation keyword or Grafana's ``$__…`` variable is a
metric name. Recording-rule names (``level:metric:operations``) resolve to what their rule reads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
RULES = ROOT / "deploy" / "prometheus" / "rules"

KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}
#: Series Prometheus makes itself, not a service.
SYNTHETIC = {"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds"}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w$.])([A-Za-z_:][A-Za-z0-9_:]*)\s*(\()?")


def names_in(expr: str) -> set[str]:
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = re.sub(r"\$__\w+|\$\w+", " ", text)
    text = re.sub(r"\b\d+(\.\d+)?([eE][+-]?\d+)?\b", " ", text)
    out = set()
    for match in _IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in KEYWORDS:
            continue
        out.add(name)
    return out


def recording_rules() -> dict[str, str]:
    rules = {}
    for path in sorted(RULES.glob("*.yml")):
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            for rule in group["rules"]:
                if "record" in rule:
                    rules[rule["record"]] = rule["expr"]
    return rules


def panel_exprs() -> Iterator[tuple[str, str, str]]:
    """(dashboard file, panel title, expr) of every PromQL target."""
    for path in sorted(DASHBOARDS.glob("*.json")):
        dashboard: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    yield path.name, panel["title"], target["expr"]


def service_metric_names(expr: str, rules: dict[str, str] | None = None) -> set[str]:
    """Metric names ``expr`` needs from the services (recording rules resolved)."""
    rules = recording_rules() if rules is None else rules
    out: set[str] = set()
    for name in names_in(expr):
        if name in rules:
            out |= service_metric_names(rules[name], rules)
        elif name not in SYNTHETIC:
            out.add(name)
    return out
