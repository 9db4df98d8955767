"""Checks of rendered Kubernetes manifests (deploy/kubernetes), offline.

Core kinds are validated against the real Kubernetes JSON schemas that the
`kubernetes-validate` package bundles. For the custom resources (Strimzi's Kafka,
KafkaNodePool, KafkaTopic; the Prometheus Operator's ServiceMonitor) we check only the
fields we rely on, with the small structural checks below (no third-party CRD schemas
vendored). Each check takes the rendered documents and returns the problems it found,
one readable line each: an empty list is a pass.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml
from pydantic_settings import BaseSettings

from clm_infra.kafka import topic_specs
from clm_infra.settings import CommonSettings, variables
from clm_ingest.settings import IngestSettings
from clm_metrics.settings import MetricsSettings
from clm_stage_engine.settings import StageEngineSettings

ROOT = Path(__file__).resolve().parents[1]
KUBERNETES_DIR = ROOT / "deploy" / "kubernetes"
BUILT_KUSTOMIZE = ROOT / ".tools" / "bin" / "kustomize"

Doc = dict[str, Any]
Check = Callable[[list[Doc]], list[str]]

# Deployment name -> (settings class, port); the migrate Job reads the common settings
SERVICES: dict[str, tuple[type[BaseSettings], int]] = {
    "clm-ingest": (IngestSettings, 8001),
    "clm-stage-engine": (StageEngineSettings, 8002),
    "clm-metrics": (MetricsSettings, 8003),
}
JOB_SETTINGS: type[BaseSettings] = CommonSettings
CRD_GROUPS = ("kafka.strimzi.io/", "monitoring.coreos.com/")
MEMORY_LIMIT_MI = 300


# ------------------------------------------------------------- rendering --


def kustomize_command() -> list[str] | None:
    """`kubectl kustomize` where kubectl is, else the kustomize `make` built into .tools/."""
    if BUILT_KUSTOMIZE.exists():
        return [str(BUILT_KUSTOMIZE), "build"]
    kubectl = shutil.which("kubectl")
    if kubectl is not None:
        return [kubectl, "kustomize"]
    return None


def render(directory: Path, command: list[str]) -> list[Doc]:
    result = subprocess.run(
        [*command, str(directory)], capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"kustomize {directory}: {result.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


# --------------------------------------------------------------- helpers --


def name_of(doc: Doc) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [doc for doc in docs if doc["kind"] == kind]


def workloads(docs: list[Doc]) -> Iterator[tuple[Doc, Doc]]:
    """(workload, pod spec) of every Deployment and Job."""
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            yield doc, doc["spec"]["template"]["spec"]


def pod_labels(docs: list[Doc]) -> list[dict[str, str]]:
    return [doc["spec"]["template"]["metadata"].get("labels", {}) for doc, _ in workloads(docs)]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def settings_env_names(settings: type[BaseSettings]) -> set[str]:
    return set(variables(settings))


def config_map_data(docs: list[Doc], name: str) -> dict[str, str]:
    """The data of the ConfigMap a workload refers to by `name` (already hash-suffixed)."""
    for doc in of_kind(docs, "ConfigMap"):
        if doc["metadata"]["name"] == name:
            return {str(k): str(v) for k, v in doc.get("data", {}).items()}
    return {}


def settings_config_map(docs: list[Doc]) -> dict[str, str]:
    """The data of clm-settings (the ConfigMap every workload reads)."""
    for doc in of_kind(docs, "ConfigMap"):
        if doc["metadata"]["name"].startswith("clm-settings"):
            return {str(k): str(v) for k, v in doc.get("data", {}).items()}
    return {}


# ---------------------------------------------------------------- checks --


def check_schemas(docs: list[Doc], version: str) -> list[str]:
    """Every core object against the Kubernetes `version` JSON schema (strict: no unknown field)."""
    problems = []
    for doc in docs:
        if str(doc.get("apiVersion", "")).startswith(CRD_GROUPS):
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{name_of(doc)}: {exc.message} at {list(exc.path)}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{name_of(doc)}: no schema in Kubernetes {version}: {exc}")
    return problems


def check_probes(docs: list[Doc]) -> list[str]:
    """Readiness on /readyz (the ingest: /healthz) and liveness on /healthz, on the own port.

    The ingest stays in its Service while Kafka is down: it answers 503 with Retry-After
    itself, which clients honour, instead of leaving them with refused connections.
    """
    problems = []
    for doc in of_kind(docs, "Deployment"):
        name = doc["metadata"]["name"]
        expected_port = SERVICES[name][1] if name in SERVICES else None
        ready = "/healthz" if name == "clm-ingest" else "/readyz"
        for container in doc["spec"]["template"]["spec"]["containers"]:
            ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
            for probe_key, path in (("readinessProbe", ready), ("livenessProbe", "/healthz")):
                probe = container.get(probe_key, {}).get("httpGet")
                if probe is None:
                    problems.append(f"{name}/{container['name']}: no HTTP {probe_key}")
                    continue
                port = ports.get(probe["port"], probe["port"])
                if probe.get("path") != path or port != expected_port:
                    problems.append(
                        f"{name}/{container['name']}: {probe_key} asks "
                        f"{probe.get('path')} on {port}, not {path} on {expected_port}"
                    )
    return problems


def parse_mebibytes(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "M": 1e6 / 2**20, "G": 1e9 / 2**20}
    for unit, factor in units.items():
        if quantity.endswith(unit):
            return float(quantity[: -len(unit)]) * factor
    return float(quantity) / 2**20


def check_resources(docs: list[Doc]) -> list[str]:
    """cpu and memory requests and limits on every container; memory limit under our target."""
    problems = []
    for doc, pod in workloads(docs):
        for container in pod["containers"]:
            where = f"{name_of(doc)}/{container['name']}"
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                missing = {"cpu", "memory"} - resources.get(kind, {}).keys()
                if missing:
                    problems.append(f"{where}: no {kind} for {sorted(missing)}")
            limit = resources.get("limits", {}).get("memory")
            if limit is not None and parse_mebibytes(str(limit)) > MEMORY_LIMIT_MI:
                problems.append(f"{where}: memory limit {limit} above {MEMORY_LIMIT_MI}Mi")
    return problems


def check_security(docs: list[Doc]) -> list[str]:
    """Non-root, no privilege escalation, read-only root file system, no capabilities."""
    problems = []
    for doc, pod in workloads(docs):
        pod_context = pod.get("securityContext", {})
        for container in pod["containers"]:
            where = f"{name_of(doc)}/{container['name']}"
            context = container.get("securityContext", {})
            if not context.get("runAsNonRoot", pod_context.get("runAsNonRoot", False)):
                problems.append(f"{where}: runAsNonRoot is not set")
            if context.get("allowPrivilegeEscalation", True):
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
            if not context.get("readOnlyRootFilesystem", False):
                problems.append(f"{where}: readOnlyRootFilesystem is not true")
            if "ALL" not in context.get("capabilities", {}).get("drop", []):
                problems.append(f"{where}: capabilities are not dropped")
    return problems


def container_env(docs: list[Doc], container: Doc) -> dict[str, str]:
    """Name -> value (or `<secret>`) of every variable a container gets."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(config_map_data(docs, source["configMapRef"]["name"]))
    for item in container.get("env", []):
        env[item["name"]] = str(item.get("value", "<secret>"))
    return env


