"""bench.proc: the process behind a listening port (whose CPU the stage bench counts)."""

from __future__ import annotations

import math
import os
import socket
import sys

import pytest

from bench.proc import cpu_s, listener_pid

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_the_listener_of_a_port_is_the_process_that_listens() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert listener_pid(port) == os.getpid()
    with socket.socket() as unbound:  # closed, or bound and not listening: nobody
        unbound.bind(("127.0.0.1", port))
        assert listener_pid(port) is None


def test_cpu_seconds_grow_with_work() -> None:
    before = cpu_s(os.getpid())
    sum(i * i for i in range(2_000_000))
    assert cpu_s(os.getpid()) > before


def test_no_process_has_no_cpu_figure() -> None:
    assert math.isnan(cpu_s(None))
