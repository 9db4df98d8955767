"""CPU time of processes on this box, from ``/proc`` (steadier than wall rates on a shared
machine). NaN where ``/proc`` is not there."""

from __future__ import annotations

import math
import os
from pathlib import Path


def _stat(path: Path) -> list[str] | None:
    """The fields of a ``/proc/PID/stat`` after the command name (which may hold spaces)."""
    try:
        return path.read_text().rpartition(")")[2].split()
    except OSError:
        return None


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process used so far."""
    fields = _stat(Path(f"/proc/{pid}/stat"))
    if fields is None:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_s(parent: int | None) -> float:
    """CPU seconds the process and its children used so far: its own, its live children's
    and those it reaped (their time is added to its ``cutime``/``cstime`` when they exit) —
    a Postgres server's postmaster and its backends, WAL writer, checkpointer, autovacuum."""
    if parent is None:
        return math.nan
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat(stat)
        if fields is None:
            continue
        if int(stat.parent.name) == parent:
            total += sum(int(f) for f in fields[11:15]) / tick
        elif int(fields[1]) == parent:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total
