"""Static checks of the container stack: docker-compose.yml, the Dockerfile of
the service images, the Prometheus and Grafana provisioning under deploy/.

Everything here reads files only, except the promtool tests, which ask the
real tool when it is installed and skip with the reason otherwise.
`docker compose config` runs in test_compose_config.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
GRAFANA_DIR = ROOT / "deploy" / "grafana"

# service name -> (python module, package, settings prefix, port)
APP_SERVICES: dict[str, tuple[str, str, str, int]] = {
    "ingest": ("clm_ingest", "clm-ingest", "CLM_INGEST", 8001),
    "stage-engine": ("clm_stage_engine", "clm-stage-engine", "CLM_STAGE_ENGINE", 8002),
    "metrics": ("clm_metrics", "clm-metrics", "CLM_METRICS", 8003),
}
EXPECTED_SERVICES = {
    "kafka",
    "postgres",
    "migrate",
    "ingest",
    "stage-engine",
    "metrics",
    "prometheus",
    "grafana",
}
# Settings every CLM container reads (besides its own *_HOST / *_PORT).
COMMON_CLM_SETTINGS = {
    "CLM_ENV",
    "CLM_KAFKA_BOOTSTRAP",
    "CLM_DATABASE_URL",
    "CLM_TOPIC_EVENTS",
    "CLM_TOPIC_LIFECYCLE",
    "CLM_TOPIC_DLQ",
    "CLM_LOG_LEVEL",
}
SECRETS = (
    "POSTGRES_PASSWORD",
    "GRAFANA_ADMIN_PASSWORD",
    "SECRETS_KEY",
    "PSEUDONYM_KEY",
    "PRIVACY_MASTER_KEYS",
)
# ${NAME}, ${NAME:-default}, ${NAME:?message}, ... ($$ is an escaped dollar)
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")
DEFAULT_REF = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}$")


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE_FILE)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    svcs = compose["services"]
    assert isinstance(svcs, dict)
    return svcs


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def resolve_default(value: str) -> str:
    """`${X:-default}` -> `default`; anything else unchanged."""
    match = DEFAULT_REF.match(value)
    return match.group(1) if match else value


def dockerfile_of(service: dict[str, Any]) -> Path:
    build = service["build"]
    dockerfile: str = build.get("dockerfile", "Dockerfile")
    return ROOT / str(build["context"]) / dockerfile


def bind_mounts(service: dict[str, Any]) -> list[tuple[Path, str]]:
    """(host path, container path) of every bind mount given as ./relative."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            source, target = volume.get("source", ""), volume.get("target", "")
        else:
            source, target = volume.split(":")[:2]
        if source.startswith(("./", "../")):
            mounts.append((ROOT / source, target))
    return mounts


def container_path_to_host(service: dict[str, Any], container_path: str) -> Path | None:
    for host, target in bind_mounts(service):
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return host / Path(container_path).relative_to(target)
    return None


# --------------------------------------------------------------- compose --


def test_compose_has_no_version_key_and_all_services(compose: dict[str, Any]) -> None:
    assert "version" not in compose, "the Compose specification has no `version:` key"
    assert set(compose["services"]) >= EXPECTED_SERVICES


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_app_service_waits_for_migrate_and_has_healthcheck(
    services: dict[str, Any], name: str
) -> None:
    service = services[name]
    assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    healthcheck = service["healthcheck"]
    assert not healthcheck.get("disable", False)
    port = APP_SERVICES[name][3]
    assert f":{port}/healthz" in " ".join(map(str, healthcheck["test"]))


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_app_service_sets_every_clm_setting(services: dict[str, Any], name: str) -> None:
    _, _, prefix, port = APP_SERVICES[name]
    env = environment(services[name])
    missing = (COMMON_CLM_SETTINGS | {f"{prefix}_HOST", f"{prefix}_PORT"}) - env.keys()
    assert not missing, f"{name} lacks {sorted(missing)}"
    assert env[f"{prefix}_HOST"] == "0.0.0.0"  # noqa: S104 - inside the container
    assert env[f"{prefix}_PORT"] == str(port)
    assert env["CLM_ENV"] == "prod"
    assert resolve_default(env["CLM_TOPIC_EVENTS"]) == "clm.events.v1"
    assert resolve_default(env["CLM_TOPIC_LIFECYCLE"]) == "clm.lifecycle.v1"
    assert resolve_default(env["CLM_TOPIC_DLQ"]) == "clm.events.dlq.v1"


