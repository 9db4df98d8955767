"""clm_devstack.cli, stacks, with_infra and errors: one-line errors, settings from the
environment, with-infra."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from clm_devstack import cli, services, stacks, with_infra
from clm_devstack.errors import DevstackError

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_error_is_one_line_with_cause_and_fix() -> None:
    err = DevstackError("port 9092 is\ntaken", "stop it  or set CLM_KAFKA_PORT")
    assert err.one_line() == ("devstack: error: port 9092 is taken — stop it or set CLM_KAFKA_PORT")
    assert "\n" not in str(err)


def test_bad_port_setting_exits_2_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CLM_KAFKA_PORT", "ninety")
    monkeypatch.chdir(REPO_ROOT)
    assert cli.main(["status"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("devstack: error: CLM_KAFKA_PORT='ninety' is not a TCP port — ")


def test_with_infra_without_command_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["with-infra", "--"]) == 2
    assert "with-infra needs a command" in capsys.readouterr().err


def test_with_infra_uses_reachable_external_infra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as fake_kafka, socket.socket() as fake_pg:
        for sock in (fake_kafka, fake_pg):
            sock.bind(("127.0.0.1", 0))
            sock.listen()
        monkeypatch.setenv("CLM_KAFKA_BOOTSTRAP", f"127.0.0.1:{fake_kafka.getsockname()[1]}")
        monkeypatch.setenv(
            "CLM_DATABASE_URL",
            f"postgresql+asyncpg://u:p@127.0.0.1:{fake_pg.getsockname()[1]}/db",
        )
        assert cli.main(["with-infra", "--", "sh", "-c", "exit 7"]) == 7
    assert "from the environment" in capsys.readouterr().out


def test_external_infra_needs_both_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not with_infra.external_infra_reachable({})
    assert not with_infra.external_infra_reachable({"CLM_KAFKA_BOOTSTRAP": "127.0.0.1:1"})
    assert not with_infra.external_infra_reachable(
        {"CLM_KAFKA_BOOTSTRAP": "127.0.0.1:1", "CLM_DATABASE_URL": "postgresql://h:1/x"}
    )


def test_env_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLM_PG_PORT", raising=False)
    assert stacks.env_port("CLM_PG_PORT", 55432) == 55432
    monkeypatch.setenv("CLM_PG_PORT", "6543")
    assert stacks.env_port("CLM_PG_PORT", 55432) == 6543
    monkeypatch.setenv("CLM_PG_PORT", "70000")
    with pytest.raises(DevstackError, match="CLM_PG_PORT"):
        stacks.env_port("CLM_PG_PORT", 55432)


def test_stacks_use_separate_state_and_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "CLM_KAFKA_PORT",
        "CLM_KAFKA_CONTROLLER_PORT",
        "CLM_PG_PORT",
        "CLM_KAFKA_HEAP",
        # set on a shared machine to keep test stacks apart; the defaults are under test here
        "CLM_TEST_KAFKA_PORT",
        "CLM_TEST_KAFKA_CONTROLLER_PORT",
        "CLM_TEST_PG_PORT",
    ):
        monkeypatch.delenv(name, raising=False)
    dev = stacks.dev_stack(REPO_ROOT)
    test = stacks.testing_stack(REPO_ROOT)
    assert dev.kafka.state_dir == REPO_ROOT / ".run" / "dev" / "kafka"
    assert test.kafka.state_dir == REPO_ROOT / ".run" / "test" / "kafka"
    assert (dev.kafka.port, dev.kafka.controller_port, dev.postgres.port) == (9092, 9093, 55432)
    assert (test.kafka.port, test.kafka.controller_port, test.postgres.port) == (
        19092,
        19093,
        55433,
    )
    assert not dev.postgres.fast_unsafe
    assert not dev.postgres.superuser
    assert test.postgres.fast_unsafe
    assert test.postgres.superuser


def test_test_stacks_on_other_ports_keep_their_own_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLM_TEST_KAFKA_PORT", "19492")
    monkeypatch.setenv("CLM_TEST_KAFKA_CONTROLLER_PORT", "19493")
    monkeypatch.setenv("CLM_TEST_PG_PORT", "55733")
    other = stacks.testing_stack(REPO_ROOT)
    assert other.state_dir == REPO_ROOT / ".run" / "test-19492-19493-55733"
    assert (other.kafka.port, other.postgres.port) == (19492, 55733)
    assert other.postgres.state_dir == other.state_dir / "postgres"


def test_child_env_for_up(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CLM_DEV_WRITE_KEY", "CLM_DEV_READ_TOKEN", "CLM_DEV_ADMIN_KEY", "CLM_INGEST_PORT"):
        monkeypatch.delenv(name, raising=False)
    env = stacks.child_env(stacks.dev_stack(REPO_ROOT), stacks.service_addresses())
    assert env["CLM_ENV"] == "dev"
    assert env["CLM_KAFKA_BOOTSTRAP"] == "127.0.0.1:9092"
    assert env["CLM_DATABASE_URL"] == "postgresql+asyncpg://clm:clm@127.0.0.1:55432/clm"
    assert env["CLM_DEV_WRITE_KEY"] == "dev-write-key"
    assert env["CLM_DEV_READ_TOKEN"] == "dev-read-token"
    assert env["CLM_DEV_ADMIN_KEY"] == "dev-admin-key"
    assert env["CLM_WEBHOOK_ALLOW_INSECURE"] == "true"
    assert env["CLM_INGEST_PORT"] == "8001"
    assert env["CLM_STAGE_ENGINE_PORT"] == "8002"
    assert env["CLM_METRICS_PORT"] == "8003"


def test_service_specs() -> None:
    assert [s.module for s in services.SERVICES.values()] == [
        "clm_ingest",
        "clm_stage_engine",
        "clm_metrics",
    ]
    spec = services.spec_for("clm_stage_engine")
    assert spec.name == "stage-engine"
    assert (spec.host_env, spec.port_env) == ("CLM_STAGE_ENGINE_HOST", "CLM_STAGE_ENGINE_PORT")
    env = services.service_env(spec, {"CLM_X": "1"}, "127.0.0.1", 9999)
    assert env["CLM_STAGE_ENGINE_PORT"] == "9999"
    assert env["CLM_X"] == "1"
    with pytest.raises(DevstackError, match="unknown service"):
        services.spec_for("billing")


def test_help_mentions_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for command in ("up", "down", "status", "with-infra"):
        assert command in out
