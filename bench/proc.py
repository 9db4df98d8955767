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


def cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) the process used so far (NaN for no process, as
    :func:`tree_cpu_s`)."""
    if pid is None:
        return math.nan
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


def listener_pid(port: int) -> int | None:
    """The process listening on TCP ``port`` on this box (a broker started by the devstack,
    whose CPU the benchmarks count beside the services'), from ``/proc/net/tcp*`` and the
    processes' open sockets; None where it cannot be told (not here, not ours to read)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            # local address "ADDR:PORT" in hex, state 0A = LISTEN, then the socket's inode
            if int(cols[1].rpartition(":")[2], 16) == port and cols[3] == "0A":
                inodes.add(f"socket:[{cols[9]}]")
    if not inodes:
        return None
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            for fd in fd_dir.iterdir():
                if os.readlink(fd) in inodes:
                    return int(fd_dir.parent.name)
        except OSError:
            continue
    return None
