"""The two local stacks (``.run/dev`` for ``make run``, ``.run/test`` for ``make test``):
their ports and state directories from the environment, starting and stopping their Kafka
and PostgreSQL, and the settings the services get."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from clm_devstack import kafka, postgres, processes, services
from clm_devstack.errors import DevstackError
from clm_devstack.kafka import KafkaConfig
from clm_devstack.paths import dev_state_dir, testing_state_dir
from clm_devstack.postgres_config import PostgresConfig, database_url

DEFAULT_WRITE_KEY = "dev-write-key"
DEFAULT_READ_TOKEN = "dev-read-token"  # noqa: S105 - well-known local development token
DEFAULT_ADMIN_KEY = "dev-admin-key"


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


def _kafka_heap() -> str:
    return os.environ.get("CLM_KAFKA_HEAP", "").strip() or "384m"


def dev_stack(repo_root: Path) -> Stack:
    state = dev_state_dir(repo_root)
    return Stack(
        repo_root,
        state,
        KafkaConfig(
            state_dir=state / "kafka",
            port=env_port("CLM_KAFKA_PORT", 9092),
            controller_port=env_port("CLM_KAFKA_CONTROLLER_PORT", 9093),
            heap=_kafka_heap(),
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
            heap=_kafka_heap(),
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


def _prepare(state_dir: Path) -> None:
    """Create the state dir; keep it enterable for the postgres OS user when we are root."""
    state_dir.mkdir(parents=True, exist_ok=True)
    for directory in (state_dir.parent, state_dir):
        with contextlib.suppress(OSError):
            directory.chmod(0o755)


def start_infra(stack: Stack) -> tuple[processes.Started, processes.Started]:
    """Kafka and Postgres, started side by side (Kafka's JVM is the slow one)."""
    _prepare(stack.state_dir)
    kafka.ensure_jars(stack.repo_root, stack.kafka.version)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pg_future: Future[processes.Started] = pool.submit(postgres.start_postgres, stack.postgres)
        try:
            k = kafka.start_kafka(stack.kafka)
        finally:
            pg_exc = pg_future.exception()
        if pg_exc is not None:
            raise pg_exc
        return k, pg_future.result()


def stop_infra(stack: Stack) -> list[str]:
    stopped = []
    if kafka.stop_kafka(stack.kafka, sweep=True):
        stopped.append("Kafka")
    if postgres.stop_postgres(stack.postgres):
        stopped.append("PostgreSQL")
    return stopped


def child_env(stack: Stack, addresses: Sequence[ServiceAddress]) -> dict[str, str]:
    env = {
        "CLM_ENV": "dev",
        "CLM_KAFKA_BOOTSTRAP": stack.kafka.bootstrap,
        "CLM_DATABASE_URL": database_url(stack.postgres),
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
