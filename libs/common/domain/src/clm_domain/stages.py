"""The lifecycle stages: the five-step arc, the two ways out of it, and their names."""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    """Lifecycle stages: the five-step arc plus the two ways out of it."""

    REACH = "reach"
    ACQUISITION = "acquisition"
    CONVERSION = "conversion"
    RETENTION = "retention"
    LOYALTY = "loyalty"
    AT_RISK = "at_risk"
    CHURNED = "churned"


#: The other vocabulary in common use for the arc, accepted wherever a stage is named.
STAGE_ALIASES: dict[str, Stage] = {
    "awareness": Stage.REACH,
    "consideration": Stage.ACQUISITION,
    "purchase": Stage.CONVERSION,
    "advocacy": Stage.LOYALTY,
}
#: Display names per vocabulary (``CLM_STAGE_VOCABULARY``).
VOCABULARIES: dict[str, dict[Stage, str]] = {
    "standard": {s: s.value for s in Stage},
    "classic": {
        **{s: s.value for s in Stage},
        Stage.REACH: "awareness",
        Stage.ACQUISITION: "consideration",
        Stage.CONVERSION: "purchase",
        Stage.LOYALTY: "advocacy",
    },
}

ARC: tuple[Stage, ...] = (
    Stage.REACH,
    Stage.ACQUISITION,
    Stage.CONVERSION,
    Stage.RETENTION,
    Stage.LOYALTY,
)
#: Each arc stage's position along the arc (a customer moves only to a later one).
ARC_RANK: dict[Stage, int] = {stage: rank for rank, stage in enumerate(ARC)}
LAPSED = frozenset({Stage.AT_RISK, Stage.CHURNED})
CUSTOMER_STAGES = frozenset({Stage.CONVERSION, Stage.RETENTION, Stage.LOYALTY})
CAN_LAPSE = CUSTOMER_STAGES | {Stage.AT_RISK}  # the stages inactivity moves on from


#: Every name ``parse_stage`` takes (lower-case): the stages and their aliases.
STAGE_NAMES: tuple[str, ...] = (*(s.value for s in Stage), *STAGE_ALIASES)


def parse_stage(name: str) -> Stage:
    """A stage from its name or alias (``awareness`` → ``reach``); ValueError if unknown."""
    key = name.strip().lower()
    if key in STAGE_ALIASES:
        return STAGE_ALIASES[key]
    return Stage(key)
