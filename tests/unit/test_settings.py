"""Settings: grouped, read from their own variables, durations in seconds, renamed variables
refused with their new names, Kafka over TLS/SASL, and a reference page written from them."""

from __future__ import annotations

import importlib.util
import ssl
import sys
from pathlib import Path
from types import ModuleType

import pytest
from pydantic import ValidationError

from clm_infra.settings import CommonSettings, KafkaSettings, variables
from clm_ingest.settings import IngestSettings
from clm_metrics.settings import MetricsSettings
from clm_stage_engine.settings import StageEngineSettings

ROOT = Path(__file__).resolve().parents[2]


def reference_tool() -> ModuleType:
    path = ROOT / "tools/docs/settings_reference.py"
    spec = importlib.util.spec_from_file_location("settings_reference", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_groups_read_their_own_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLM_KAFKA_BOOTSTRAP", "broker-a:9092,broker-b:9092")
    monkeypatch.setenv("CLM_DATABASE_URL", "postgresql+asyncpg://u:p@db/clm")
    monkeypatch.setenv("CLM_DATABASE_POOL_SIZE", "3")
    monkeypatch.setenv("CLM_TOPIC_EVENTS_PARTITIONS", "12")
    monkeypatch.setenv("CLM_STAGE_ENGINE_PORT", "9102")
    monkeypatch.setenv("CLM_STAGE_ENGINE_BATCH_WAIT_S", "0.05")
    monkeypatch.setenv("CLM_METRICS_BATCH_WAIT_S", "1.5")
    monkeypatch.setenv("CLM_WEBHOOK_POLL_S", "2")
    engine = StageEngineSettings()
    assert engine.kafka.bootstrap == "broker-a:9092,broker-b:9092"
    assert (engine.database.url, engine.database.pool_size) == (
        "postgresql+asyncpg://u:p@db/clm",
        3,
    )
    assert engine.topics.events_partitions == 12
    assert (engine.server.port, engine.batch.wait_s, engine.webhooks.poll_s) == (9102, 0.05, 2.0)
    metrics = MetricsSettings()
    assert (metrics.server.port, metrics.batch.wait_s, metrics.batch.records) == (8003, 1.5, 1000)
    assert IngestSettings().server.port == 8001
    assert IngestSettings().limits.key_per_s == 0  # the ingest limits events per key instead
    assert CommonSettings().limits.key_per_s == 1000


def test_a_bad_value_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLM_STAGE_ENGINE_BATCH_RECORDS", "0")
    with pytest.raises(ValidationError, match="records"):
        StageEngineSettings()


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("CLM_STAGE_ENGINE_BATCH_WAIT_MS", "CLM_STAGE_ENGINE_BATCH_WAIT_S"),
        ("CLM_DB_POOL_SIZE", "CLM_DATABASE_POOL_SIZE"),
        ("CLM_METRICS_STALL_SECONDS", "CLM_METRICS_STALL_S"),
    ],
)
def test_a_variable_under_its_old_name_is_refused_with_the_new_one(
    monkeypatch: pytest.MonkeyPatch, old: str, new: str
) -> None:
    monkeypatch.setenv(old, "200")
    with pytest.raises(ValidationError, match=f"{old} is now {new}"):
        StageEngineSettings()


def test_every_duration_is_in_seconds() -> None:
    for model in (IngestSettings, StageEngineSettings, MetricsSettings):
        names = list(variables(model))
        assert [n for n in names if n.endswith(("_MS", "_SECONDS"))] == []


def test_plaintext_kafka_needs_no_security_options() -> None:
    options = KafkaSettings(bootstrap="k:9092").client_options()
    assert options == {"bootstrap_servers": "k:9092", "security_protocol": "PLAINTEXT"}


def test_sasl_ssl_kafka_gets_credentials_and_a_verifying_tls_context() -> None:
    kafka = KafkaSettings(
        bootstrap="k:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="clm",
        sasl_password="s3cret",
    )
    options = kafka.client_options()
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("clm", "s3cret")
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert "s3cret" not in repr(kafka)


def test_sasl_without_credentials_is_refused() -> None:
    with pytest.raises(ValidationError, match="CLM_KAFKA_SASL_USERNAME"):
        KafkaSettings(security_protocol="SASL_PLAINTEXT")


def test_a_client_certificate_needs_its_key(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="CLM_KAFKA_SSL_KEYFILE"):
        KafkaSettings(security_protocol="SSL", ssl_certfile=tmp_path / "client.pem")


def test_the_configuration_reference_is_written_from_the_models() -> None:
    tool = reference_tool()
    page = tool.PAGE.read_text(encoding="utf-8")
    assert tool.written(page) == page, "run: uv run python tools/docs/settings_reference.py --write"
    for model in (IngestSettings, StageEngineSettings, MetricsSettings):
        for variable in variables(model):
            assert f"`{variable}`" in page
