"""A real PostgreSQL server as a local process (initdb + pg_ctl), with our role and database.

PostgreSQL refuses to run as root: when we are root, initdb/pg_ctl/psql run as the
``postgres`` OS user and the data, log and socket directories are owned by it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from clm_devstack import processes
from clm_devstack.errors import DevstackError

START_TIMEOUT = 60
STOP_TIMEOUT = 30
OS_USER = "postgres"
BOOTSTRAP_SUPERUSER = "postgres"
_SOCKET_PATH_LIMIT = 100  # sockaddr_un holds 107 bytes; leave room for "/.s.PGSQL.NNNNN"


@dataclass(frozen=True)
class PostgresConfig:
    state_dir: Path
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
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def log_file(self) -> Path:
        return self.logs_dir / "postgres.log"

    @property
    def socket_dir(self) -> Path:
        return socket_dir_for(self.state_dir)

    def markers(self) -> list[str]:
        return [str(self.data_dir.resolve())]


@dataclass(frozen=True)
class PostgresStarted:
    pid: int
    reused: bool
    seconds: float


@dataclass(frozen=True)
class _OsUser:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]


# --------------------------------------------------------------------------- pure helpers
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


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", path.parent.name)) or (0,)


# --------------------------------------------------------------------------- binaries
def find_bindir() -> Path | None:
    """Where initdb/pg_ctl/postgres live: CLM_PG_BINDIR, pg_config --bindir, or the newest
    /usr/lib/postgresql/*/bin."""
    override = os.environ.get("CLM_PG_BINDIR")
    if override:
        return Path(override) if (Path(override) / "initdb").is_file() else None
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=False
            ).stdout.strip()
            if out and (Path(out) / "initdb").is_file() and (Path(out) / "pg_ctl").is_file():
                return Path(out)
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    for bindir in found:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def ensure_bindir() -> Path:
    bindir = find_bindir()
    if bindir is not None:
        return bindir
    if os.environ.get("CLM_PG_BINDIR"):
        raise DevstackError(
            f"CLM_PG_BINDIR={os.environ['CLM_PG_BINDIR']} has no initdb",
            "point it at PostgreSQL's bin directory or unset it",
        )
    apt_get = shutil.which("apt-get")
    if os.geteuid() != 0 or apt_get is None:
        raise DevstackError(
            "PostgreSQL server binaries (initdb, pg_ctl) not found",
            "install PostgreSQL 14+ (Debian/Ubuntu: sudo apt-get install postgresql) "
            "or set CLM_PG_BINDIR",
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        [apt_get, "update"],
        [apt_get, "install", "-y", "--no-install-recommends", "postgresql"],
    ):
        print(f"devstack: PostgreSQL not found; running: {' '.join(argv)}", flush=True)
        result = subprocess.run(argv, env=env, check=False)
        if result.returncode != 0:
            raise DevstackError(
                f"'{' '.join(argv)}' failed with exit code {result.returncode}",
                "install PostgreSQL yourself (apt-get install postgresql) or set CLM_PG_BINDIR",
            )
    bindir = find_bindir()
    if bindir is None:
        raise DevstackError(
            "PostgreSQL was installed but initdb is still not found",
            "set CLM_PG_BINDIR to the directory holding initdb and pg_ctl",
        )
    return bindir


# --------------------------------------------------------------------------- OS user
def _server_user() -> _OsUser | None:
    """The OS user to run PostgreSQL as: None means "ourselves" (we are not root)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(OS_USER)
    except KeyError as exc:
        raise DevstackError(
            f"running as root, but there is no '{OS_USER}' OS user to run PostgreSQL as "
            "(it refuses to run as root)",
            f"create it (useradd --system --home /var/lib/postgresql {OS_USER}) "
            "or run as a normal user",
        ) from exc
    groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    return _OsUser(entry.pw_name, entry.pw_uid, entry.pw_gid, groups)


def can_traverse(mode: int, uid: int, gid: int, user_uid: int, user_groups: Sequence[int]) -> bool:
    """Whether a user may enter a directory with the given stat mode/owner."""
    if uid == user_uid:
        return bool(mode & stat.S_IXUSR)
    if gid in user_groups:
        return bool(mode & stat.S_IXGRP)
    return bool(mode & stat.S_IXOTH)


def _check_reachable(path: Path, user: _OsUser) -> None:
    for directory in [path, *path.parents]:
        try:
            st = directory.stat()
        except OSError:
            continue
        if not can_traverse(st.st_mode, st.st_uid, st.st_gid, user.uid, user.groups):
            raise DevstackError(
                f"the '{user.name}' OS user (PostgreSQL must not run as root) cannot enter "
                f"{directory}",
                f"chmod o+x {directory}, or keep the checkout in a directory others can enter",
            )


def _own(path: Path, user: _OsUser | None, mode: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if user is not None:
        os.chown(path, user.uid, user.gid)
    path.chmod(mode)


def _pg_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    env["LANG"] = "C"
    return env


def _run(
    argv: Sequence[str], user: _OsUser | None, cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=str(cwd),
            env=_pg_env(),
            user=user.uid if user else None,
            group=user.gid if user else None,
            extra_groups=list(user.groups) if user else None,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise DevstackError(
            f"'{Path(argv[0]).name}' did not finish within {timeout:.0f}s",
            "see the PostgreSQL log under .run/*/postgres/logs",
        ) from exc


