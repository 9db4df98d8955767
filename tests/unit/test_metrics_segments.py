"""The segment KPIs' pure parts (how a request names a segment, which segments get labels),
the collector's exposition and the segments dashboard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from clm_metrics.segment_gauges import SegmentCollector
from clm_metrics.segment_kpis import MAX_ID, Labelled, SegmentRef, SegmentTotals, bounded, parse_ref
from tests.promql_names import panel_exprs, service_metric_names

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy/grafana/dashboards/customer-segments.json"


def test_a_segment_is_named_by_its_id_or_its_name() -> None:
    assert parse_ref("42") == SegmentRef(42, "42")
    assert parse_ref(str(MAX_ID)) == SegmentRef(MAX_ID, str(MAX_ID))
    assert parse_ref("vip") == SegmentRef(None, "vip")
    assert parse_ref("42 ") == SegmentRef(None, "42 ")
    assert parse_ref("-1") == SegmentRef(None, "-1")
    for bad in ("0", str(MAX_ID + 1), "9" * 30):
        with pytest.raises(ValueError, match="segment id"):
            parse_ref(bad)


def _totals(*ids: int) -> list[SegmentTotals]:
    return [SegmentTotals(i, f"s{i}", i, 2 * i, i) for i in ids]


def test_the_oldest_segments_get_labels_and_the_rest_are_counted() -> None:
    assert bounded(_totals(5, 2, 9), 3, 2) == Labelled(tuple(_totals(2, 5)), 1)
    assert bounded(_totals(5, 2), 7, 2) == Labelled(tuple(_totals(2, 5)), 5)
    assert bounded([], 0, 2) == Labelled((), 0)


def test_the_collector_yields_the_last_read_only() -> None:
    registry = CollectorRegistry()
    collector = SegmentCollector()
    registry.register(collector)
    empty = generate_latest(registry).decode()
    assert "# TYPE clm_segment_entries_total counter" in empty
    assert "\nclm_segments_unlabelled " not in empty  # nothing read yet: no sample
    collector.labelled = Labelled(tuple(_totals(1, 2)), 3)
    text = generate_latest(registry).decode()
    assert 'clm_segment_members{segment="s2"} 2.0' in text
    assert 'clm_segment_entries_total{segment="s1"} 2.0' in text
    assert 'clm_segment_exits_total{segment="s2"} 2.0' in text
    assert "clm_segments_unlabelled 3.0" in text
    collector.labelled = Labelled(tuple(_totals(2)), 0)
    assert 'segment="s1"' not in generate_latest(registry).decode()


def test_the_segments_dashboard_charts_size_entries_and_exits_by_segment() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    (variable,) = dashboard["templating"]["list"]
    assert variable["name"] == "segment"
    assert "clm_segment_members" in variable["definition"]
    exprs = [e for f, _, e in panel_exprs() if f == DASHBOARD.name]
    used = set().union(*(service_metric_names(e) for e in exprs))
    assert used == {
        "clm_segment_members",
        "clm_segment_entries_total",
        "clm_segment_exits_total",
        "clm_segments_unlabelled",
    }
    assert all("$segment" in e for e in exprs if "unlabelled" not in e)
    assert any(e.startswith("max by (segment) (rate(clm_segment_exits_total") for e in exprs)
