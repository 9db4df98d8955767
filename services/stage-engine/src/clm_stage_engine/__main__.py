"""``python -m clm_stage_engine``: run the stage engine (consumer, relay and read API)."""

from __future__ import annotations

import sys

from clm_common.rules import RulesError, load_rules
from clm_common.serve import serve
from clm_stage_engine.app import create_app
from clm_stage_engine.settings import StageEngineSettings


def main() -> None:
    settings = StageEngineSettings()
    try:
        rules = load_rules(settings.stage_engine_rules_path)
    except RulesError as exc:
        print(f"stage-engine: error: bad lifecycle rules: {exc}", file=sys.stderr)
        sys.exit(2)
    app = create_app(settings, rules)
    serve(
        app,
        host=settings.stage_engine_host,
        port=settings.stage_engine_port,
        log_level=settings.log_level,
    )


if __name__ == "__main__":
    main()
