"""clm_devstack.postgres_config and postgres_host: the pure parts (settings, URLs, SQL quoting, directory access)."""

from __future__ import annotations

import stat
from pathlib import Path

from clm_devstack.postgres_config import (
    PostgresConfig,
    database_url,
    render_settings,
    role_sql,
    socket_dir_for,
    sql_ident,
    sql_literal,
)
from clm_devstack.postgres_host import can_traverse


def _settings(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def test_dev_settings_keep_durability(tmp_path: Path) -> None:
    settings = _settings(render_settings(PostgresConfig(state_dir=tmp_path)))
    assert settings["listen_addresses"] == "'127.0.0.1'"
    assert settings["port"] == "55432"
    assert settings["max_connections"] == "200"
    assert settings["unix_socket_directories"] == f"'{tmp_path.resolve() / 'sock'}'"
    assert "fsync" not in settings
    assert "synchronous_commit" not in settings
    assert "full_page_writes" not in settings


def test_fast_unsafe_settings_for_tests(tmp_path: Path) -> None:
    cfg = PostgresConfig(state_dir=tmp_path, port=55433, fast_unsafe=True)
    settings = _settings(render_settings(cfg))
    assert settings["port"] == "55433"
    assert settings["fsync"] == "off"
    assert settings["synchronous_commit"] == "off"
    assert settings["full_page_writes"] == "off"
    assert settings["wal_init_zero"] == "off"


def test_database_url(tmp_path: Path) -> None:
    cfg = PostgresConfig(state_dir=tmp_path)
    assert database_url(cfg) == "postgresql+asyncpg://clm:clm@127.0.0.1:55432/clm"
    assert database_url(cfg, "postgres").endswith("@127.0.0.1:55432/postgres")


def test_database_url_quotes_credentials(tmp_path: Path) -> None:
    cfg = PostgresConfig(state_dir=tmp_path, user="a@b", password="p:w/d")
    assert database_url(cfg).startswith("postgresql+asyncpg://a%40b:p%3Aw%2Fd@")


def test_sql_quoting() -> None:
    assert sql_literal("it's") == "'it''s'"
    assert sql_ident('we"ird') == '"we""ird"'


def test_role_sql_is_idempotent_and_sets_superuser_only_when_asked(tmp_path: Path) -> None:
    dev = role_sql(PostgresConfig(state_dir=tmp_path))
    assert "IF NOT EXISTS" in dev
    assert "NOSUPERUSER" in dev
    assert "PASSWORD 'clm'" in dev
    test = role_sql(PostgresConfig(state_dir=tmp_path, superuser=True))
    assert " SUPERUSER " in test


def test_socket_dir_falls_back_to_a_short_path(tmp_path: Path) -> None:
    assert socket_dir_for(tmp_path) == tmp_path.resolve() / "sock"
    deep = tmp_path.joinpath(*["a-rather-long-directory-name"] * 5)
    short = socket_dir_for(deep)
    assert len(str(short)) < 60
    assert short == socket_dir_for(deep)  # stable: same state dir, same socket dir


def test_can_traverse() -> None:
    mode = stat.S_IFDIR | 0o750
    assert can_traverse(mode, uid=101, gid=5, user_uid=101, user_groups=[104])
    assert can_traverse(mode, uid=0, gid=104, user_uid=101, user_groups=[104])
    assert not can_traverse(mode, uid=0, gid=0, user_uid=101, user_groups=[104])
    assert can_traverse(stat.S_IFDIR | 0o711, uid=0, gid=0, user_uid=101, user_groups=[104])
