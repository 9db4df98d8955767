"""``python -m clm_stage_engine``: run the stage engine (consumer, relay and read API)."""

from __future__ import annotations

import sys

from clm_domain.rules import RulesError, load_rules
from clm_stage_engine.app import create_app
from clm_stage_engine.settings import StageEngineSettings
from clm_web.serve import serve


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
        settings.server,
        log_level=settings.log_level,
        # a batch's objects stay alive until it is written: a higher threshold keeps the
        # collector from scanning them several times a batch (docs/performance.md)
        gc_young=200_000 if settings.stage_engine_role == "all" else 10_000,
    )


if __name__ == "__main__":
    main()
