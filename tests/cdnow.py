"""The CDNOW sample (2,357 customers of CDNOW's first-quarter 1997 cohort, purchases to
1998-06-30) as shipped in the ``lifetimes`` package's data files: the independent oracle of
the predictive models. The package itself is not imported (it need not import under today's
numpy and pandas); its data folder is found without executing it."""

from __future__ import annotations

import csv
import importlib.util
from datetime import date, datetime
from pathlib import Path

import pytest

CALIBRATION_END = date(1997, 9, 30)  # 39 weeks from 1997-01-01, this day included


def datasets() -> Path:
    spec = importlib.util.find_spec("lifetimes")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the lifetimes package (dev dependency: the CDNOW data) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets"


def sample_transactions() -> list[tuple[str, datetime, float]]:
    """(customer id, day, amount): the raw sample's rows (id, new id, YYYYMMDD, quantity,
    amount), keyed by the 4-digit id the summaries use (as an integer there)."""
    out = []
    for line in (datasets() / "CDNOW_sample.txt").read_text().splitlines():
        if line.strip():
            _, customer, day, _quantity, amount = line.split()
            out.append((str(int(customer)), datetime.strptime(day, "%Y%m%d"), float(amount)))
    return out


def lifetimes_summary() -> dict[str, dict[str, float]]:
    """lifetimes' own calibration summary with the mean repeat spend: ID -> x, t_x, T, zbar."""
    with (datasets() / "cdnow_customers_summary_with_transactions.csv").open() as handle:
        return {
            row["ID"]: {k: float(v) for k, v in row.items() if k != "ID"}
            for row in csv.DictReader(handle)
        }


def write_our_csv(path: Path) -> Path:
    """The raw sample in the columns ``clm simulate --csv`` and ``clm model fit`` read."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["customer_id", "date", "amount"])
        for customer, day, amount in sample_transactions():
            writer.writerow([customer, day.date().isoformat(), f"{amount:.2f}"])
    return path
