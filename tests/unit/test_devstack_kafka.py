"""clm_devstack.kafka: the pure parts (config rendering, ids, command line, Java version)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from clm_devstack.errors import DevstackError
from clm_devstack.kafka import (
    QUICK_START_JIT,
    KafkaConfig,
    jars_dir,
    java_argv,
    parse_java_major,
    random_cluster_id,
    render_server_properties,
    validate_heap,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = (REPO_ROOT / "deploy" / "kafka" / "server.properties.template").read_text("utf-8")


def _props(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def test_rendered_properties_describe_a_single_combined_kraft_node(tmp_path: Path) -> None:
    cfg = KafkaConfig(state_dir=tmp_path, port=19092, controller_port=19093)
    props = _props(render_server_properties(cfg, TEMPLATE))
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["log.dirs"] == str((tmp_path / "data").resolve())
    assert props["auto.create.topics.enable"] == "false"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.replication.factor"] == "1"
    assert props["min.insync.replicas"] == "1"
    assert "$" not in render_server_properties(cfg, TEMPLATE)


def test_bad_template_placeholder_is_a_devstack_error(tmp_path: Path) -> None:
    with pytest.raises(DevstackError, match="placeholder"):
        render_server_properties(KafkaConfig(state_dir=tmp_path), "x=${nope}\n")


def test_random_cluster_id_is_16_bytes_url_safe_base64() -> None:
    ids = {random_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cluster_id in ids:
        assert len(cluster_id) == 22
        assert not cluster_id.startswith("-")
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_392"', 8),
        ("garbage", None),
    ],
)
def test_parse_java_major(output: str, major: int | None) -> None:
    assert parse_java_major(output) == major


def test_java_argv_runs_the_broker_with_a_bounded_heap(tmp_path: Path) -> None:
    cfg = KafkaConfig(state_dir=tmp_path, heap="256m")
    argv = java_argv(cfg, "/usr/bin/java", Path("/jars"), Path("/cfg/log4j2.properties"))
    assert argv[0] == "/usr/bin/java"
    assert "-Xmx256m" in argv
    assert "-XX:+UseG1GC" in argv
    assert argv[-2:] == ["kafka.Kafka", str((tmp_path / "server.properties").resolve())]
    assert argv[argv.index("-cp") + 1] == "/jars/*"
    assert "-Dlog4j2.configurationFile=/cfg/log4j2.properties" in argv
    # The ownership check finds the state dir in the command line.
    assert all(any(marker in arg for arg in argv) for marker in cfg.markers())
    assert QUICK_START_JIT not in argv  # a broker that serves for long compiles fully


def test_a_short_lived_broker_starts_with_the_quick_compiler_only(tmp_path: Path) -> None:
    cfg = KafkaConfig(state_dir=tmp_path, short_lived=True)
    argv = java_argv(cfg, "/usr/bin/java", Path("/jars"), Path("/cfg/log4j2.properties"))
    assert QUICK_START_JIT in argv
    assert argv.index(QUICK_START_JIT) < argv.index("kafka.Kafka")


@pytest.mark.parametrize("heap", ["384m", "1g", "512M"])
def test_valid_heaps(heap: str) -> None:
    assert validate_heap(heap) == heap


@pytest.mark.parametrize("heap", ["", "384", "lots", "-1m", "0m"])
def test_invalid_heap_names_the_variable(heap: str) -> None:
    with pytest.raises(DevstackError, match="CLM_KAFKA_HEAP"):
        validate_heap(heap)


def test_jars_live_in_the_repo_cache() -> None:
    assert jars_dir(Path("/repo"), "4.1.1") == Path("/repo/.cache/kafka-4.1.1/libs")


def test_config_defaults(tmp_path: Path) -> None:
    cfg = KafkaConfig(state_dir=tmp_path)
    assert cfg.bootstrap == "127.0.0.1:9092"
    assert (cfg.port, cfg.controller_port, cfg.heap, cfg.version) == (9092, 9093, "384m", "4.1.1")
    assert cfg.server_log == tmp_path / "logs" / "server.log"
