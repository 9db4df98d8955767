"""The summary at the top of RESULTS.md: every target of issues 7, 29, 31 and 32, its measured value,
its ratio where it has one, met or missed, and the section with the details.

Read from the sections as the benchmarks wrote them (``make bench`` rewrites it after every
run, ``make bench BENCH=summary`` alone); each row names its section's run, so a figure from an
older run than the others shows. A figure a section no longer states reads "not found".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from bench.results import read_sections, write_section

NOT_FOUND = "not found"


@dataclass(frozen=True)
class Row:
    target: str
    section: str
    measured: str = NOT_FOUND
    ratio: str = ""
    met: bool | None = None  # None: not measured, or a figure without a target


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def _search(pattern: str, text: str) -> re.Match[str] | None:
    return re.search(pattern, text, re.M)


def table_row(text: str, first_cell: str) -> list[str] | None:
    """The cells of the first table row whose first cell starts with ``first_cell``."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.lstrip().startswith("|") and cells[0].startswith(first_cell):
            return cells
    return None


def _found(match: re.Match[str] | None) -> float | None:
    return None if match is None else _number(match[1])


def _cell(cells: list[str] | None, at: int) -> float | None:
    """A table cell's number (digits, commas and a point kept), None if there is none."""
    try:
        return None if cells is None else _number(re.sub(r"[^\d,.]", "", cells[at]))
    except (IndexError, ValueError):
        return None


def _no_ratio(_: str) -> str:
    return ""


@dataclass(frozen=True)
class Figure:
    """A target read from a section: its figure (None: not found), shown with ``shown``."""

    target: str
    section: str
    value: Callable[[str], float | None]
    shown: str
    met: Callable[[float], bool | None]  # None: a figure without a target
    ratio: Callable[[str], str] = _no_ratio

    def row(self, text: str) -> Row:
        value = self.value(text)
        if value is None:
            return Row(self.target, self.section)
        return Row(
            self.target, self.section, self.shown.format(value), self.ratio(text), self.met(value)
        )


def _aiokafka_share(text: str) -> str:
    share = table_row(text, "batched ingest ≥ 50% of (b)")
    return f"{share[1]} of a bare aiokafka producer" if share else ""


def _copy_share(text: str) -> str:
    copy = _found(_search(r"ratio engine ÷ raw COPY\s*\|\s*([\d.]+)", text))
    best = _search(r"best sustained rate \(([^)]+)\)", text)
    by = f" ({best[1]})" if best else ""
    return "" if copy is None else f"{copy:.3f} of a raw COPY{by}"


def _cpu_medians(text: str) -> str:
    here, base = table_row(text, "exact"), table_row(text, "sketch")
    if here is None or base is None or len(here) < 4 or len(base) < 4:
        return ""
    return f"median {here[3]} vs {base[3]} µs a replayed record, alternating runs"


def _bitmap_share(text: str) -> str:
    own = _search(r"Bitmap storage: [^(]*\(([\d,.]+ kB) of\s+it the bitmaps", text)
    return f"`kpi_distinct` with keys and index; {own[1]} the bitmaps" if own else ""


FIGURES = [
    Figure(
        "batched ingest ≥ 25,000 events/s",
        "ingest",
        lambda t: _cell(table_row(t, "batched ingest ≥ 25,000 events/s"), 1),
        "{:,.0f} events/s",
        lambda v: v >= 25_000,
        _aiokafka_share,
    ),
    Figure(
        "stage engine ≥ 20,000 events/s",
        "stage-engine",
        lambda t: _found(_search(r"best sustained rate[^|]*\|\s*\**([\d,.]+) events/s", t)),
        "{:,.0f} events/s",
        lambda v: v >= 20_000,
        _copy_share,
    ),
    Figure(
        "read p99 ≤ 5 ms idle",
        "stage-engine",
        lambda t: _found(_search(r"GET /v1/customers/\{id\}`[^\n]*?p99 ([\d.]+) ms", t)),
        "{:.2f} ms",
        lambda v: v <= 5,
    ),
    Figure(
        "KPI p99 < 50 ms (large history)",
        "metrics",
        lambda t: _cell(table_row(t, "large"), -1),
        "{:.1f} ms",
        lambda v: v < 50,
    ),
    Figure(
        "KPI p99 history ratio ≤ 1.5",
        "metrics",
        lambda t: _found(_search(r"p99 ratio large / small: \**([\d.]+)", t)),
        "{:.2f}",
        lambda v: v <= 1.5,
        lambda _: "large ÷ small",
    ),
    Figure(
        "metrics CPU per event ≤ 1.15 × the sketch version",
        "metrics-cpu",
        lambda t: _found(_search(r"CPU ratio exact / sketch: \**([\d.]+)", t)),
        "{:.3f} × the sketch version's",
        lambda v: v <= 1.15,
        _cpu_medians,
    ),
    Figure(
        "model fit of 1.65M customers < 60 s",
        "model-fit",
        lambda t: _found(_search(r"Model fit ([\d.]+) s", t)),
        "{:.2f} s",
        lambda v: v < 60,
        lambda t: (
            f"scoring them: {m[1]} s"
            if (m := _search(r"scoring every[^|]*\|\s*([\d.]+)", t))
            else ""
        ),
    ),
    Figure(
        "stage engine with 10 segments ≥ 0.85 × none",
        "segments",
        lambda t: _found(_search(r"ratio 10 segments ÷ none \|\s*\**([\d.]+)", t)),
        "{:.3f} × the rate without segments",
        lambda v: v >= 0.85,
        lambda t: (
            f"50 segments: {m[1]} × none"
            if (m := _search(r"ratio 50 segments ÷ none \|\s*\**([\d.]+)", t))
            else ""
        ),
    ),
    Figure(
        "segment backfill rate",
        "segments",
        lambda t: _cell(table_row(t, "backfill rate"), 1),
        "{:,.0f} customers/s",
        lambda _: None,
    ),
    Figure(
        "segment members page p99 (1M customers)",
        "segments",
        lambda t: _cell(table_row(t, "`limit=100`"), 2),
        "{:.2f} ms",
        lambda _: None,
        lambda t: f"p50 {cells[1]}" if (cells := table_row(t, "`limit=100`")) else "",
    ),
    Figure(
        "distinct bitmap storage a day (large history)",
        "metrics",
        lambda t: _found(_search(r"Bitmap storage: \**([\d,.]+) kB a day", t)),
        "{:,.1f} kB",
        lambda _: None,
        _bitmap_share,
    ),
]


