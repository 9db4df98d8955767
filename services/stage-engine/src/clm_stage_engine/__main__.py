"""``python -m clm_stage_engine``: run the stage engine (consumer, relay and read API)."""

from __future__ import annotations

from clm_common.serve import serve
from clm_stage_engine.app import create_app
from clm_stage_engine.settings import StageEngineSettings


def main() -> None:
    settings = StageEngineSettings()
    serve(
        create_app(settings),
        host=settings.stage_engine_host,
        port=settings.stage_engine_port,
        log_level=settings.log_level,
    )


if __name__ == "__main__":
    main()
