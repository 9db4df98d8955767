"""``python -m clm_devstack up|down|status|with-infra`` — the commands behind make run/test."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from clm_devstack import demo, kafka, postgres, processes, services
from clm_devstack.errors import DevstackError
from clm_devstack.kafka import KafkaConfig
from clm_devstack.paths import dev_state_dir, find_repo_root, testing_state_dir
from clm_devstack.postgres import PostgresConfig

DEFAULT_WRITE_KEY = "dev-write-key"
DEFAULT_READ_TOKEN = "dev-read-token"  # noqa: S105 - well-known local development token
DEFAULT_ADMIN_KEY = "dev-admin-key"


# --------------------------------------------------------------------------- settings
def env_port(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise DevstackError(f"{name}={raw!r} is not a TCP port", f"set {name} to 1-65535")
    return int(raw)


@dataclass(frozen=True)
class Stack:
    repo_root: Path
    state_dir: Path
    kafka: KafkaConfig
    postgres: PostgresConfig

    @property
    def services_logs(self) -> Path:
        return self.state_dir / "logs"


def dev_stack(repo_root: Path) -> Stack:
    state = dev_state_dir(repo_root)
    return Stack(
        repo_root,
        state,
        KafkaConfig(
            state_dir=state / "kafka",
            port=env_port("CLM_KAFKA_PORT", 9092),
            controller_port=env_port("CLM_KAFKA_CONTROLLER_PORT", 9093),
            heap=os.environ.get("CLM_KAFKA_HEAP", "384m").strip() or "384m",
            repo_root=repo_root,
        ),
        PostgresConfig(state_dir=state / "postgres", port=env_port("CLM_PG_PORT", 55432)),
    )


def testing_stack(repo_root: Path) -> Stack:
    kafka_port = env_port("CLM_TEST_KAFKA_PORT", 19092)
    controller_port = env_port("CLM_TEST_KAFKA_CONTROLLER_PORT", 19093)
    pg_port = env_port("CLM_TEST_PG_PORT", 55433)
    state = testing_state_dir(repo_root, (kafka_port, controller_port, pg_port))
    return Stack(
        repo_root,
        state,
        KafkaConfig(
            state_dir=state / "kafka",
            port=kafka_port,
            controller_port=controller_port,
            heap=os.environ.get("CLM_KAFKA_HEAP", "384m").strip() or "384m",
            repo_root=repo_root,
            port_env="CLM_TEST_KAFKA_PORT",
            controller_port_env="CLM_TEST_KAFKA_CONTROLLER_PORT",
        ),
        PostgresConfig(
            state_dir=state / "postgres",
            port=pg_port,
            fast_unsafe=True,
            superuser=True,
            port_env="CLM_TEST_PG_PORT",
        ),
    )


@dataclass(frozen=True)
class ServiceAddress:
    name: str
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def service_addresses() -> list[ServiceAddress]:
    return [
        ServiceAddress(
            spec.name,
            os.environ.get(spec.host_env, "").strip() or "127.0.0.1",
            env_port(spec.port_env, spec.default_port),
        )
        for spec in services.SERVICES.values()
    ]


def _say(message: str) -> None:
    print(f"devstack: {message}", flush=True)


def _prepare(state_dir: Path) -> None:
    """Create the state dir; keep it enterable for the postgres OS user when we are root."""
    state_dir.mkdir(parents=True, exist_ok=True)
    for directory in (state_dir.parent, state_dir):
        with contextlib.suppress(OSError):
            directory.chmod(0o755)


def start_infra(stack: Stack) -> tuple[kafka.KafkaStarted, postgres.PostgresStarted]:
    """Kafka and Postgres, started side by side (Kafka's JVM is the slow one)."""
    _prepare(stack.state_dir)
    kafka.ensure_jars(stack.repo_root, stack.kafka.version)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pg_future: Future[postgres.PostgresStarted] = pool.submit(
            postgres.start_postgres, stack.postgres
        )
        try:
            k = kafka.start_kafka(stack.kafka)
        finally:
            pg_exc = pg_future.exception()
        if pg_exc is not None:
            raise pg_exc
        return k, pg_future.result()


def _describe(what: str, started: kafka.KafkaStarted | postgres.PostgresStarted) -> str:
    verb = "already running, reused" if started.reused else "started"
    return f"{what}: {verb} (pid {started.pid}, {started.seconds:.1f}s)"


# --------------------------------------------------------------------------- up
def child_env(stack: Stack, addresses: Sequence[ServiceAddress]) -> dict[str, str]:
    env = {
        "CLM_ENV": "dev",
        "CLM_KAFKA_BOOTSTRAP": stack.kafka.bootstrap,
        "CLM_DATABASE_URL": postgres.database_url(stack.postgres),
        "CLM_DEV_WRITE_KEY": os.environ.get("CLM_DEV_WRITE_KEY", DEFAULT_WRITE_KEY),
        "CLM_DEV_READ_TOKEN": os.environ.get("CLM_DEV_READ_TOKEN", DEFAULT_READ_TOKEN),
        "CLM_DEV_ADMIN_KEY": os.environ.get("CLM_DEV_ADMIN_KEY", DEFAULT_ADMIN_KEY),
        # dev only: webhooks to a receiver on this machine, over plain http
        "CLM_WEBHOOK_ALLOW_INSECURE": "true",
        "CLM_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1,localhost,::1",
    }
    for address in addresses:
        spec = services.spec_for(address.name)
        env[spec.host_env] = address.host
        env[spec.port_env] = str(address.port)
    return env


def curl_example(ingest_url: str, write_key: str) -> str:
    now = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    body = (
        f'{{"event_id":"{uuid.uuid4()}","type":"signup","customer_id":"cust-1",'
        f'"occurred_at":"{now}","source":"dev","channel":"email"}}'
    )
    return (
        f"curl -sS -X POST {ingest_url}/v1/events -H 'Authorization: Bearer {write_key}' "
        f"-H 'Content-Type: application/json' -d '{body}'"
    )


def cmd_up(args: argparse.Namespace) -> int:
    root = find_repo_root()
    stack = dev_stack(root)
    addresses = service_addresses()
    k, pg = start_infra(stack)
    _say(_describe(f"Kafka {stack.kafka.bootstrap}", k))
    _say(_describe(f"PostgreSQL {stack.postgres.host}:{stack.postgres.port}", pg))
    env = child_env(stack, addresses)
    if not args.infra_only:
        services.run_setup_steps(env, root, stack.services_logs / "setup.log")
        for address in addresses:
            proc, reused = services.start_service_detached(
                address.name, env, stack.state_dir, address.port, address.host, cwd=root
            )
            verb = "already running, reused" if reused else "started"
            _say(f"{address.name}: {verb} (pid {proc.pid}) at {proc.base_url}")
    print(_summary(stack, addresses, env, infra_only=args.infra_only))
    if args.demo and args.infra_only:
        _say("demo traffic needs the services: run without --infra-only")
    elif args.demo:
        pid, reused = demo.start(stack.state_dir, env, cwd=root)
        verb = "already running, reused" if reused else "started"
        rel = demo.log_path(stack.state_dir).relative_to(stack.repo_root)
        _say(
            f"demo traffic: {verb} (pid {pid}, clm simulate, log {rel}); every stage fills "
            "within a minute — GET /v1/kpis?window=24h on the metrics service"
        )
    return 0


def _summary(
    stack: Stack, addresses: Sequence[ServiceAddress], env: dict[str, str], *, infra_only: bool
) -> str:
    rel = stack.state_dir.relative_to(stack.repo_root)
    lines = ["", "CLM Stream dev stack is up." if not infra_only else "Kafka and Postgres are up."]
    if not infra_only:
        for address in addresses:
            lines.append(f"  {address.name:<14}{address.url}   (docs: {address.url}/docs)")
    lines += [
        f"  {'Kafka':<14}{env['CLM_KAFKA_BOOTSTRAP']}   (CLM_KAFKA_BOOTSTRAP)",
        f"  {'Postgres':<14}{env['CLM_DATABASE_URL']}   (CLM_DATABASE_URL)",
    ]
    if not infra_only:
        lines += [
            f"  {'write key':<14}{env['CLM_DEV_WRITE_KEY']}   (Authorization: Bearer <key>)",
            f"  {'read token':<14}{env['CLM_DEV_READ_TOKEN']}",
            f"  {'admin key':<14}{env['CLM_DEV_ADMIN_KEY']}   (erase, merge, webhooks)",
        ]
    lines += [
        f"  {'logs':<14}{rel}/logs/ (services, setup), {rel}/kafka/logs/server.log, "
        f"{rel}/postgres/logs/postgres.log",
    ]
    ingest = next((a for a in addresses if a.name == "ingest"), None)
    if not infra_only and ingest is not None:
        lines += [
            "",
            "Send a first event:",
            "  " + curl_example(ingest.url, env["CLM_DEV_WRITE_KEY"]),
        ]
    lines += ["", "Stop everything with: make down   (python -m clm_devstack down)"]
    return "\n".join(lines)


# --------------------------------------------------------------------------- down / status
def cmd_down(_args: argparse.Namespace) -> int:
    stack = dev_stack(find_repo_root())
    stopped_any = False
    if demo.stop(stack.state_dir):
        _say("stopped the demo traffic")
        stopped_any = True
    for name in reversed(list(services.SERVICES)):
        if services.stop_service_detached(stack.state_dir, name):
            _say(f"stopped {name}")
            stopped_any = True
    if kafka.stop_kafka(stack.kafka):
        _say(f"stopped Kafka ({stack.kafka.bootstrap})")
        stopped_any = True
    if postgres.stop_postgres(stack.postgres):
        _say(f"stopped PostgreSQL ({stack.postgres.host}:{stack.postgres.port})")
        stopped_any = True
    if not stopped_any:
        _say("nothing was running")
    return 0


def cmd_status(_args: argparse.Namespace) -> int:
    stack = dev_stack(find_repo_root())
    rows: list[tuple[str, int | None, str]] = []
    rows.append(("kafka", kafka.running_pid(stack.kafka), stack.kafka.bootstrap))
    rows.append(
        (
            "postgres",
            postgres.running_pid(stack.postgres),
            postgres.database_url(stack.postgres),
        )
    )
    for address in service_addresses():
        rows.append(
            (address.name, services.detached_pid(stack.state_dir, address.name), address.url)
        )
    rows.append(("demo traffic", demo.running_pid(stack.state_dir), "clm simulate"))
    for name, pid, where in rows:
        state = f"running (pid {pid})" if pid is not None else "not running"
        print(f"{name:<14}{state:<24}{where}")
    return 0


# --------------------------------------------------------------------------- with-infra
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


class _Interrupted(BaseException):
    """The first SIGINT/SIGTERM during ``with-infra``; later ones are only counted."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _SignalGuard:
    """Turns the first SIGINT/SIGTERM into ``_Interrupted``; the next ones cannot abort the
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
            raise _Interrupted(signum)

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
    except _Interrupted as exc:
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


def stop_infra(stack: Stack) -> list[str]:
    stopped = []
    if kafka.stop_kafka(stack.kafka, sweep=True):
        stopped.append("Kafka")
    if postgres.stop_postgres(stack.postgres):
        stopped.append("PostgreSQL")
    return stopped


def cmd_with_infra(args: argparse.Namespace) -> int:
    cmd: list[str] = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise DevstackError("with-infra needs a command", "use: with-infra -- pytest tests")
    env = dict(os.environ)
    if external_infra_reachable(env):
        _say("using CLM_KAFKA_BOOTSTRAP / CLM_DATABASE_URL from the environment")
        with _SignalGuard():
            try:
                return run_command(cmd, env)
            except _Interrupted as exc:
                return 128 + exc.signum

    stack = testing_stack(find_repo_root())
    began = time.monotonic()
    with _SignalGuard() as guard:
        try:
            # Always a clean slate: stop what a crashed earlier run left behind, drop its data.
            leftovers = stop_infra(stack)
            if leftovers:
                _say(f"stopped leftovers of an earlier test run: {', '.join(leftovers)}")
            kafka.wipe_data(stack.kafka)
            postgres.wipe_data(stack.postgres)
            start_infra(stack)
            env.update(
                CLM_KAFKA_BOOTSTRAP=stack.kafka.bootstrap,
                CLM_DATABASE_URL=postgres.database_url(stack.postgres),
                CLM_TEST_PG_ADMIN_URL=postgres.database_url(stack.postgres, "postgres"),
            )
            env.setdefault("CLM_ENV", "test")
            _say(
                f"test infra up in {time.monotonic() - began:.1f}s: Kafka "
                f"{stack.kafka.bootstrap}, PostgreSQL {stack.postgres.host}:{stack.postgres.port}"
            )
            return run_command(cmd, env)
        except _Interrupted as exc:
            name = signal.Signals(exc.signum).name
            _say(f"{name} received: stopping the test infrastructure")
            return 128 + exc.signum
        finally:
            guard.shield()
            stopped = stop_infra(stack)
            if stopped:
                _say(f"stopped test {' and '.join(stopped)}")


# --------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m clm_devstack",
        description="Local CLM Stream stack: a real Kafka broker and PostgreSQL server as local "
        "processes, plus the three services.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = sub.add_parser(
        "up",
        help="start Kafka, Postgres, migrations, topics, dev keys and the services (.run/dev)",
        description="Start everything for `make run` and return; a second `up` reuses what runs. "
        "Ports: CLM_KAFKA_PORT, CLM_KAFKA_CONTROLLER_PORT, CLM_PG_PORT, CLM_INGEST_PORT, "
        "CLM_STAGE_ENGINE_PORT, CLM_METRICS_PORT; heap: CLM_KAFKA_HEAP.",
    )
    up.add_argument("--demo", action="store_true", help="also send demo traffic")
    up.add_argument(
        "--infra-only", action="store_true", help="only Kafka and Postgres, no services"
    )
    up.set_defaults(func=cmd_up)
    down = sub.add_parser("down", help="stop everything `up` started (by recorded pids)")
    down.set_defaults(func=cmd_down)
    status = sub.add_parser("status", help="show what runs")
    status.set_defaults(func=cmd_status)
    infra = sub.add_parser(
        "with-infra",
        help="run a command with Kafka and Postgres available (for make test)",
        description=(
            "If CLM_KAFKA_BOOTSTRAP and CLM_DATABASE_URL are set and reachable, just run CMD. "
            "Otherwise start a fresh Kafka and Postgres in .run/test (ports 19092/19093 and "
            "55433; other CLM_TEST_*_PORT values get their own .run/test-<ports>), export "
            "CLM_KAFKA_BOOTSTRAP, CLM_DATABASE_URL and CLM_TEST_PG_ADMIN_URL, run CMD, stop them "
            "again and exit with CMD's exit code."
        ),
    )
    infra.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ...")
    infra.set_defaults(func=cmd_with_infra)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except DevstackError as exc:
        print(exc.one_line(), file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("devstack: interrupted", file=sys.stderr, flush=True)
        return 130
    except _Interrupted as exc:
        print("devstack: interrupted", file=sys.stderr, flush=True)
        return 128 + exc.signum
    except BrokenPipeError:  # e.g. `up | head`: nothing left to tell anyone
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the exit-time flush
        return 0
    except Exception as exc:
        if os.environ.get("CLM_DEVSTACK_DEBUG"):
            raise
        cause = processes.shorten(f"unexpected {type(exc).__name__}: {exc}")
        fix = "rerun with CLM_DEVSTACK_DEBUG=1 for the traceback and report it"
        print(DevstackError(cause, fix).one_line(), file=sys.stderr, flush=True)
        return 2
