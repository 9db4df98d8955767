"""clm_devstack.processes: pidfiles, the pid ownership check, ports and log tails."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from clm_devstack import processes
from clm_devstack.errors import DevstackError


@pytest.fixture
def sleeper(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    marker = str(tmp_path / "state-dir")
    proc = subprocess.Popen([sys.executable, "-c", "import time, sys; time.sleep(60)", marker])
    # between fork and exec the child still shows our command line: wait for its own
    assert processes.wait_until(lambda: processes.pid_is_ours(proc.pid, [marker]), 10, 0.01)
    yield proc
    proc.kill()
    proc.wait()


def test_pidfile_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "x" / "svc.pid"
    assert processes.read_pidfile(path) is None
    processes.write_pidfile(path, 4242)
    assert processes.read_pidfile(path) == 4242
    processes.remove_file(path)
    processes.remove_file(path)  # twice is fine
    assert not path.exists()


@pytest.mark.parametrize("content", ["", "abc\n", "-5\n", "0\n"])
def test_garbage_pidfile_reads_as_none(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.pid"
    path.write_text(content)
    assert processes.read_pidfile(path) is None


def test_markers_match() -> None:
    blob = b"java\0-cp\0/x/*\0kafka.Kafka\0/repo/.run/dev/kafka/server.properties\0"
    assert processes.markers_match(blob, ["kafka.Kafka", "/repo/.run/dev/kafka"])
    assert not processes.markers_match(blob, ["kafka.Kafka", "/repo/.run/test/kafka"])
    assert not processes.markers_match(blob, [])
    assert not processes.markers_match(b"", ["kafka.Kafka"])


def test_pid_is_ours_needs_every_marker(sleeper: subprocess.Popen[bytes], tmp_path: Path) -> None:
    marker = str(tmp_path / "state-dir")
    assert processes.pid_is_ours(sleeper.pid, [marker])
    assert not processes.pid_is_ours(sleeper.pid, [marker, "kafka.Kafka"])
    assert not processes.pid_is_ours(sleeper.pid, [str(tmp_path / "other")])
    assert not processes.pid_is_ours(None, [marker])
    assert not processes.pid_is_ours(os.getpid(), [sys.executable])


def test_dead_or_reused_pid_is_not_ours(sleeper: subprocess.Popen[bytes], tmp_path: Path) -> None:
    marker = str(tmp_path / "state-dir")
    sleeper.kill()
    sleeper.wait()
    assert not processes.pid_alive(sleeper.pid)
    assert not processes.pid_is_ours(sleeper.pid, [marker])
    # Signalling a pid that is not ours does nothing and says so.
    assert not processes.terminate(sleeper.pid, [marker], timeout=1)


def test_terminate_stops_our_process(sleeper: subprocess.Popen[bytes], tmp_path: Path) -> None:
    assert processes.terminate(sleeper.pid, [str(tmp_path / "state-dir")], timeout=5)
    assert not processes.pid_alive(sleeper.pid)
    assert processes.find_pids([str(tmp_path / "state-dir")]) == []


def test_find_pids(sleeper: subprocess.Popen[bytes], tmp_path: Path) -> None:
    assert processes.find_pids([str(tmp_path / "state-dir")]) == [sleeper.pid]


def test_port_checks() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert processes.port_open("127.0.0.1", port)
        assert not processes.port_free("127.0.0.1", port)
        with pytest.raises(DevstackError, match="CLM_X_PORT"):
            processes.require_port_free("127.0.0.1", port, "CLM_X_PORT")
    assert processes.port_free("127.0.0.1", port)
    assert not processes.port_open("127.0.0.1", port)


def test_a_port_held_without_a_listener_is_waited_for() -> None:
    """Like a TIME_WAIT leftover: unbindable, yet nobody listens; it clears by itself."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    assert not processes.port_free("127.0.0.1", port)
    assert not processes.port_open("127.0.0.1", port)
    with pytest.raises(DevstackError, match="taken"):
        processes.require_port_free("127.0.0.1", port, "CLM_X_PORT", transient_wait_s=1.5)
    release = threading.Timer(0.5, holder.close)
    release.start()
    processes.require_port_free("127.0.0.1", port, "CLM_X_PORT", transient_wait_s=10)
    release.join()


def test_tail_and_relevant_line(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    assert processes.tail_lines(log) == []
    log.write_text("starting\nERROR bad config: x\n\nshutting down\n")
    assert processes.tail_lines(log, 2) == ["ERROR bad config: x", "shutting down"]
    assert processes.relevant_line(processes.tail_lines(log)) == "ERROR bad config: x"
    assert processes.relevant_line(["a", "b"]) == "b"
    assert processes.relevant_line([]) == "(no log output)"


def test_shorten() -> None:
    assert processes.shorten("a\n  b") == "a b"
    assert len(processes.shorten("x" * 1000, 50)) == 50