E2E_TARGETS = (
    "end-to-end p50 ≤ 50 ms at 50% load",
    "end-to-end p99 ≤ 250 ms at 50% load",
    "read p99 ≤ 10 ms under ingest",
    "ingest RSS < 300 MB",
    "stage-engine RSS < 300 MB",
    "metrics RSS < 300 MB",
)


def _e2e(text: str) -> list[Row]:
    """From the section's own target table (target | measured | ratio | met)."""
    rows = []
    for target in E2E_TARGETS:
        cells = table_row(text, target)
        if cells is None or len(cells) < 4:
            rows.append(Row(target, "e2e"))
        else:
            rows.append(Row(target, "e2e", cells[1], cells[2], cells[3] == "yes"))
    return rows


ORDER = [
    "batched ingest ≥ 25,000 events/s",
    "stage engine ≥ 20,000 events/s",
    "end-to-end p50 ≤ 50 ms at 50% load",
    "end-to-end p99 ≤ 250 ms at 50% load",
    "read p99 ≤ 5 ms idle",
    "read p99 ≤ 10 ms under ingest",
    "KPI p99 < 50 ms (large history)",
    "KPI p99 history ratio ≤ 1.5",
    "ingest RSS < 300 MB",
    "stage-engine RSS < 300 MB",
    "metrics RSS < 300 MB",
    "metrics CPU per event ≤ 1.15 × the sketch version",
    "distinct bitmap storage a day (large history)",
    "model fit of 1.65M customers < 60 s",
    "stage engine with 10 segments ≥ 0.85 × none",
    "segment backfill rate",
    "segment members page p99 (1M customers)",
]


def anchor(text: str) -> str:
    """The GitHub anchor of the section's first heading."""
    heading = _search(r"^#+ (.+)$", text)
    if heading is None:
        return ""
    slug = re.sub(r"[^\w\- ]", "", heading[1].strip().lower())
    return "#" + slug.replace(" ", "-")


def when(text: str) -> str:
    """The date, time and commit of the section's run, from its machine line."""
    date = _search(r"_Machine: (\d{4}-\d\d-\d\d \d\d:\d\d) UTC", text)
    commit = _search(r"· commit ([0-9a-f]+)", text)
    gauge = _search(r"CPU gauge (\d+) ms", text)
    speed = f", CPU gauge {gauge[1]} ms" if gauge else ""
    return f"{date[1] if date else '?'}, {commit[1] if commit else '?'}{speed}"


def rows(sections: dict[str, str]) -> list[Row]:
    """Every target of issues 7, 29, 31 and 32, in the issues' order."""
    found = {f.target: f.row(sections[f.section]) for f in FIGURES if f.section in sections}
    if "e2e" in sections:
        found.update({r.target: r for r in _e2e(sections["e2e"])})
    section = {f.target: f.section for f in FIGURES} | dict.fromkeys(E2E_TARGETS, "e2e")
    return [found.get(t, Row(t, section[t])) for t in ORDER]


def report(sections: dict[str, str]) -> str:
    lines = [
        "## Summary: the targets of issues 7, 29, 31 and 32",
        "",
        "Written from the sections below after every `make bench`; the last column is the "
        "section with the details and the time and commit of its run (a section not rerun "
        "keeps its older figures). 2 cores, everything on one box.",
        "",
        "| target | measured | ratio | met | details (run) |",
        "|---|---:|---|---|---|",
    ]
    for row in rows(sections):
        met = "-" if row.met is None else "yes" if row.met else "**no**"
        text = sections.get(row.section, "")
        where = f"[{row.section}]({anchor(text)})" if text else row.section
        lines.append(
            f"| {row.target} | {row.measured} | {row.ratio} | {met} | "
            f"{where} ({when(text) if text else 'not run'}) |"
        )
    return "\n".join(lines)


def main() -> None:
    write_section("summary", report(read_sections()), top=True)