def _output_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = (result.stdout + "\n" + result.stderr).splitlines()
    return processes.shorten(processes.relevant_line([ln for ln in lines if ln.strip()]))


# --------------------------------------------------------------------------- lifecycle
def running_pid(cfg: PostgresConfig) -> int | None:
    pid = processes.read_pidfile(cfg.data_dir / "postmaster.pid")
    return pid if processes.pid_is_ours(pid, cfg.markers()) else None


def is_running(cfg: PostgresConfig) -> bool:
    return running_pid(cfg) is not None and processes.port_open(cfg.host, cfg.port)


def _initdb(cfg: PostgresConfig, bindir: Path, user: _OsUser | None) -> None:
    if (cfg.data_dir / "PG_VERSION").is_file():
        return
    shutil.rmtree(cfg.data_dir, ignore_errors=True)
    _own(cfg.data_dir, user, 0o700)
    argv = [
        str(bindir / "initdb"),
        "-D",
        str(cfg.data_dir.resolve()),
        f"--username={BOOTSTRAP_SUPERUSER}",
        "--auth-local=trust",  # the socket directory is private (0700) to the server's user
        "--auth-host=scram-sha-256",
        "--encoding=UTF8",
        "--no-locale",
    ]
    if cfg.fast_unsafe:
        argv.append("--no-sync")
    result = _run(argv, user, cfg.state_dir)
    if result.returncode != 0:
        shutil.rmtree(cfg.data_dir, ignore_errors=True)
        raise DevstackError(
            f"initdb failed: {_output_line(result)}", f"delete {cfg.state_dir} and retry"
        )
    conf = cfg.data_dir / "postgresql.conf"
    with open(conf, "a", encoding="utf-8") as handle:
        handle.write("\ninclude_if_exists = 'clm_devstack.conf'\n")


def _write_settings(cfg: PostgresConfig, user: _OsUser | None) -> None:
    target = cfg.data_dir / "clm_devstack.conf"
    target.write_text(render_settings(cfg), encoding="utf-8")
    if user is not None:
        os.chown(target, user.uid, user.gid)


def _psql(
    cfg: PostgresConfig, bindir: Path, user: _OsUser | None, sql: str, database: str = "postgres"
) -> str:
    argv = [
        str(bindir / "psql"),
        "-X",
        "-q",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        str(cfg.socket_dir),
        "-p",
        str(cfg.port),
        "-U",
        BOOTSTRAP_SUPERUSER,
        "-d",
        database,
        "-c",
        sql,
    ]
    result = _run(argv, user, cfg.state_dir, timeout=60)
    if result.returncode != 0:
        raise DevstackError(
            f"setting up the PostgreSQL role/database failed: {_output_line(result)}",
            f"see {cfg.log_file}",
        )
    return result.stdout.strip()


