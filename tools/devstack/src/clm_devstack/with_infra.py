"""``with-infra``: run a command (the test suite) with a Kafka and a PostgreSQL to use, the
environment's when they answer, else a fresh test stack started and stopped around it."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from types import FrameType
from urllib.parse import urlsplit

from clm_devstack import kafka, postgres, processes
from clm_devstack.errors import DevstackError, say
from clm_devstack.paths import find_repo_root
from clm_devstack.postgres_config import database_url
from clm_devstack.stacks import start_infra, stop_infra, testing_stack


def endpoint_of_bootstrap(bootstrap: str) -> tuple[str, int] | None:
    """The (host, port) of a Kafka bootstrap list's first address; None if it has no port."""
    first = bootstrap.split(",")[0].strip()
    host, sep, port = first.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]") or "127.0.0.1", int(port)


def _endpoint_of_url(url: str) -> tuple[str, int] | None:
    try:
        parts = urlsplit(url)
        port = parts.port or 5432
    except ValueError:
        return None
    return (parts.hostname, port) if parts.hostname else None


def external_infra_reachable(env: dict[str, str]) -> bool:
    """True when CLM_KAFKA_BOOTSTRAP and CLM_DATABASE_URL are both set and accept TCP."""
    bootstrap = env.get("CLM_KAFKA_BOOTSTRAP", "").strip()
    url = env.get("CLM_DATABASE_URL", "").strip()
    if not bootstrap or not url:
        return False
    endpoints = [endpoint_of_bootstrap(bootstrap), _endpoint_of_url(url)]
    return all(e is not None and processes.port_open(e[0], e[1], 2.0) for e in endpoints)


class Interrupted(BaseException):
    """The first SIGINT/SIGTERM during ``with-infra``; later ones are only counted."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _SignalGuard:
    """Turns the first SIGINT/SIGTERM into ``Interrupted``; the next ones cannot abort the
    clean-up (an impatient second Ctrl-C, or ``uv run`` passing the signal on once more)."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.shielded = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> _SignalGuard:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *_exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.received.append(signum)
        if len(self.received) == 1 and not self.shielded:
            raise Interrupted(signum)

    def shield(self) -> None:
        """From now on signals are only recorded (the clean-up must run to its end)."""
        self.shielded = True


def _exit_code(code: int) -> int:
    return code if code >= 0 else 128 - code


def run_command(cmd: Sequence[str], env: dict[str, str]) -> int:
    """Run CMD in the foreground and return its exit code.

    On Ctrl-C the terminal has already sent SIGINT to CMD too (same process group), so CMD
    gets time to finish its own clean-up; on SIGTERM we pass it on. Then SIGTERM, SIGKILL.
    """
    try:
        child = subprocess.Popen(list(cmd), env=env)
    except OSError as exc:
        raise DevstackError(
            f"cannot run {cmd[0]!r}: {exc.strerror or exc}", "check the command after '--'"
        ) from exc
    try:
        return _exit_code(child.wait())
    except Interrupted as exc:
        if exc.signum == signal.SIGTERM and child.poll() is None:
            child.send_signal(signal.SIGTERM)
        for grace, sig in ((30.0, signal.SIGTERM), (10.0, signal.SIGKILL)):
            try:
                child.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                child.send_signal(sig)
        child.wait()
        raise


def cmd_with_infra(args: argparse.Namespace) -> int:
    cmd: list[str] = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise DevstackError("with-infra needs a command", "use: with-infra -- pytest tests")
    env = dict(os.environ)
    if external_infra_reachable(env):
        say("using CLM_KAFKA_BOOTSTRAP / CLM_DATABASE_URL from the environment")
        with _SignalGuard():
            try:
                return run_command(cmd, env)
            except Interrupted as exc:
                return 128 + exc.signum

    stack = testing_stack(find_repo_root())
    began = time.monotonic()
    with _SignalGuard() as guard:
        try:
            # Always a clean slate: stop what a crashed earlier run left behind, drop its data.
            leftovers = stop_infra(stack)
            if leftovers:
                say(f"stopped leftovers of an earlier test run: {', '.join(leftovers)}")
            kafka.wipe_data(stack.kafka)
            postgres.wipe_data(stack.postgres)
            start_infra(stack)
            env.update(
                CLM_KAFKA_BOOTSTRAP=stack.kafka.bootstrap,
                CLM_DATABASE_URL=database_url(stack.postgres),
                CLM_TEST_PG_ADMIN_URL=database_url(stack.postgres, "postgres"),
            )
            env.setdefault("CLM_ENV", "test")
            say(
                f"test infra up in {time.monotonic() - began:.1f}s: Kafka "
                f"{stack.kafka.bootstrap}, PostgreSQL {stack.postgres.host}:{stack.postgres.port}"
            )
            return run_command(cmd, env)
        except Interrupted as exc:
            name = signal.Signals(exc.signum).name
            say(f"{name} received: stopping the test infrastructure")
            return 128 + exc.signum
        finally:
            guard.shield()
            stopped = stop_infra(stack)
            if stopped:
                say(f"stopped test {' and '.join(stopped)}")
