"""Our PostgreSQL server's settings and the text made from them: the URL, the server
settings file, the SQL that creates our role. Pure: nothing here touches the machine."""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from clm_devstack.paths import ServerDirs

_SOCKET_PATH_LIMIT = 100  # sockaddr_un holds 107 bytes; leave room for "/.s.PGSQL.NNNNN"


@dataclass(frozen=True)
class PostgresConfig(ServerDirs):
    host: str = "127.0.0.1"
    port: int = 55432
    user: str = "clm"
    password: str = "clm"  # noqa: S105 - well-known local development credential
    database: str = "clm"
    # fsync, synchronous_commit, full_page_writes and wal_init_zero off: tests only
    fast_unsafe: bool = False
    superuser: bool = False  # make ``user`` a superuser (test instance: CREATE DATABASE etc.)
    port_env: str = "CLM_PG_PORT"

    @property
    def log_file(self) -> Path:
        return self.logs_dir / "postgres.log"

    @property
    def socket_dir(self) -> Path:
        return socket_dir_for(self.state_dir)

    def markers(self) -> list[str]:
        return [str(self.data_dir.resolve())]


def database_url(cfg: PostgresConfig, database: str | None = None) -> str:
    """The SQLAlchemy (asyncpg) URL of our database, e.g. postgresql+asyncpg://clm:clm@h:p/clm."""
    return (
        f"postgresql+asyncpg://{quote(cfg.user, safe='')}:{quote(cfg.password, safe='')}"
        f"@{cfg.host}:{cfg.port}/{quote(database or cfg.database, safe='')}"
    )


def socket_dir_for(state_dir: Path) -> Path:
    """``<state_dir>/sock``, or a short directory under /tmp when that path is too long."""
    preferred = state_dir.resolve() / "sock"
    if len(str(preferred)) <= _SOCKET_PATH_LIMIT - 20:
        return preferred
    digest = hashlib.sha256(str(preferred).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"clm-pg-{digest}"


def render_settings(cfg: PostgresConfig) -> str:
    """Server settings, written to <data>/clm_devstack.conf (included by postgresql.conf)."""
    lines = [
        "# Written by clm_devstack on every start; edit PostgresConfig instead.",
        f"listen_addresses = '{cfg.host}'",
        f"port = {cfg.port}",
        f"unix_socket_directories = '{cfg.socket_dir}'",
        "unix_socket_permissions = 0700",
        "max_connections = 200",
        "shared_buffers = 128MB",
        "password_encryption = 'scram-sha-256'",
        "timezone = 'UTC'",
        "log_timezone = 'UTC'",
        "logging_collector = off",
        "log_min_messages = warning",
        "log_min_error_statement = error",
        "log_connections = off",
        "log_disconnections = off",
        "# per-statement figures for `make bench` and anyone profiling (CREATE EXTENSION",
        "# pg_stat_statements in the database to read them)",
        "shared_preload_libraries = 'pg_stat_statements'",
        "pg_stat_statements.track_planning = on",
    ]
    if cfg.fast_unsafe:
        lines += [
            "# fast_unsafe: a crash can corrupt this cluster; for throw-away test instances only.",
            "fsync = off",
            "synchronous_commit = off",
            "full_page_writes = off",
            "# a fresh cluster writes zeros through each new 16 MB WAL segment before using it",
            "# (a long-running server recycles old ones instead): profiled, the WAL writer spent",
            "# 2.7% of a 2-process stage-engine bench's CPU on it",
            "wal_init_zero = off",
        ]
    return "\n".join(lines) + "\n"


def sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def sql_ident(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def role_sql(cfg: PostgresConfig) -> str:
    """Idempotent SQL creating/updating the application role."""
    role = sql_ident(cfg.user)
    flags = "SUPERUSER" if cfg.superuser else "NOSUPERUSER"
    return (
        "DO $devstack$ BEGIN "
        f"IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {sql_literal(cfg.user)}) "
        f"THEN CREATE ROLE {role}; END IF; END $devstack$;\n"
        f"ALTER ROLE {role} WITH LOGIN CREATEDB {flags} PASSWORD {sql_literal(cfg.password)};\n"
    )
