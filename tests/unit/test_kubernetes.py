"""deploy/kubernetes, rendered with kustomize and checked offline (tests/kubernetes_checks.py).

kustomize: `kubectl kustomize` where kubectl is installed, else the kustomize v5.8.1 that
`make test` builds from the Go module proxy into `.tools/` (about a minute on a cold
2-core machine, then nothing: `make kustomize-tool`). Without either the tests skip,
except under CI, where `make test` should have provided one, so they fail.

Every check is also run once on a copy of the render broken on purpose, to prove it can fail.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests import kubernetes_checks as k8s

OVERLAYS = ("dev", "prod")
# the oldest Kubernetes we claim, and the newest schema kubernetes-validate has
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")

_renders: dict[Path, list[k8s.Doc]] = {}


def rendered(directory: Path) -> list[k8s.Doc]:
    if directory not in _renders:
        command = k8s.kustomize_command()
        if command is None:
            reason = "neither kubectl nor .tools/bin/kustomize: run `make kustomize-tool`"
            if os.environ.get("CI"):
                pytest.fail(f"{reason}; `make test` should have done it")
            pytest.skip(reason)
        _renders[directory] = k8s.render(directory, command)
    return copy.deepcopy(_renders[directory])


def overlay(name: str) -> list[k8s.Doc]:
    return rendered(k8s.KUBERNETES_DIR / "overlays" / name)


def one(docs: list[k8s.Doc], kind: str, name: str) -> k8s.Doc:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


# ------------------------------------------------------------ the render --


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", OVERLAYS)
def test_core_objects_match_the_kubernetes_schemas(name: str, version: str) -> None:
    assert k8s.check_schemas(overlay(name), version) == []


@pytest.mark.parametrize("check", sorted(k8s.CHECKS))
@pytest.mark.parametrize("name", OVERLAYS)
def test_overlay_passes(name: str, check: str) -> None:
    assert k8s.CHECKS[check](overlay(name)) == []


@pytest.mark.parametrize("name", OVERLAYS)
def test_strimzi_kafka_and_topics_are_ours(name: str) -> None:
    assert k8s.check_strimzi(overlay(name)) == []


def test_the_base_alone_is_the_core_for_any_kafka() -> None:
    docs = rendered(k8s.KUBERNETES_DIR / "base")
    kinds = {d["kind"] for d in docs}
    assert kinds == {
        "Namespace",
        "ConfigMap",
        "Service",
        "Deployment",
        "Job",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    }
    assert k8s.check_schemas(docs, KUBERNETES_VERSIONS[-1]) == []
    assert all(
        d["metadata"].get("namespace") == "clm-stream" for d in docs if d["kind"] != "Namespace"
    )


def test_prod_brings_no_secret_and_dev_marks_its_example_values() -> None:
    assert not [d for d in overlay("prod") if d["kind"] == "Secret"]
    text = (k8s.KUBERNETES_DIR / "overlays" / "dev" / "kustomization.yaml").read_text("utf-8")
    assert "# EXAMPLE VALUES, for a throwaway dev cluster only" in text
    (secret,) = [d for d in overlay("dev") if d["kind"] == "Secret"]
    assert set(secret["data"]) == {
        "CLM_DATABASE_URL",
        "CLM_SECRETS_KEY",
        "CLM_PSEUDONYM_KEY",
        "CLM_PRIVACY_MASTER_KEYS",
    }


def test_prod_images_come_from_a_registry_with_a_tag() -> None:
    for doc, pod in k8s.workloads(overlay("prod")):
        for container in pod["containers"]:
            repository, _, tag = container["image"].rpartition(":")
            assert "." in repository.split("/")[0], f"{k8s.name_of(doc)}: no registry host"
            assert tag not in ("", "latest"), f"{k8s.name_of(doc)}: no release tag"


def test_the_stage_engine_mounts_the_shipped_rules() -> None:
    docs = overlay("prod")
    deployment = one(docs, "Deployment", "clm-stage-engine")
    pod = deployment["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "configMap" in v]
    rules = k8s.config_map_data(docs, volume["configMap"]["name"])
    shipped = (k8s.ROOT / "deploy" / "config" / "lifecycle.yaml").read_text("utf-8")
    assert rules == {"lifecycle.yaml": shipped}
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"]]
    env = k8s.container_env(docs, pod["containers"][0])
    assert env["CLM_STAGE_ENGINE_RULES_PATH"] == f"{mount['mountPath']}/lifecycle.yaml"


def test_the_migrate_job_runs_clm_migrate_from_a_service_image() -> None:
    docs = overlay("prod")
    job = one(docs, "Job", "clm-migrate")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    # the schema only: the KafkaTopic resources own the (replicated) topics
    assert container["command"] == ["clm", "migrate", "--skip-topics"]
    deployment = one(docs, "Deployment", "clm-stage-engine")
    assert container["image"] == deployment["spec"]["template"]["spec"]["containers"][0]["image"]


# ------------------------------------------------- every check can fail --


def _containers(docs: list[k8s.Doc], name: str) -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = one(docs, "Deployment", name)["spec"]["template"]["spec"][
        "containers"
    ]
    return containers


def _drop_limits(docs: list[k8s.Doc]) -> None:
    del _containers(docs, "clm-metrics")[0]["resources"]["limits"]


def _big_memory(docs: list[k8s.Doc]) -> None:
    _containers(docs, "clm-ingest")[0]["resources"]["limits"]["memory"] = "1Gi"


def _root(docs: list[k8s.Doc]) -> None:
    one(docs, "Deployment", "clm-ingest")["spec"]["template"]["spec"]["securityContext"][
        "runAsNonRoot"
    ] = False


def _writable(docs: list[k8s.Doc]) -> None:
    _containers(docs, "clm-stage-engine")[0]["securityContext"]["readOnlyRootFilesystem"] = False


def _readiness_on_healthz(docs: list[k8s.Doc]) -> None:
    _containers(docs, "clm-stage-engine")[0]["readinessProbe"]["httpGet"]["path"] = "/healthz"


def _liveness_wrong_port(docs: list[k8s.Doc]) -> None:
    _containers(docs, "clm-metrics")[0]["livenessProbe"]["httpGet"]["port"] = 8001


def _typo_env(docs: list[k8s.Doc]) -> None:
    _containers(docs, "clm-ingest")[0]["env"].append({"name": "CLM_INGEST_PROT", "value": "8001"})


def _other_service_env(docs: list[k8s.Doc]) -> None:
    _containers(docs, "clm-metrics")[0]["env"].append(
        {"name": "CLM_STAGE_ENGINE_GROUP", "value": "x"}
    )


def _wrong_port_env(docs: list[k8s.Doc]) -> None:
    env = _containers(docs, "clm-stage-engine")[0]["env"]
    next(e for e in env if e["name"] == "CLM_STAGE_ENGINE_PORT")["value"] = "8080"


def _missing_secret_key(docs: list[k8s.Doc]) -> None:
    (secret,) = [d for d in docs if d["kind"] == "Secret"]
    del secret["data"]["CLM_SECRETS_KEY"]


def _too_many_stage_engines(docs: list[k8s.Doc]) -> None:
    one(docs, "HorizontalPodAutoscaler", "clm-stage-engine")["spec"]["maxReplicas"] = 7


def _fewer_partitions(docs: list[k8s.Doc]) -> None:
    one(docs, "KafkaTopic", "clm-events-v1")["spec"]["partitions"] = 4


def _pdb_selects_nothing(docs: list[k8s.Doc]) -> None:
    one(docs, "PodDisruptionBudget", "clm-ingest")["spec"]["selector"]["matchLabels"] = {
        "app.kubernetes.io/name": "ingest"
    }


def _service_selects_nothing(docs: list[k8s.Doc]) -> None:
    one(docs, "Service", "clm-metrics")["spec"]["selector"] = {"app.kubernetes.io/name": "metrics"}


def _service_wrong_target_port(docs: list[k8s.Doc]) -> None:
    one(docs, "Service", "clm-ingest")["spec"]["ports"][0]["targetPort"] = "web"


def _monitor_wrong_port(docs: list[k8s.Doc]) -> None:
    one(docs, "ServiceMonitor", "clm-stage-engine")["spec"]["endpoints"][0]["port"] = "metrics"


def _monitor_missing(docs: list[k8s.Doc]) -> None:
    docs.remove(one(docs, "ServiceMonitor", "clm-metrics"))


def _topic_retention(docs: list[k8s.Doc]) -> None:
    one(docs, "KafkaTopic", "clm-lifecycle-v1")["spec"]["config"]["retention.ms"] = "604800000"


def _pool_of_other_cluster(docs: list[k8s.Doc]) -> None:
    one(docs, "KafkaNodePool", "dual-role")["metadata"]["labels"]["strimzi.io/cluster"] = "other"


def _bootstrap_elsewhere(docs: list[k8s.Doc]) -> None:
    cm = next(
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("clm-settings")
    )
    cm["data"]["CLM_KAFKA_BOOTSTRAP"] = "kafka:9092"


def _unknown_field(docs: list[k8s.Doc]) -> None:
    one(docs, "Deployment", "clm-ingest")["spec"]["replica"] = 2


def _wrong_type(docs: list[k8s.Doc]) -> None:
    one(docs, "Service", "clm-ingest")["spec"]["ports"][0]["port"] = "eight thousand"


def _schemas(docs: list[k8s.Doc]) -> list[str]:
    return k8s.check_schemas(docs, KUBERNETES_VERSIONS[0])


BREAKAGES: dict[
    str, tuple[Callable[[list[k8s.Doc]], list[str]], Callable[[list[k8s.Doc]], None]]
] = {
    "schema: unknown field": (_schemas, _unknown_field),
    "schema: wrong type": (_schemas, _wrong_type),
    "probes: readiness on /healthz": (k8s.check_probes, _readiness_on_healthz),
    "probes: liveness on another port": (k8s.check_probes, _liveness_wrong_port),
    "resources: no limits": (k8s.check_resources, _drop_limits),
    "resources: memory above target": (k8s.check_resources, _big_memory),
    "security: may run as root": (k8s.check_security, _root),
    "security: writable root": (k8s.check_security, _writable),
    "env: a setting nobody reads": (k8s.check_env_names, _typo_env),
    "env: another service's setting": (k8s.check_env_names, _other_service_env),
    "env: port differs from the container port": (k8s.check_env_names, _wrong_port_env),
    "secret: key missing": (k8s.check_secret_refs, _missing_secret_key),
    "replicas: autoscaler above partitions": (
        k8s.check_stage_engine_replicas,
        _too_many_stage_engines,
    ),
    "replicas: partitions below the autoscaler": (
        k8s.check_stage_engine_replicas,
        _fewer_partitions,
    ),
    "selectors: PDB selects no pod": (k8s.check_selectors, _pdb_selects_nothing),
    "selectors: Service selects no pod": (k8s.check_selectors, _service_selects_nothing),
    "selectors: Service targets no port": (k8s.check_selectors, _service_wrong_target_port),
    "monitors: wrong port": (k8s.check_service_monitors, _monitor_wrong_port),
    "monitors: a service unscraped": (k8s.check_service_monitors, _monitor_missing),
    "strimzi: partitions": (k8s.check_strimzi, _fewer_partitions),
    "strimzi: retention": (k8s.check_strimzi, _topic_retention),
    "strimzi: node pool of another cluster": (k8s.check_strimzi, _pool_of_other_cluster),
    "strimzi: bootstrap is not this Kafka": (k8s.check_strimzi, _bootstrap_elsewhere),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_each_check_fails_on_a_broken_render(breakage: str) -> None:
    check, breaks = BREAKAGES[breakage]
    docs = overlay("dev")
    assert check(docs) == [], "the unbroken render must pass first"
    breaks(docs)
    assert check(docs), f"{breakage} went unnoticed"


def test_every_check_has_a_breakage() -> None:
    covered = {check for check, _ in BREAKAGES.values()}
    assert set(k8s.CHECKS.values()) | {k8s.check_strimzi} <= covered
