"""``python -m clm_devstack up|down|status|with-infra`` — the commands behind make run/test.

The stacks they start are in ``stacks``; ``with-infra`` in ``with_infra``."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from clm_devstack import demo, kafka, postgres, processes, services
from clm_devstack.errors import DevstackError, say
from clm_devstack.paths import find_repo_root
from clm_devstack.postgres_config import database_url
from clm_devstack.stacks import (
    ServiceAddress,
    Stack,
    child_env,
    dev_stack,
    service_addresses,
    start_infra,
)
from clm_devstack.with_infra import Interrupted, cmd_with_infra


# --------------------------------------------------------------------------- up
def _describe(what: str, started: processes.Started) -> str:
    verb = "already running, reused" if started.reused else "started"
    return f"{what}: {verb} (pid {started.pid}, {started.seconds:.1f}s)"


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
    say(_describe(f"Kafka {stack.kafka.bootstrap}", k))
    say(_describe(f"PostgreSQL {stack.postgres.host}:{stack.postgres.port}", pg))
    env = child_env(stack, addresses)
    if not args.infra_only:
        services.run_setup_steps(env, root, stack.services_logs / "setup.log")
        for address in addresses:
            proc, reused = services.start_service_detached(
                address.name, env, stack.state_dir, address.port, address.host, cwd=root
            )
            verb = "already running, reused" if reused else "started"
            say(f"{address.name}: {verb} (pid {proc.pid}) at {proc.base_url}")
    print(_summary(stack, addresses, env, infra_only=args.infra_only))
    if args.demo and args.infra_only:
        say("demo traffic needs the services: run without --infra-only")
    elif args.demo:
        pid, reused = demo.start(stack.state_dir, env, cwd=root)
        verb = "already running, reused" if reused else "started"
        rel = demo.log_path(stack.state_dir).relative_to(stack.repo_root)
        say(
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
        say("stopped the demo traffic")
        stopped_any = True
    for name in reversed(list(services.SERVICES)):
        if services.stop_service_detached(stack.state_dir, name):
            say(f"stopped {name}")
            stopped_any = True
    if kafka.stop_kafka(stack.kafka):
        say(f"stopped Kafka ({stack.kafka.bootstrap})")
        stopped_any = True
    if postgres.stop_postgres(stack.postgres):
        say(f"stopped PostgreSQL ({stack.postgres.host}:{stack.postgres.port})")
        stopped_any = True
    if not stopped_any:
        say("nothing was running")
    return 0


def cmd_status(_args: argparse.Namespace) -> int:
    stack = dev_stack(find_repo_root())
    rows: list[tuple[str, int | None, str]] = []
    rows.append(("kafka", kafka.running_pid(stack.kafka), stack.kafka.bootstrap))
    rows.append(
        (
            "postgres",
            postgres.running_pid(stack.postgres),
            database_url(stack.postgres),
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
    except Interrupted as exc:
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
