"""Writing benchmark results: one section per benchmark in bench/RESULTS.md, with the machine."""

from __future__ import annotations

import math
import os
import platform
import re
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADER = (
    "# Benchmark results\n\n"
    "Written by `make bench`; each section says when and on what it ran. Ratios against the raw\n"
    "ceilings measured in the same run matter more than absolute numbers. This virtual machine's\n"
    "speed changes by more than half from hour to hour (its host's load): each machine line\n"
    "carries a CPU gauge, the CPU milliseconds of a fixed Python loop at the time (lower is\n"
    "faster), to read the figures of different runs against each other.\n\n"
    "Kafka and Postgres are the throw-away servers `make bench` starts, as `make test` does:\n"
    "one KRaft broker, and a Postgres with `fsync`, `synchronous_commit` and\n"
    "`full_page_writes` off (a crash can corrupt it). A production server's commit waits for\n"
    "its WAL to reach the disk (a flush per batch of events or per request here, not per\n"
    "event) and it logs whole pages after each checkpoint. Turned on (`ALTER SYSTEM`) for\n"
    "two interleaved pairs of 2-process stage-engine runs on 2026-12-04, they made no\n"
    "difference beyond the runs' noise (11.1k/11.5k events/s off, 11.7k/12.1k on).\n"
    "`wal_init_zero` is off as well: a fresh cluster writes zeros through each new 16 MB WAL\n"
    "segment, where a long-running server recycles old ones (2.7% of a run's CPU, profiled).\n"
)


def machine_line() -> str:
    """CPU model, cores, memory, OS, Python, git commit and date of this run."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {cpu} · {os.cpu_count()} cores · "
        f"{mem_gib:.0f} GiB · {platform.system()} {platform.release()} · "
        f"Python {platform.python_version()} · CPU gauge {cpu_gauge_ms():.0f} ms · "
        f"commit {commit or 'unknown'}"
    )


def cpu_gauge_ms() -> float:
    """CPU milliseconds a fixed pure-Python loop takes now (the best of three): this virtual
    machine's speed changes by more than half from hour to hour (its host's load), and every
    figure of a run moves with it. Lower is faster; compare runs' figures with it in mind."""
    best = math.inf
    for _ in range(3):
        started = time.process_time()
        total = 0
        for i in range(3_000_000):
            total += i
        best = min(best, time.process_time() - started)
    return best * 1000


def write_section(name: str, body: str, *, top: bool = False) -> None:
    """Replace (or add) the section ``name`` of RESULTS.md; a new one goes at the end, or
    right under the header when ``top``."""
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    section = f"{start}\n{body.rstrip()}\n\n_Machine: {machine_line()}_\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    elif top and "<!-- bench:" in text:
        at = text.index("<!-- bench:")
        text = text[:at] + section + "\n\n" + text[at:]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    RESULTS.write_text(text)


def read_sections() -> dict[str, str]:
    """Every section of RESULTS.md by name (its body and machine line, without the markers)."""
    text = RESULTS.read_text() if RESULTS.exists() else ""
    found = re.finditer(r"<!-- bench:([\w-]+) -->\n(.*?)\n<!-- /bench:\1 -->", text, re.S)
    return {m[1]: m[2] for m in found}
