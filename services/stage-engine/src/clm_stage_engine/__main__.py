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
        # a batch of 2,000 events keeps ~30,000 container objects alive until it is written
        # (three lanes, three times that): at the 10,000 default the collector scanned them several
        # times a batch, ~7 % of the engine's CPU (1.36 s of 15.8 over 200,000 events; 0.11 s
        # at 200,000); above it, a collection comes only as the remembered rows grow. API-only
        # processes keep the default: their requests are small, their pauses short.
        gc_young=200_000 if settings.stage_engine_role == "all" else 10_000,
    )


if __name__ == "__main__":
    main()