def check_env_names(docs: list[Doc]) -> list[str]:
    """Every CLM_* a container gets is a setting that service reads; its port is the right one."""
    problems = []
    for doc, pod in workloads(docs):
        name = doc["metadata"]["name"]
        settings = SERVICES[name][0] if name in SERVICES else JOB_SETTINGS
        known = settings_env_names(settings)
        for container in pod["containers"]:
            env = container_env(docs, container)
            unknown = sorted(k for k in env if k.startswith("CLM_") and k not in known)
            if unknown:
                problems.append(f"{name}: {settings.__name__} reads no {unknown}")
            if "CLM_DATABASE_URL" not in env:
                problems.append(f"{name}: no CLM_DATABASE_URL")
            if name in SERVICES:
                port_vars = [k for k in env if k.endswith("_PORT") and k in known]
                ports = [p["containerPort"] for p in container.get("ports", [])]
                if [int(env[k]) for k in port_vars] != ports or ports != [SERVICES[name][1]]:
                    problems.append(f"{name}: {port_vars} do not match its ports {ports}")
    return problems


def check_secret_refs(docs: list[Doc]) -> list[str]:
    """secretKeyRefs name a key of a rendered Secret (when the Secret is rendered at all)."""
    secrets = {d["metadata"]["name"]: d for d in of_kind(docs, "Secret")}
    problems = []
    for doc, pod in workloads(docs):
        for container in pod["containers"]:
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref is None or not secrets:
                    continue
                secret = secrets.get(ref["name"])
                keys = {**(secret or {}).get("data", {}), **(secret or {}).get("stringData", {})}
                if ref["key"] not in keys:
                    problems.append(f"{name_of(doc)}: secret {ref['name']} has no {ref['key']}")
    return problems


