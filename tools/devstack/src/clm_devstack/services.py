"""The three CLM services as child processes, plus the one-shot set-up commands before them.

``start_service`` is what tests use (a handle with ``stop()``/``kill()``, no pidfiles);
``start_service_detached``/``stop_service_detached`` are the pidfile-based variant ``up``/``down``
use.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from clm_devstack import processes
from clm_devstack.errors import DevstackError

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
MARK_ENV = "CLM_DEVSTACK_STATE"


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    module: str
    default_port: int

    @property
    def env_prefix(self) -> str:
        return "CLM_" + self.name.upper().replace("-", "_")

    @property
    def port_env(self) -> str:
        return f"{self.env_prefix}_PORT"

    @property
    def host_env(self) -> str:
        return f"{self.env_prefix}_HOST"


SERVICES: dict[str, ServiceSpec] = {
    spec.name: spec
    for spec in (
        ServiceSpec("ingest", "clm_ingest", 8001),
        ServiceSpec("stage-engine", "clm_stage_engine", 8002),
        ServiceSpec("metrics", "clm_metrics", 8003),
    )
}


def spec_for(name: str) -> ServiceSpec:
    """Look a service up by name ("stage-engine") or module ("clm_stage_engine")."""
    for spec in SERVICES.values():
        if name in (spec.name, spec.module, spec.name.replace("-", "_")):
            return spec
    raise DevstackError(f"unknown service {name!r}", f"use one of {', '.join(SERVICES)}")


def service_env(spec: ServiceSpec, env: Mapping[str, str], host: str, port: int) -> dict[str, str]:
    """The child's environment: ours, then ``env``, then the service's own host/port vars."""
    merged = {**os.environ, **env}
    merged[spec.host_env] = host
    merged[spec.port_env] = str(port)
    merged.setdefault("PYTHONUNBUFFERED", "1")
    return merged


def service_argv(spec: ServiceSpec) -> list[str]:
    return [sys.executable, "-m", spec.module]


def healthz(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when GET http://host:port/healthz answers 200."""
    url = f"http://{host}:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


