"""What the ``clm`` command reads from the environment (``CLM_`` prefix, like the services)."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field

from clm_cli.errors import CliError
from clm_infra.settings import CommonSettings


@dataclass(frozen=True, slots=True)
class Service:
    """One service as the CLI sees it: its name, base URL and the variable that sets it."""

    name: str
    url: str
    variable: str


class CliSettings(CommonSettings):
    """The shared settings plus where the services answer and which keys to present."""

    ingest_url: str = Field(
        default="http://127.0.0.1:8001", description="Base URL of the ingest service."
    )
    stage_engine_url: str = Field(
        default="http://127.0.0.1:8002", description="Base URL of the stage engine."
    )
    metrics_url: str = Field(
        default="http://127.0.0.1:8003", description="Base URL of the metrics service."
    )
    read_token: str | None = Field(
        default=None,
        description="Read token for `clm customer|stages|kpis` (dev: the seeded dev token).",
    )
    write_key: str | None = Field(
        default=None, description="Write key for `clm simulate` (dev: the dev write key)."
    )
    admin_key: str | None = Field(
        default=None, description="Admin key for `clm customer erase` (dev: the dev admin key)."
    )
    stage_engine_group: str = Field(
        default="clm-stage-engine", description="The stage engine's consumer group."
    )

    def token(self, kind: str, override: str | None) -> str:
        """The key to present: ``--token``, else the setting, else the dev key in dev."""
        if override:
            return override
        configured = {"read": self.read_token, "admin": self.admin_key}.get(kind, self.write_key)
        if configured:
            return configured
        if self.env == "dev":
            return {"read": self.dev_read_token, "admin": self.dev_admin_key}.get(
                kind, self.dev_write_key
            )
        variable = {"read": "CLM_READ_TOKEN", "admin": "CLM_ADMIN_KEY"}.get(kind, "CLM_WRITE_KEY")
        raise CliError(
            f"no {kind} key: set {variable} or pass --token "
            f"(create one with: clm keys create --kind {kind} --source NAME)",
            2,
        )

    def ingest(self) -> Service:
        return Service("ingest", self.ingest_url.rstrip("/"), "CLM_INGEST_URL")

    def stage_engine(self) -> Service:
        return Service("stage engine", self.stage_engine_url.rstrip("/"), "CLM_STAGE_ENGINE_URL")

    def metrics(self) -> Service:
        return Service("metrics service", self.metrics_url.rstrip("/"), "CLM_METRICS_URL")