def events_partitions(docs: list[Doc]) -> int | None:
    topic = settings_config_map(docs).get("CLM_TOPIC_EVENTS", CommonSettings().topics.events)
    for doc in of_kind(docs, "KafkaTopic"):
        if doc["spec"].get("topicName", doc["metadata"]["name"]) == topic:
            return int(doc["spec"]["partitions"])
    return None


def check_stage_engine_replicas(docs: list[Doc]) -> list[str]:
    """Stage engines beyond the events topic's partitions would idle: bounded by them."""
    partitions = events_partitions(docs) or CommonSettings().topics.events_partitions
    problems = []
    for doc in of_kind(docs, "HorizontalPodAutoscaler"):
        if doc["spec"]["scaleTargetRef"]["name"] == "clm-stage-engine":
            top = doc["spec"]["maxReplicas"]
            if top > partitions:
                problems.append(f"{name_of(doc)}: maxReplicas {top} > {partitions} partitions")
    for doc in of_kind(docs, "Deployment"):
        replicas = doc["spec"].get("replicas", 1)
        if doc["metadata"]["name"] == "clm-stage-engine" and replicas > partitions:
            problems.append(f"{name_of(doc)}: {replicas} replicas > {partitions} partitions")
    return problems


def check_selectors(docs: list[Doc]) -> list[str]:
    """Services, PDBs and HPAs find what they are meant to: pods, ports, Deployments."""
    problems = []
    labels = pod_labels(docs)
    for doc in of_kind(docs, "Service"):
        selector = doc["spec"].get("selector", {})
        pods = [
            p
            for d, p in workloads(docs)
            if selects(selector, d["spec"]["template"]["metadata"]["labels"])
        ]
        if not pods:
            problems.append(f"{name_of(doc)}: selector {selector} matches no pod")
        port_names = {
            p.get("name") for pod in pods for c in pod["containers"] for p in c.get("ports", [])
        }
        for port in doc["spec"]["ports"]:
            if isinstance(port.get("targetPort"), str) and port["targetPort"] not in port_names:
                problems.append(f"{name_of(doc)}: no container port named {port['targetPort']}")
    for doc in of_kind(docs, "PodDisruptionBudget"):
        selector = doc["spec"]["selector"].get("matchLabels", {})
        if not any(selects(selector, pod) for pod in labels):
            problems.append(f"{name_of(doc)}: selector {selector} matches no pod")
    deployments = {d["metadata"]["name"] for d in of_kind(docs, "Deployment")}
    for doc in of_kind(docs, "HorizontalPodAutoscaler"):
        if doc["spec"]["scaleTargetRef"]["name"] not in deployments:
            problems.append(f"{name_of(doc)}: scales no rendered Deployment")
    return problems