def _ensure_role_and_database(cfg: PostgresConfig, bindir: Path, user: _OsUser | None) -> None:
    _psql(cfg, bindir, user, role_sql(cfg))
    exists = _psql(
        cfg,
        bindir,
        user,
        f"SELECT 1 FROM pg_catalog.pg_database WHERE datname = {sql_literal(cfg.database)}",
    )
    if exists != "1":
        _psql(
            cfg,
            bindir,
            user,
            f"CREATE DATABASE {sql_ident(cfg.database)} OWNER {sql_ident(cfg.user)}",
        )


def start_postgres(cfg: PostgresConfig) -> PostgresStarted:
    """Start our PostgreSQL (or reuse it if it already runs), with role and database in place."""
    began = time.monotonic()
    bindir = ensure_bindir()
    user = _server_user()
    pid = running_pid(cfg)
    if pid is not None:
        if processes.wait_until(lambda: processes.port_open(cfg.host, cfg.port), 30):
            _ensure_role_and_database(cfg, bindir, user)
            return PostgresStarted(pid, reused=True, seconds=time.monotonic() - began)
        stop_postgres(cfg)

    processes.require_port_free(cfg.host, cfg.port, cfg.port_env)
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    if user is not None:
        cfg.state_dir.chmod(0o755)
        _check_reachable(cfg.state_dir.resolve(), user)
    _own(cfg.logs_dir, user, 0o755)
    _own(cfg.socket_dir, user, 0o700)
    _initdb(cfg, bindir, user)
    _write_settings(cfg, user)

    argv = [
        str(bindir / "pg_ctl"),
        "start",
        "-D",
        str(cfg.data_dir.resolve()),
        "-l",
        str(cfg.log_file.resolve()),
        "-w",
        "-t",
        str(START_TIMEOUT),
        "-s",
    ]
    result = _run(argv, user, cfg.state_dir, timeout=START_TIMEOUT + 15)
    pid = running_pid(cfg)
    if result.returncode != 0 or pid is None:
        lines = processes.tail_lines(cfg.log_file, 30)
        reason = processes.relevant_line(lines) if lines else _output_line(result)
        raise DevstackError(
            f"PostgreSQL did not start: {processes.shorten(reason)}", f"see {cfg.log_file}"
        )
    _ensure_role_and_database(cfg, bindir, user)
    return PostgresStarted(pid, reused=False, seconds=time.monotonic() - began)


def stop_postgres(cfg: PostgresConfig, *, immediate: bool = False) -> bool:
    """``pg_ctl stop -m fast`` (then immediate, then SIGKILL). True if ours was running.

    ``immediate``: skip the fast mode, like a crash: the server aborts open transactions and
    drops every connection at once, and recovers from its WAL on the next start."""
    pid = running_pid(cfg)
    if pid is None:
        return False
    bindir = find_bindir()
    user = _server_user()
    if bindir is not None:
        for mode in ("immediate",) if immediate else ("fast", "immediate"):
            argv = [
                str(bindir / "pg_ctl"),
                "stop",
                "-D",
                str(cfg.data_dir.resolve()),
                "-m",
                mode,
                "-w",
                "-t",
                str(STOP_TIMEOUT),
                "-s",
            ]
            _run(argv, user, cfg.state_dir, timeout=STOP_TIMEOUT + 15)
            if processes.wait_until(lambda: not processes.pid_alive(pid), 5):
                return True
    processes.terminate(pid, cfg.markers(), timeout=10)
    return True


def wipe_data(cfg: PostgresConfig) -> None:
    """Remove the cluster's data directory; the server must not be running."""
    shutil.rmtree(cfg.data_dir, ignore_errors=True)