def test_migrate_runs_migrations_then_topics_once(services: dict[str, Any]) -> None:
    migrate = services["migrate"]
    assert migrate["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert str(migrate.get("restart", "no")) == "no"
    # `clm migrate`: the schema to the newest revision, then the topics (not --skip-topics)
    assert migrate["command"] == ["clm", "migrate"]
    # Same image as stage-engine: that one carries alembic.ini and migrations/.
    assert migrate["build"] == services["stage-engine"]["build"]
    assert migrate["image"] == services["stage-engine"]["image"]
    assert environment(migrate).keys() >= COMMON_CLM_SETTINGS


def test_kafka_bootstrap_matches_advertised_listener(services: dict[str, Any]) -> None:
    kafka_env = environment(services["kafka"])
    roles = set(kafka_env["KAFKA_PROCESS_ROLES"].split(","))
    assert roles == {"broker", "controller"}
    advertised = {
        entry.split("://", 1)[1] for entry in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    }
    for name in [*APP_SERVICES, "migrate"]:
        assert environment(services[name])["CLM_KAFKA_BOOTSTRAP"] in advertised
    assert any(v.endswith(":/var/lib/kafka/data") for v in services["kafka"]["volumes"])
    assert "kafka-broker-api-versions.sh" in " ".join(services["kafka"]["healthcheck"]["test"])


def test_database_url_points_at_postgres_service(services: dict[str, Any]) -> None:
    assert services["postgres"]["image"].startswith("postgres:16")
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    for name in [*APP_SERVICES, "migrate"]:
        url = environment(services[name])["CLM_DATABASE_URL"]
        assert url.startswith("postgresql+asyncpg://")
        assert "@postgres:5432/" in url


def test_stage_engine_runs_two_replicas_without_fixed_host_port(
    services: dict[str, Any],
) -> None:
    stage_engine = services["stage-engine"]
    assert stage_engine["deploy"]["replicas"] == 2
    assert "container_name" not in stage_engine
    assert not stage_engine.get("ports"), "replicas cannot share one published host port"


def test_secrets_fail_fast_when_unset() -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    refs = [m for m in INTERPOLATION.finditer(text) if m.group(1) in SECRETS]
    assert {m.group(1) for m in refs} == set(SECRETS)
    for ref in refs:
        assert ref.group(2) == ":?", f"{ref.group(0)} must fail fast with ${{VAR:?message}}"


def test_env_example_documents_every_variable() -> None:
    used = {m.group(1) for m in INTERPOLATION.finditer(COMPOSE_FILE.read_text(encoding="utf-8"))}
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    documented: dict[str, int] = {}
    for index, line in enumerate(lines):
        match = re.match(r"^([A-Z_][A-Z0-9_]*)=", line)
        if match:
            documented[match.group(1)] = index
    assert used <= documented.keys(), f"missing in .env.example: {sorted(used - documented.keys())}"
    for name, index in documented.items():
        assert index > 0, f"{name} has no comment above it"
        assert lines[index - 1].startswith("#"), f"{name} has no comment above it"
    for secret in SECRETS:
        line = lines[documented[secret]]
        assert line == f"{secret}=", f"{secret} must be left empty in .env.example"
    # The services' settings also read ./.env: compose-only names must not look like theirs.
    leaking = sorted(name for name in documented if name.startswith("CLM_"))
    assert not leaking, f".env.example must not set service settings: {leaking}"


# ------------------------------------------------------------ dockerfiles --


def test_every_build_points_at_an_existing_dockerfile(services: dict[str, Any]) -> None:
    for name, service in services.items():
        if "build" in service:
            assert dockerfile_of(service).is_file(), f"{name}: {dockerfile_of(service)}"
        else:
            assert "image" in service, f"{name} has neither build nor image"


def dockerfile_stages(text: str) -> dict[str, tuple[str, str]]:
    """Stage name -> (base, body) of a multi-stage Dockerfile."""
    froms = list(re.finditer(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?\s*$", text, flags=re.M | re.I))
    stages = {}
    for index, match in enumerate(froms):
        end = froms[index + 1].start() if index + 1 < len(froms) else len(text)
        stages[match.group(2) or str(index)] = (match.group(1), text[match.end() : end])
    return stages


def test_one_dockerfile_builds_every_service_image(services: dict[str, Any]) -> None:
    """One Dockerfile, a build ARG for the package and a target per service."""
    for name in APP_SERVICES:
        build = services[name]["build"]
        assert dockerfile_of(services[name]) == ROOT / "Dockerfile"
        assert build["target"] == name
        assert build["args"]["SERVICE"] == name, "the target and SERVICE must name one service"
    assert not list((ROOT / "services").glob("*/Dockerfile")), "a second copy would drift"


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_dockerfile_shape(services: dict[str, Any], name: str) -> None:
    module, _, prefix, port = APP_SERVICES[name]
    text = dockerfile_of(services[name]).read_text(encoding="utf-8")
    stages = dockerfile_stages(text)
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    builder = stages["builder"][1]
    # the service's package and the CLI; the dependency layer before any source
    deps = 'uv sync --frozen --no-dev --no-install-workspace --package "clm-${SERVICE}"'
    assert f"{deps} --package clm-cli" in builder
    assert builder.index(deps) < builder.index("COPY libs/common/domain/src")
    assert "COPY tools/cli/src tools/cli/src" in builder
    assert re.search(r"--no-editable --package \"clm-\$\{SERVICE\}\" --package clm-cli", builder)
    base, runtime = stages["runtime"]
    assert base == "${PYTHON_IMAGE}"
    assert re.search(r"^USER\s+(?!root\b|0\b)\S+", runtime, flags=re.MULTILINE)
    assert "COPY --from=builder /app/.venv /app/.venv" in runtime
    assert f"{prefix}_HOST=0.0.0.0" in runtime
    base, body = stages[name]
    assert base == "runtime", f"the {name} target must build on the shared runtime stage"
    assert not re.search(r"^USER\b", body, flags=re.MULTILINE), "stays the runtime's user"
    assert re.search(rf"^EXPOSE\s+{port}\b", body, flags=re.MULTILINE)
    healthcheck = re.search(r"^HEALTHCHECK\b.*?CMD\s+(\[.*?\])$", body, flags=re.M | re.S)
    assert healthcheck
    assert "urllib.request" in healthcheck.group(1)
    assert "/healthz" in healthcheck.group(1)
    assert f"'{prefix}_PORT', '{port}'" in healthcheck.group(1)
    cmd = re.findall(r"^CMD\s+(\[.*\])$", body, flags=re.MULTILINE)
    assert json.loads(cmd[-1]) == ["python", "-m", module]


def test_the_cli_in_the_images_is_the_clm_command() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "tools" / "cli" / "pyproject.toml").read_text("utf-8"))
    assert project["project"]["name"] == "clm-cli"
    assert project["project"]["scripts"]["clm"].startswith("clm_cli.")


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_dockerfile_copy_sources_exist(services: dict[str, Any], name: str) -> None:
    """Every `COPY src... dest` (not --from) names a file in the build context."""
    service = services[name]
    context = ROOT / service["build"]["context"]
    text = dockerfile_of(service).read_text(encoding="utf-8")
    stages = dockerfile_stages(text)
    used = "".join(body for stage, (_, body) in stages.items() if stage not in APP_SERVICES)
    used += stages[name][1]
    for line in re.findall(r"^COPY\s+(.+)$", used, flags=re.MULTILINE):
        words = line.replace("${SERVICE}", service["build"]["args"]["SERVICE"]).split()
        if any(w.startswith("--from") for w in words):
            continue
        sources = [w for w in words if not w.startswith("--")][:-1]
        for source in sources:
            assert (context / source).exists(), f"{name}: COPY {source} is missing"


def test_dockerignore_keeps_local_state_and_secrets_out() -> None:
    patterns = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", ".run", ".cache", ".tools", ".pytest_cache", ".env"} <= patterns
    # Everything the Dockerfiles copy must stay in the context.
    for kept in ("uv.lock", "pyproject.toml", "libs", "services", "migrations", "alembic.ini"):
        assert kept not in patterns


# ---------------------------------------------------------------- mounts --


def test_bind_mounted_deploy_paths_exist(services: dict[str, Any]) -> None:
    mounts = [m for service in services.values() for m in bind_mounts(service)]
    assert mounts, "prometheus and grafana mount their config from deploy/"
    for host, target in mounts:
        assert host.exists(), f"{host} (mounted at {target}) does not exist"


# ------------------------------------------------------------ prometheus --


def test_prometheus_config_scrapes_every_service(services: dict[str, Any]) -> None:
    config_path = container_path_to_host(services["prometheus"], "/etc/prometheus/prometheus.yml")
    assert config_path == PROMETHEUS_DIR / "prometheus.yml"
    config = load_yaml(config_path)
    assert config["global"]["scrape_interval"] == "15s"
    targets: set[tuple[str, int]] = set()
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            targets.update((host, int(sd["port"])) for host in sd["names"])
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                targets.add((host, int(port)))
    for name, (*_, port) in APP_SERVICES.items():
        assert (name, port) in targets, f"{name}:{port} is not scraped"
        assert f"{name}:{port}" not in [f"{h}:{p}" for h, p in targets if h != name]


def test_prometheus_rule_files_exist_and_hold_alerts() -> None:
    config = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    rule_files = [p for pattern in config["rule_files"] for p in PROMETHEUS_DIR.glob(pattern)]
    assert PROMETHEUS_DIR / "rules" / "clm.yml" in rule_files
    alerts = {}
    for path in rule_files:
        for group in load_yaml(path)["groups"]:
            assert group["name"]
            assert group["rules"]
            for rule in group["rules"]:
                assert rule["expr"]
                if "alert" in rule:
                    alerts[rule["alert"]] = rule
    down = [rule for rule in alerts.values() if "up" in rule["expr"] and "== 0" in rule["expr"]]
    assert down, "a target-down alert on `up == 0` is expected"
    assert down[0]["for"] == "2m"


# --------------------------------------------------------------- grafana --


def grafana_dashboards() -> list[Path]:
    return sorted((GRAFANA_DIR / "dashboards").glob("*.json"))


def provisioned_datasource_uids() -> set[str]:
    uids = set()
    for path in (GRAFANA_DIR / "provisioning" / "datasources").glob("*.y*ml"):
        for datasource in load_yaml(path)["datasources"]:
            uids.add(datasource["uid"])
    return uids


def test_grafana_datasource_is_the_compose_prometheus(services: dict[str, Any]) -> None:
    path = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"
    (datasource,) = load_yaml(path)["datasources"]
    assert datasource["uid"] == "prometheus"
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    assert "prometheus" in services


def test_grafana_dashboard_provider_reads_the_mounted_dashboards(
    services: dict[str, Any],
) -> None:
    grafana = services["grafana"]
    provisioning = container_path_to_host(grafana, "/etc/grafana/provisioning")
    assert provisioning == GRAFANA_DIR / "provisioning"
    (provider,) = load_yaml(provisioning / "dashboards" / "clm.yml")["providers"]
    assert provider["type"] == "file"
    host_dir = container_path_to_host(grafana, provider["options"]["path"])
    assert host_dir == GRAFANA_DIR / "dashboards"
    assert grafana_dashboards(), "no dashboard JSON to provision"
    home = environment(grafana).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        host_home = container_path_to_host(grafana, home)
        assert host_home is not None
        assert host_home.is_file()
    assert environment(grafana)["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert environment(grafana)["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


def test_grafana_dashboards_are_valid_and_use_provisioned_datasource() -> None:
    known_uids = provisioned_datasource_uids()
    seen_uids = set()
    for path in grafana_dashboards():
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        assert dashboard["uid"], path
        assert dashboard["uid"] not in seen_uids, path
        seen_uids.add(dashboard["uid"])
        assert dashboard["title"]
        assert dashboard["schemaVersion"] >= 39
        panel_ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(panel_ids) == len(set(panel_ids)), f"{path.name}: duplicate panel ids"
        for panel in dashboard["panels"]:
            for item in [panel, *panel.get("targets", [])]:
                datasource = item.get("datasource")
                if isinstance(datasource, dict) and datasource.get("type") == "prometheus":
                    assert datasource["uid"] in known_uids, f"{path.name}: {panel['title']}"


def test_pipeline_health_dashboard_panels() -> None:
    dashboard = json.loads(
        (GRAFANA_DIR / "dashboards" / "pipeline-health.json").read_text(encoding="utf-8")
    )
    assert dashboard["title"] == "CLM Stream — pipeline health"
    exprs = " ".join(
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    )
    for metric in (
        "up{",
        "process_resident_memory_bytes",
        "rate(clm_events_processed_total",
        "clm_kpi_purchases",
    ):
        assert metric in exprs


# ------------------------------------------------------------ real tools --


def test_promtool_accepts_prometheus_config() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package `prometheus`)")
    result = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS_DIR / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_rules_and_their_alert_tests() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package `prometheus`; `make test` installs it)")
    for args in (
        ["check", "rules", *map(str, sorted((PROMETHEUS_DIR / "rules").glob("*.yml")))],
        ["test", "rules", str(PROMETHEUS_DIR / "tests" / "alerts_test.yml")],
    ):
        result = subprocess.run(
            [promtool, *args], capture_output=True, text=True, timeout=120, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_cover_the_pipeline_and_churn() -> None:
    alerts = {
        rule["alert"]
        for group in load_yaml(PROMETHEUS_DIR / "rules" / "clm.yml")["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    assert {
        "ClmConsumerLagGrowing",
        "ClmDeadLetterGrowing",
        "ClmConsumerStalled",
        "ClmIngestServerErrors",
        "ClmOutboxBacklog",
        "ClmChurnRateJump",
    } <= alerts


def test_promql_names_are_extracted_and_rules_resolved() -> None:
    from tests.promql_names import names_in, service_metric_names

    assert names_in(
        'histogram_quantile(0.99, sum by (le, group) (rate(a_bucket{x="y"}[5m]))) / b offset 5m'
    ) == {"a_bucket", "b"}
    assert names_in('max(clm_kpi_nps{window="$window"}) > 0 and on (job) up') == {
        "clm_kpi_nps",
        "up",
    }
    assert service_metric_names("clm:consumer_lag_records:sum") == {"clm_consumer_lag_records"}


def test_the_lifecycle_dashboard_has_a_row_per_stage_and_the_map() -> None:
    from tests.promql_names import panel_exprs

    dashboard = json.loads(
        (GRAFANA_DIR / "dashboards" / "customer-lifecycle.json").read_text(encoding="utf-8")
    )
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    for stage in ("Reach", "Acquisition", "Conversion", "Retention", "Loyalty", "Lifecycle map"):
        assert any(r.startswith(stage) for r in rows), stage
    exprs = " ".join(e for f, _, e in panel_exprs() if f == "customer-lifecycle.json")
    for metric in (
        "clm_kpi_customers",
        "clm_kpi_transitions",
        "clm_kpi_churn_ratio",
        "clm_kpi_clv_historical_by_channel",
        "clm_kpi_customer_acquisition_cost_by_channel",
    ):
        assert metric in exprs
