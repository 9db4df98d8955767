"""Demo traffic for ``make demo``: a detached ``clm simulate`` stream into the dev ingest.

The stream sends waves of journeys whose history is backdated and whose latest activity is
now, at a steady rate (``CLM_DEMO_RATE`` events/s, default 20), so every stage fills within the
first wave (under a minute): at-risk and churned customers come from backdated inactivity (the
stage engine applies those moves when such a customer shows up again, its sweeper for the silent
ones). Recorded in ``<state>/services/demo.pid`` so ``down`` stops it; log in
``<state>/logs/demo.log``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from clm_devstack import processes
from clm_devstack.errors import DevstackError
from clm_devstack.services import MARK_ENV, STOP_TIMEOUT

NAME = "demo"


def pidfile(state_dir: Path) -> Path:
    return state_dir / "services" / f"{NAME}.pid"


def log_path(state_dir: Path) -> Path:
    return state_dir / "logs" / f"{NAME}.log"


def _markers(state_dir: Path) -> list[str]:
    return ["clm_cli", "simulate", f"{MARK_ENV}={state_dir.resolve()}"]


def argv() -> list[str]:
    rate = os.environ.get("CLM_DEMO_RATE", "").strip() or "20"
    return [
        sys.executable,
        "-m",
        "clm_cli",
        "simulate",
        "--duration",
        "0",
        "--rate",
        rate,
        "--customers",
        "40",
        "--batch",
        "20",
    ]


def running_pid(state_dir: Path) -> int | None:
    pid = processes.read_pidfile(pidfile(state_dir))
    return pid if processes.pid_is_ours(pid, _markers(state_dir)) else None


def start(state_dir: Path, env: Mapping[str, str], cwd: Path | None = None) -> tuple[int, bool]:
    """Start the stream (or find it running). ``env`` names the ingest (CLM_INGEST_HOST/PORT)
    and the write key (CLM_DEV_WRITE_KEY). Returns (pid, reused)."""
    pid = running_pid(state_dir)
    if pid is not None:
        return pid, True
    child_env = {**os.environ, **env, MARK_ENV: str(state_dir.resolve()), "PYTHONUNBUFFERED": "1"}
    popen = processes.spawn_detached(argv(), log_path(state_dir), env=child_env, cwd=cwd)
    processes.write_pidfile(pidfile(state_dir), popen.pid)
    # Until it has exec'd, the child still looks like us: wait to recognise it (or its end).
    markers = _markers(state_dir)
    processes.wait_until(
        lambda: popen.poll() is not None or processes.pid_is_ours(popen.pid, markers), 10.0
    )
    if popen.poll() is not None:
        processes.remove_file(pidfile(state_dir))
        line = processes.relevant_line(processes.tail_lines(log_path(state_dir), 30))
        raise DevstackError(
            f"the demo traffic (clm simulate) exited at once: {processes.shorten(line)}",
            f"see {log_path(state_dir)}",
        )
    return popen.pid, False


def stop(state_dir: Path) -> bool:
    path = pidfile(state_dir)
    pid = processes.read_pidfile(path)
    stopped = pid is not None and processes.terminate(pid, _markers(state_dir), STOP_TIMEOUT)
    processes.remove_file(path)
    return stopped
