"""A real PostgreSQL server as a local process (initdb + pg_ctl), with our role and database.

Its settings and the text made from them are in ``postgres_config``; finding the binaries
and running them as the right OS user in ``postgres_host``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from clm_devstack import processes
from clm_devstack.errors import DevstackError
from clm_devstack.postgres_config import (
    PostgresConfig,
    render_settings,
    role_sql,
    sql_ident,
    sql_literal,
)
from clm_devstack.postgres_host import (
    OsUser,
    check_reachable,
    ensure_bindir,
    find_bindir,
    output_line,
    own_dir,
    run_tool,
    server_user,
)

START_TIMEOUT = 60
STOP_TIMEOUT = 30
BOOTSTRAP_SUPERUSER = "postgres"


# --------------------------------------------------------------------------- lifecycle
def running_pid(cfg: PostgresConfig) -> int | None:
    pid = processes.read_pidfile(cfg.data_dir / "postmaster.pid")
    return pid if processes.pid_is_ours(pid, cfg.markers()) else None


def is_running(cfg: PostgresConfig) -> bool:
    return running_pid(cfg) is not None and processes.port_open(cfg.host, cfg.port)


def _initdb(cfg: PostgresConfig, bindir: Path, user: OsUser | None) -> None:
    if (cfg.data_dir / "PG_VERSION").is_file():
        return
    shutil.rmtree(cfg.data_dir, ignore_errors=True)
    own_dir(cfg.data_dir, user, 0o700)
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
    result = run_tool(argv, user, cfg.state_dir)
    if result.returncode != 0:
        shutil.rmtree(cfg.data_dir, ignore_errors=True)
        raise DevstackError(
            f"initdb failed: {output_line(result)}", f"delete {cfg.state_dir} and retry"
        )
    conf = cfg.data_dir / "postgresql.conf"
    with open(conf, "a", encoding="utf-8") as handle:
        handle.write("\ninclude_if_exists = 'clm_devstack.conf'\n")


def _write_settings(cfg: PostgresConfig, user: OsUser | None) -> None:
    target = cfg.data_dir / "clm_devstack.conf"
    target.write_text(render_settings(cfg), encoding="utf-8")
    if user is not None:
        os.chown(target, user.uid, user.gid)


def _psql(
    cfg: PostgresConfig, bindir: Path, user: OsUser | None, sql: str, database: str = "postgres"
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
    result = run_tool(argv, user, cfg.state_dir, timeout=60)
    if result.returncode != 0:
        raise DevstackError(
            f"setting up the PostgreSQL role/database failed: {output_line(result)}",
            f"see {cfg.log_file}",
        )
    return result.stdout.strip()


def _ensure_role_and_database(cfg: PostgresConfig, bindir: Path, user: OsUser | None) -> None:
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


def _pg_ctl(
    cfg: PostgresConfig,
    bindir: Path,
    user: OsUser | None,
    action: str,
    options: list[str],
    wait: int,
) -> subprocess.CompletedProcess[str]:
    """``pg_ctl ACTION -D <data> OPTIONS``, waiting up to ``wait`` seconds for it to be done."""
    argv = [str(bindir / "pg_ctl"), action, "-D", str(cfg.data_dir.resolve()), *options]
    argv += ["-w", "-t", str(wait), "-s"]
    return run_tool(argv, user, cfg.state_dir, timeout=wait + 15)


def start_postgres(cfg: PostgresConfig) -> processes.Started:
    """Start our PostgreSQL (or reuse it if it already runs), with role and database in place."""
    began = time.monotonic()
    bindir = ensure_bindir()
    user = server_user()
    pid = running_pid(cfg)
    if pid is not None:
        if processes.wait_until(lambda: processes.port_open(cfg.host, cfg.port), 30):
            _ensure_role_and_database(cfg, bindir, user)
            return processes.Started(pid, reused=True, seconds=time.monotonic() - began)
        stop_postgres(cfg)

    processes.require_port_free(cfg.host, cfg.port, cfg.port_env)
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    if user is not None:
        cfg.state_dir.chmod(0o755)
        check_reachable(cfg.state_dir.resolve(), user)
    own_dir(cfg.logs_dir, user, 0o755)
    own_dir(cfg.socket_dir, user, 0o700)
    _initdb(cfg, bindir, user)
    _write_settings(cfg, user)

    result = _pg_ctl(cfg, bindir, user, "start", ["-l", str(cfg.log_file.resolve())], START_TIMEOUT)
    pid = running_pid(cfg)
    if result.returncode != 0 or pid is None:
        lines = processes.tail_lines(cfg.log_file, 30)
        reason = processes.relevant_line(lines) if lines else output_line(result)
        raise DevstackError(
            f"PostgreSQL did not start: {processes.shorten(reason)}", f"see {cfg.log_file}"
        )
    _ensure_role_and_database(cfg, bindir, user)
    return processes.Started(pid, reused=False, seconds=time.monotonic() - began)


def stop_postgres(cfg: PostgresConfig, *, immediate: bool = False) -> bool:
    """``pg_ctl stop -m fast`` (then immediate, then SIGKILL). True if ours was running.

    ``immediate``: skip the fast mode, like a crash: the server aborts open transactions and
    drops every connection at once, and recovers from its WAL on the next start."""
    pid = running_pid(cfg)
    if pid is None:
        return False
    bindir = find_bindir()
    user = server_user()
    if bindir is not None:
        for mode in ("immediate",) if immediate else ("fast", "immediate"):
            _pg_ctl(cfg, bindir, user, "stop", ["-m", mode], STOP_TIMEOUT)
            if processes.wait_until(lambda: not processes.pid_alive(pid), 5):
                return True
    processes.terminate(pid, cfg.markers(), timeout=10)
    return True


def wipe_data(cfg: PostgresConfig) -> None:
    """Remove the cluster's data directory; the server must not be running."""
    shutil.rmtree(cfg.data_dir, ignore_errors=True)
