"""The machine's PostgreSQL: its binaries (installed when missing and we may), the OS user
the server runs as, and running its tools.

PostgreSQL refuses to run as root: when we are root, initdb/pg_ctl/psql run as the
``postgres`` OS user and the data, log and socket directories are owned by it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import stat
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from clm_devstack import processes
from clm_devstack.errors import DevstackError

OS_USER = "postgres"


@dataclass(frozen=True)
class OsUser:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]


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
def server_user() -> OsUser | None:
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
    return OsUser(entry.pw_name, entry.pw_uid, entry.pw_gid, groups)


def can_traverse(mode: int, uid: int, gid: int, user_uid: int, user_groups: Sequence[int]) -> bool:
    """Whether a user may enter a directory with the given stat mode/owner."""
    if uid == user_uid:
        return bool(mode & stat.S_IXUSR)
    if gid in user_groups:
        return bool(mode & stat.S_IXGRP)
    return bool(mode & stat.S_IXOTH)


def check_reachable(path: Path, user: OsUser) -> None:
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


def own_dir(path: Path, user: OsUser | None, mode: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if user is not None:
        os.chown(path, user.uid, user.gid)
    path.chmod(mode)


def _pg_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    env["LANG"] = "C"
    return env


def run_tool(
    argv: Sequence[str], user: OsUser | None, cwd: Path, timeout: float = 120
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


def output_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = (result.stdout + "\n" + result.stderr).splitlines()
    return processes.shorten(processes.relevant_line([ln for ln in lines if ln.strip()]))
