"""``python -m clm_ingest``: run the ingest service."""

from __future__ import annotations

from clm_ingest.app import create_app
from clm_ingest.settings import IngestSettings
from clm_web.serve import serve


def main() -> None:
    settings = IngestSettings()
    serve(create_app(settings), settings.server, log_level=settings.log_level)


if __name__ == "__main__":
    main()
