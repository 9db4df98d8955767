"""`docker compose config` on docker-compose.yml, with the real Compose CLI.

This machine (and CI's) has the docker client but no compose plugin and no Docker
engine; `config` needs neither an engine nor a daemon. Rather than a stand-in of our
own around compose-go (the loader compose uses: interpolation, schema validation,
normalization), `make test` builds the real CLI, Docker Compose v5.6.0
(`github.com/docker/compose/v5/cmd`), from the Go module proxy into `.tools/` once:
about 1.5 minutes on a cold 2-core machine, then nothing (`make compose-tool`).
So this is exactly the check a user's `docker compose config` does, with no code of
ours to keep in step with compose. Where a `docker compose` plugin works, it is used
when `.tools/` has no build.

Each run gets a hermetic environment (no variable of the caller's shell can fill a
secret) and a `.env` made in a temp dir from `.env.example` plus the required secrets;
the repository's own `.env` is never written. The test proves it can fail: a copy of
the file broken on purpose must be refused.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
BUILT_COMPOSE = ROOT / ".tools" / "bin" / "docker-compose"
# left empty in .env.example; `${NAME:?…}` in docker-compose.yml refuses them unset
SECRETS = (
    "POSTGRES_PASSWORD",
    "GRAFANA_ADMIN_PASSWORD",
    "SECRETS_KEY",
    "PSEUDONYM_KEY",
    "PRIVACY_MASTER_KEYS",
)


def compose_command() -> list[str]:
    """The Compose CLI to run; skips (fails under CI, where `make test` builds it) if none."""
    if BUILT_COMPOSE.exists():
        return [str(BUILT_COMPOSE)]
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    reason = "no Compose CLI: run `make compose-tool` (builds it into .tools/)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; `make test` should have done it")
    pytest.skip(reason)


def env_file(directory: Path, *, secrets: bool = True) -> Path:
    """`.env.example` with the required secrets filled in (or left empty)."""
    lines = []
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        name = line.split("=", 1)[0]
        if secrets and name in SECRETS and line == f"{name}=":
            line = f"{name}=test-{name.lower().replace('_', '-')}"
        lines.append(line)
    path = directory / ".env"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def compose_config(
    tmp_path: Path, *args: str, compose_file: Path = COMPOSE_FILE, secrets: bool = True
) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return subprocess.run(
        [
            *compose_command(),
            "--project-directory",
            str(ROOT),
            "--env-file",
            str(env_file(tmp_path, secrets=secrets)),
            "-f",
            str(compose_file),
            "config",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)},
        check=False,
    )


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    result = compose_config(tmp_path, "--format", "json")
    assert result.returncode == 0, result.stderr
    project: dict[str, Any] = json.loads(result.stdout)
    services = project["services"]
    # read back after compose's own interpolation and normalization
    assert services["stage-engine"]["deploy"]["replicas"] == 2
    url = services["ingest"]["environment"]["CLM_DATABASE_URL"]
    assert url == "postgresql+asyncpg://clm:test-postgres-password@postgres:5432/clm"
    for name in ("ingest", "stage-engine", "metrics"):
        build = services[name]["build"]
        assert (build["target"], build["args"]["SERVICE"]) == (name, name)
        assert Path(build["context"]) == ROOT
    assert services["migrate"]["image"] == services["stage-engine"]["image"]


def test_docker_compose_refuses_missing_secrets(tmp_path: Path) -> None:
    result = compose_config(tmp_path, "--quiet", secrets=False)
    assert result.returncode != 0
    for secret in SECRETS:
        assert f"required variable {secret} is missing a value" in result.stderr


BREAKAGES = {
    # the compose schema: no such key on a service
    "unknown service key": (r"(?m)^  ingest:\n", "  ingest:\n    restart_policy: always\n"),
    # normalization: depends_on names a service that does not exist
    "unknown dependency": (
        r"(?m)^    depends_on:\n      prometheus:\n",
        "    depends_on:\n      prometheus-server:\n",
    ),
    # YAML itself
    "bad indentation": (r"(?m)^  postgres:\n", "  postgres:\n   image: x\n"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_docker_compose_config_refuses_a_broken_copy(tmp_path: Path, breakage: str) -> None:
    pattern, replacement = BREAKAGES[breakage]
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    broken, count = re.subn(pattern, replacement, text, count=1)
    assert count == 1, f"{breakage}: the pattern no longer matches docker-compose.yml"
    copy = tmp_path / "docker-compose.yml"
    copy.write_text(broken, encoding="utf-8")
    result = compose_config(tmp_path, "--quiet", compose_file=copy)
    assert result.returncode != 0, f"{breakage} was accepted"
    assert result.stderr.strip()