def check_service_monitors(docs: list[Doc]) -> list[str]:
    """One ServiceMonitor per service, on a real Service port, at /metrics."""
    problems = []
    scraped: set[str] = set()
    services = of_kind(docs, "Service")
    for doc in of_kind(docs, "ServiceMonitor"):
        selector = doc["spec"]["selector"].get("matchLabels", {})
        matched = [s for s in services if selects(selector, s["metadata"].get("labels", {}))]
        if not matched:
            problems.append(f"{name_of(doc)}: selector {selector} matches no Service")
        ports = {p.get("name") for s in matched for p in s["spec"]["ports"]}
        for endpoint in doc["spec"]["endpoints"]:
            if endpoint.get("port") not in ports or endpoint.get("path") != "/metrics":
                problems.append(f"{name_of(doc)}: endpoint {endpoint} is not a port's /metrics")
        scraped.update(s["metadata"]["name"] for s in matched)
    if of_kind(docs, "ServiceMonitor") and scraped != set(SERVICES):
        problems.append(f"scraped services {sorted(scraped)}, expected {sorted(SERVICES)}")
    return problems


def check_strimzi(docs: list[Doc]) -> list[str]:
    """KRaft Kafka with node pools; bootstrap, topics, partitions and retention as ours."""
    kafkas = of_kind(docs, "Kafka")
    if len(kafkas) != 1:
        return [f"expected one Kafka, found {len(kafkas)}"]
    kafka = kafkas[0]
    cluster = kafka["metadata"]["name"]
    problems = []
    pools = [
        p
        for p in of_kind(docs, "KafkaNodePool")
        if p["metadata"]["labels"].get("strimzi.io/cluster") == cluster
    ]
    roles = {role for pool in pools for role in pool["spec"]["roles"]}
    if roles != {"controller", "broker"}:
        problems.append(
            f"Kafka/{cluster}: node pools give roles {sorted(roles)} (KRaft needs both)"
        )
    brokers = sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"])
    plain = [lsn["port"] for lsn in kafka["spec"]["kafka"]["listeners"] if not lsn.get("tls")]
    bootstrap = settings_config_map(docs).get("CLM_KAFKA_BOOTSTRAP")
    if bootstrap not in {f"{cluster}-kafka-bootstrap:{port}" for port in plain}:
        problems.append(f"CLM_KAFKA_BOOTSTRAP {bootstrap} is no plain listener of {cluster}")
    config = kafka["spec"]["kafka"].get("config", {})
    min_isr = int(config.get("min.insync.replicas", 1))
    settings = CommonSettings.model_validate(
        {k.removeprefix("CLM_").lower(): v for k, v in settings_config_map(docs).items()}
    )
    topics = {
        t["spec"].get("topicName", t["metadata"]["name"]): t for t in of_kind(docs, "KafkaTopic")
    }
    for spec in topic_specs(settings):
        topic = topics.pop(spec.name, None)
        if topic is None:
            problems.append(f"no KafkaTopic for {spec.name}")
            continue
        where = f"KafkaTopic/{topic['metadata']['name']}"
        if topic["metadata"]["labels"].get("strimzi.io/cluster") != cluster:
            problems.append(f"{where}: not labelled strimzi.io/cluster={cluster}")
        if topic["spec"]["partitions"] != spec.partitions:
            problems.append(
                f"{where}: {topic['spec']['partitions']} partitions, ours {spec.partitions}"
            )
        for key, value in spec.config.items():
            if str(topic["spec"].get("config", {}).get(key)) != value:
                problems.append(f"{where}: {key} is not {value}")
        if not min_isr <= topic["spec"]["replicas"] <= brokers:
            problems.append(
                f"{where}: replicas {topic['spec']['replicas']} vs {brokers} brokers, min ISR {min_isr}"
            )
    problems.extend(f"KafkaTopic for {name} is not one of ours" for name in topics)
    return problems


CHECKS: dict[str, Check] = {
    "probes": check_probes,
    "resources": check_resources,
    "security": check_security,
    "env names": check_env_names,
    "secret refs": check_secret_refs,
    "stage engine replicas": check_stage_engine_replicas,
    "selectors": check_selectors,
    "service monitors": check_service_monitors,
}
