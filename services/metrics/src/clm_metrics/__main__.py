"""``python -m clm_metrics``: run the metrics service."""

from __future__ import annotations

from clm_metrics.app import create_app
from clm_metrics.settings import MetricsSettings
from clm_web.serve import serve


def main() -> None:
    settings = MetricsSettings()
    serve(create_app(settings), settings.server, log_level=settings.log_level)


if __name__ == "__main__":
    main()
