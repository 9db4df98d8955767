"""What the read commands share: the ``--token`` flag and a GET with the read token."""

from __future__ import annotations

import argparse
from typing import Any

from clm_cli.api import request
from clm_cli.settings import CliSettings, Service


def token_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--token", help="the key to present (default: CLM_READ_TOKEN)")
    return parent


async def read(
    settings: CliSettings,
    service: Service,
    path: str,
    token: str | None,
    params: dict[str, Any] | None = None,
) -> Any:
    """GET ``path`` of ``service`` presenting ``token`` (default: CLM_READ_TOKEN)."""
    return await request(service, "GET", path, token=settings.token("read", token), params=params)