@dataclass
class ServiceProcess:
    """A started service: where it listens, its log, and how to stop or kill it."""

    name: str
    pid: int
    host: str
    port: int
    log_path: Path
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return processes.pid_alive(self.pid)

    def _signal(self, sig: signal.Signals) -> None:
        if self.popen is not None:
            if self.popen.poll() is None:
                self.popen.send_signal(sig)
        elif processes.pid_alive(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def _wait(self, timeout: float) -> bool:
        if self.popen is not None:
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        return processes.wait_until(lambda: not processes.pid_alive(self.pid), timeout)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL. Returns the exit code if known."""
        self._signal(signal.SIGTERM)
        if not self._wait(timeout):
            self.kill()
        return self.popen.returncode if self.popen is not None else None

    def kill(self) -> int | None:
        """SIGKILL now (a crash, as far as the service can tell) and reap it."""
        self._signal(signal.SIGKILL)
        self._wait(10.0)
        return self.popen.returncode if self.popen is not None else None

    def log_tail(self, count: int = 20) -> list[str]:
        return processes.tail_lines(self.log_path, count)


def _wait_healthy(proc: ServiceProcess, timeout: float) -> None:
    def done() -> bool:
        return not proc.alive() or healthz(proc.host, proc.port)

    processes.wait_until(done, timeout, interval=0.2)
    if not proc.alive():
        code = proc.popen.returncode if proc.popen is not None else "?"
        line = processes.shorten(processes.relevant_line(proc.log_tail(30)))
        raise DevstackError(
            f"service {proc.name} exited during start-up (code {code}): {line}",
            f"see {proc.log_path}",
        )
    if not healthz(proc.host, proc.port):
        proc.stop()
        line = processes.shorten(processes.relevant_line(proc.log_tail(30)))
        raise DevstackError(
            f"service {proc.name} did not answer GET {proc.base_url}/healthz within "
            f"{timeout:.0f}s: {line}",
            f"see {proc.log_path}",
        )


def start_service(
    name: str,
    env: Mapping[str, str],
    logs_dir: Path,
    port: int,
    host: str = "127.0.0.1",
    *,
    timeout: float = READY_TIMEOUT,
    cwd: Path | None = None,
) -> ServiceProcess:
    """Start ``python -m <module>`` for a service and wait until /healthz answers 200.

    ``env`` is layered over ``os.environ``; CLM_<NAME>_HOST/PORT are set from ``host``/``port``.
    The log goes to ``<logs_dir>/<name>.log``. On failure the process is stopped and a
    DevstackError quoting the log is raised.
    """
    spec = spec_for(name)
    processes.require_port_free(host, port, spec.port_env)
    log_path = logs_dir / f"{spec.name}.log"
    popen = processes.spawn_detached(
        service_argv(spec), log_path, env=service_env(spec, env, host, port), cwd=cwd
    )
    proc = ServiceProcess(spec.name, popen.pid, host, port, log_path, popen)
    try:
        _wait_healthy(proc, timeout)
    except BaseException:
        if proc.alive():
            proc.kill()
        raise
    return proc


# --------------------------------------------------------------------------- pidfile variant
def pidfile_for(state_dir: Path, name: str) -> Path:
    return state_dir / "services" / f"{spec_for(name).name}.pid"


def _markers(state_dir: Path, spec: ServiceSpec) -> list[str]:
    return [spec.module, f"{MARK_ENV}={state_dir.resolve()}"]


def detached_pid(state_dir: Path, name: str) -> int | None:
    spec = spec_for(name)
    pid = processes.read_pidfile(pidfile_for(state_dir, name))
    return pid if processes.pid_is_ours(pid, _markers(state_dir, spec)) else None


def start_service_detached(
    name: str,
    env: Mapping[str, str],
    state_dir: Path,
    port: int,
    host: str = "127.0.0.1",
    *,
    cwd: Path | None = None,
    timeout: float = READY_TIMEOUT,
) -> tuple[ServiceProcess, bool]:
    """Like ``start_service`` but recorded in ``<state_dir>/services/<name>.pid`` and reused
    when already running. Returns (process, reused)."""
    spec = spec_for(name)
    logs_dir = state_dir / "logs"
    pid = detached_pid(state_dir, name)
    if pid is not None and processes.wait_until(lambda: healthz(host, port), 10):
        return ServiceProcess(spec.name, pid, host, port, logs_dir / f"{spec.name}.log"), True
    if pid is not None:
        processes.terminate(pid, _markers(state_dir, spec), STOP_TIMEOUT)
    marked = {**env, MARK_ENV: str(state_dir.resolve())}
    proc = start_service(name, marked, logs_dir, port, host, timeout=timeout, cwd=cwd)
    processes.write_pidfile(pidfile_for(state_dir, name), proc.pid)
    return proc, False


def stop_service_detached(state_dir: Path, name: str) -> bool:
    spec = spec_for(name)
    pidfile = pidfile_for(state_dir, name)
    pid = processes.read_pidfile(pidfile)
    stopped = pid is not None and processes.terminate(pid, _markers(state_dir, spec), STOP_TIMEOUT)
    processes.remove_file(pidfile)
    return stopped


# --------------------------------------------------------------------------- set-up steps
@dataclass(frozen=True)
class SetupStep:
    title: str
    argv: tuple[str, ...]


def setup_steps() -> list[SetupStep]:
    """Migrations and topics (``clm migrate``), then dev keys (run from the repository root)."""
    py = sys.executable
    return [
        SetupStep("database migrations and Kafka topics", (py, "-m", "clm_cli", "migrate")),
        SetupStep("dev keys", (py, "-m", "clm_cli", "keys", "seed-dev")),
    ]


def run_setup_steps(
    env: Mapping[str, str],
    repo_root: Path,
    log_path: Path,
    steps: Sequence[SetupStep] | None = None,
) -> None:
    """Run each step, output appended to ``log_path``; the first failure raises DevstackError."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    for step in steps if steps is not None else setup_steps():
        began = time.monotonic()
        try:
            result = subprocess.run(
                list(step.argv),
                cwd=str(repo_root),
                env={**os.environ, **env},
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise DevstackError(
                f"{step.title} ({' '.join(step.argv[1:])}) took longer than 300s",
                f"see {log_path}",
            ) from exc
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(f"$ {' '.join(step.argv)}\n{result.stdout}{result.stderr}\n")
        if result.returncode != 0:
            lines = [ln for ln in (result.stdout + "\n" + result.stderr).splitlines() if ln]
            raise DevstackError(
                f"{step.title} failed ({' '.join(step.argv[1:])}, exit {result.returncode}): "
                f"{processes.shorten(processes.relevant_line(lines))}",
                f"see {log_path}",
            )
        print(f"devstack: {step.title}: ok ({time.monotonic() - began:.1f}s)", flush=True)
