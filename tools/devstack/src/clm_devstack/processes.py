"""Process plumbing: pidfiles, ownership checks, detached start, stop, ports, log tails."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from clm_devstack.errors import DevstackError


@dataclass(frozen=True)
class Started:
    """A server process we started, or found running and reused, and how long that took."""

    pid: int
    reused: bool
    seconds: float


# --------------------------------------------------------------------------- pidfiles
def read_pidfile(path: Path) -> int | None:
    """The pid on the first line of ``path``, or None when absent or unreadable."""
    try:
        first = path.read_text(encoding="utf-8").splitlines()[0].strip()
    except (OSError, IndexError):
        return None
    return int(first) if first.isdigit() and int(first) > 0 else None


def write_pidfile(path: Path, pid: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{pid}\n", encoding="utf-8")
    tmp.replace(path)


def remove_file(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


# --------------------------------------------------------------------------- liveness
def _reap(pid: int) -> None:
    """Collect ``pid`` if it is an exited child of ours (so it does not linger as a zombie)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def pid_alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return True
    # Field 3 (after the parenthesised command name) is the state; Z = zombie, X = dead.
    state = stat.rsplit(")", 1)[-1].split()[:1]
    return state not in (["Z"], ["X"])


def read_proc_bytes(pid: int, name: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:
        return b""


def markers_match(blob: bytes, markers: Iterable[str]) -> bool:
    """True when every marker occurs in ``blob`` (a NUL-separated cmdline and/or environ)."""
    wanted = [m.encode() for m in markers]
    return bool(wanted) and bool(blob) and all(m in blob for m in wanted)


def pid_is_ours(pid: int | None, markers: Sequence[str]) -> bool:
    """True when ``pid`` is alive and its command line (plus environment) has every marker.

    Guards against pid reuse: a pidfile left behind by a crashed run may name an unrelated
    process by now, and that one must never be signalled.
    """
    if pid is None or pid <= 0 or pid == os.getpid() or not pid_alive(pid):
        return False
    blob = read_proc_bytes(pid, "cmdline") + b"\0" + read_proc_bytes(pid, "environ")
    return markers_match(blob, markers)


def find_pids(markers: Sequence[str]) -> list[int]:
    """Live processes whose command line holds every marker (e.g. our state dir's path).

    Only a fallback for a pidfile that was never written or got lost; the markers must name
    something unique to us, such as an absolute state directory.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid == os.getpid():
            continue
        if markers_match(read_proc_bytes(pid, "cmdline"), markers) and pid_alive(pid):
            found.append(pid)
    return found


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def terminate(pid: int, markers: Sequence[str], timeout: float = 30.0) -> bool:
    """SIGTERM ``pid`` if it is ours, wait up to ``timeout`` s, then SIGKILL. True if signalled."""
    if not pid_is_ours(pid, markers):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not wait_until(lambda: not pid_alive(pid), timeout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(pid), 10.0)
    return True


# --------------------------------------------------------------------------- ports
def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when a TCP connect to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_free(host: str, port: int) -> bool:
    """True when nothing listens on host:port (we could bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def require_port_free(
    host: str, port: int, env_var: str, *, transient_wait_s: float = 65.0
) -> None:
    """Raise a DevstackError unless host:port can be bound.

    A port nobody listens on can still be unbindable for up to a minute: a closed connection
    that used it as its local port sits in TIME_WAIT (our defaults lie in Linux's ephemeral
    range, so a client connection can have borrowed one). Then wait for it to clear.
    """
    if port_free(host, port):
        return
    if not port_open(host, port):
        print(
            f"devstack: port {port} is held by a closing connection (TIME_WAIT); "
            f"waiting up to {transient_wait_s:.0f}s for it to clear",
            flush=True,
        )
        deadline = time.monotonic() + transient_wait_s
        while time.monotonic() < deadline:
            time.sleep(1.0)
            if port_free(host, port):
                return
    raise DevstackError(
        f"port {port} on {host} is taken by another process",
        f"stop it or set {env_var} to a free port",
    )


# --------------------------------------------------------------------------- start
def spawn_detached(
    argv: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session (survives our exit), stdout+stderr appended to a log."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        try:
            return subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=str(cwd) if cwd else None,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise DevstackError(
                f"cannot start {argv[0]}: {exc.strerror or exc}",
                "check that it is installed and executable",
            ) from exc


# --------------------------------------------------------------------------- logs
def tail_lines(path: Path, count: int = 20, max_bytes: int = 65536) -> list[str]:
    """The last ``count`` non-empty lines of ``path`` (empty list if missing)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except OSError:
        return []
    lines = [ln.rstrip() for ln in data.decode("utf-8", errors="replace").splitlines()]
    return [ln for ln in lines if ln.strip()][-count:]


_SEVERE = ("FATAL", "ERROR", "PANIC", "Exception", "Error:", "Traceback", "error:")


def relevant_line(lines: Sequence[str]) -> str:
    """The line that best explains a failure: the last severe one, else the last one."""
    for line in reversed(lines):
        if any(word in line for word in _SEVERE):
            return line.strip()
    return lines[-1].strip() if lines else "(no log output)"


def shorten(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
