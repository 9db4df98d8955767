"""``clm model fit --csv`` end to end, as an operator runs it (a subprocess, no service and no
database: the variables point at nothing that answers): the published CDNOW figures from the
raw sample in our CSV columns, the predictions file, and bad input refused with status 2."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import cdnow

NOWHERE = {
    "CLM_DATABASE_URL": "postgresql+asyncpg://nobody:nothing@127.0.0.1:9/none",
    "CLM_KAFKA_BOOTSTRAP": "127.0.0.1:9",
}


def clm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clm_cli", *args],
        env={**os.environ, **NOWHERE},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def cdnow_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cdnow.write_our_csv(tmp_path_factory.mktemp("cdnow") / "cdnow.csv")


def assert_published(doc: dict[str, object]) -> None:
    bg, gg = doc["bgnbd"], doc["gamma_gamma"]
    assert isinstance(bg, dict)
    assert isinstance(gg, dict)
    for name, value in {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}.items():
        assert bg[name] == pytest.approx(value, rel=0.01), name
    assert bg["log_likelihood"] == pytest.approx(-9582.4, abs=0.1)
    for name, value in {"p": 6.25, "q": 3.74, "v": 15.44}.items():
        assert gg[name] == pytest.approx(value, rel=0.01), name
    assert doc["customers"] == 2357
    assert doc["repeat_customers"] == 946
    assert doc["unit"] == "week"
    assert doc["calibration_end"] == "1997-09-30"


def test_the_published_cdnow_figures(cdnow_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "predictions.csv"
    done = clm(
        "model", "fit", "--csv", str(cdnow_csv), "--calibration-end", "1997-09-30", "--json",
        "--predictions", str(out), "--horizon-weeks", "39",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert_published(doc)
    assert doc["currency"] == "USD"
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == [
        "customer_id", "frequency", "recency", "T", "p_alive", "expected_purchases",
        "predicted_clv",
    ]  # fmt: skip
    assert len(rows) == 2357
    first = next(r for r in rows if r["customer_id"] == "1")
    assert (first["frequency"], round(float(first["recency"]), 2)) == ("2", 30.43)
    assert round(float(first["T"]), 2) == 38.86
    assert float(first["expected_purchases"]) == pytest.approx(1.226, abs=0.001)
    assert 0 < float(first["p_alive"]) < 1
    assert float(first["predicted_clv"]) > 0
    for row in rows:
        assert 0 <= float(row["p_alive"]) <= 1
        assert float(row["expected_purchases"]) >= 0


def test_the_text_report(cdnow_csv: Path) -> None:
    done = clm("model", "fit", "--csv", str(cdnow_csv), "--calibration-end", "1997-09-30")
    assert done.returncode == 0, done.stderr
    assert "r = 0.2426" in done.stdout
    assert "p = 6.24" in done.stdout
    assert "2357" in done.stdout


def test_one_currency_of_several_is_chosen(cdnow_csv: Path, tmp_path: Path) -> None:
    mixed = tmp_path / "mixed.csv"
    with mixed.open("w", newline="") as handle:
        w = csv.writer(handle)
        w.writerow(["customer_id", "date", "amount", "currency"])
        for line in cdnow_csv.read_text().splitlines()[1:]:
            w.writerow([*line.split(","), "USD"])
        w.writerow(["eu-1", "1997-02-01", "10.00", "EUR"])
        w.writerow(["eu-1", "1997-03-01", "12.00", "EUR"])
    refused = clm("model", "fit", "--csv", str(mixed))
    assert refused.returncode == 2
    assert "2 currencies (EUR, USD)" in refused.stderr
    assert "--currency" in refused.stderr
    done = clm(
        "model", "fit", "--csv", str(mixed), "--currency", "usd", "--calibration-end",
        "1997-09-30", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert_published(doc)
    assert doc["currency"] == "USD"


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (None, (), "cannot read it"),
        ("customer,when,amount\na,2025-01-01,1\n", (), "missing: date"),
        ("customer_id,date,amount\na,2025-01-01,-1\n", (), "is not an amount"),
        (
            "customer_id,date,amount,currency\na,2025-01-01,1,USD\n",
            ("--currency", "EUR"),
            "no transactions in EUR (found USD)",
        ),
        ("customer_id,date,amount\na,2025-01-01,1\nb,2025-01-02,2\n", (), "repeat purchases"),
        (
            "customer_id,date,amount\na,2025-01-01,1\n",
            ("--calibration-end", "2024-01-01"),
            "no transaction on or before",
        ),
        (
            "customer_id,date,amount\na,2025-01-01,1\n",
            ("--monthly-discount", "-1"),
            "--monthly-discount",
        ),
    ],
    ids=[
        "missing file",
        "bad column",
        "bad amount",
        "no such currency",
        "no repeat",
        "too early",
        "bad discount",
    ],
)
def test_bad_input_is_refused_in_a_sentence(
    tmp_path: Path, content: str | None, args: tuple[str, ...], message: str
) -> None:
    path = tmp_path / "tx.csv"
    if content is not None:
        path.write_text(content)
    done = clm("model", "fit", "--csv", str(path), *args)
    assert done.returncode == 2
    assert done.stderr.startswith("clm: error: ")
    assert message in done.stderr
    assert "Traceback" not in done.stderr
