"""Lifecycle rules: a validated model loaded from YAML (``deploy/config/lifecycle.yaml``).

A bad file is refused with a message naming the file, the line and the field, so the service
stops at start instead of running on rules nobody meant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from clm_domain import bounds

#: Rules name intervals of at most this many days (the engine adds them to event times).
MAX_RULE_DAYS = bounds.MAX_RULE_DAYS
DEFAULT_RULES_PATH = Path(__file__).resolve().parents[4] / "deploy" / "config" / "lifecycle.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AcquisitionRules(_Strict):
    signup: bool = True
    identify_with_email: bool = True
    visits: int = Field(default=3, ge=1)
    visits_within_days: int = Field(default=30, ge=1, le=MAX_RULE_DAYS)
    pre_purchase_ticket: bool = True


class ConversionRules(_Strict):
    purchases: int = Field(default=1, ge=1, le=1)


class RetentionRules(_Strict):
    purchases: int = Field(default=2, ge=2)


class LoyaltyRules(_Strict):
    purchases: int = Field(default=3, ge=2)
    purchases_within_days: int = Field(default=365, ge=1, le=MAX_RULE_DAYS)
    review_min_rating: int | None = Field(default=4, ge=1, le=5)
    nps_min_score: int | None = Field(default=9, ge=0, le=10)
    referral: bool = True


class AtRiskRules(_Strict):
    inactive_days: int = Field(default=60, ge=1, le=MAX_RULE_DAYS)
    # off (None) by default; with a fitted model, a customer whose P(alive) falls below it
    # moves to at_risk too (clm_domain.p_alive)
    p_alive_below: float | None = Field(default=None, gt=0, lt=1, allow_inf_nan=False)


class ChurnedRules(_Strict):
    inactive_days: int = Field(default=180, ge=1, le=MAX_RULE_DAYS)
    subscription_cancelled: bool = True


class RefundRules(_Strict):
    full_refund_of_only_order_to_acquisition: bool = True


class LifecycleRules(_Strict):
    """Every rule of the lifecycle model, with the documented defaults."""

    version: int = Field(default=1, ge=1, le=1)
    acquisition: AcquisitionRules = AcquisitionRules()
    conversion: ConversionRules = ConversionRules()
    retention: RetentionRules = RetentionRules()
    loyalty: LoyaltyRules = LoyaltyRules()
    at_risk: AtRiskRules = AtRiskRules()
    churned: ChurnedRules = ChurnedRules()
    refund: RefundRules = RefundRules()

    @model_validator(mode="after")
    def _consistent(self) -> LifecycleRules:
        if self.churned.inactive_days <= self.at_risk.inactive_days:
            raise ValueError("churned.inactive_days must be longer than at_risk.inactive_days")
        if self.loyalty.purchases <= self.retention.purchases - 1:
            raise ValueError("loyalty.purchases must be at least retention.purchases")
        return self


class RulesError(Exception):
    """The rule file cannot be used; the message names file, line and field."""


def _line_of(root: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """The 1-based line of the YAML node at ``loc`` (or of its nearest existing parent)."""
    node = root
    line = None if node is None else node.start_mark.line + 1
    for part in loc:
        if not isinstance(node, yaml.MappingNode):
            break
        for key, value in node.value:
            if key.value == str(part):
                node = value
                line = key.start_mark.line + 1
                break
        else:
            break
    return line


def parse_rules(text: str, *, source: str = "<rules>") -> LifecycleRules:
    """Validate rule YAML; raise RulesError naming ``source:line`` and the field."""
    try:
        root = yaml.compose(text)
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise RulesError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RulesError(f"{source}:1: the rule file must be a mapping of sections")
    try:
        return LifecycleRules.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            line = _line_of(root, loc)
            field = ".".join(str(p) for p in loc) or "(file)"
            problems.append(f"{source}:{line or 1}: {field}: {err['msg']}")
        raise RulesError("; ".join(problems)) from None


def load_rules(path: Path | None = None) -> LifecycleRules:
    """Load the rule file (default: the shipped ``deploy/config/lifecycle.yaml``).

    Without a path and without the repository's file (an installed package), the documented
    defaults apply — the same values as the shipped file (a test keeps them equal).
    """
    if path is None and not DEFAULT_RULES_PATH.exists():
        return LifecycleRules()
    target = path or DEFAULT_RULES_PATH
    try:
        text = target.read_text()
    except OSError as exc:
        raise RulesError(f"{target}: cannot read the rule file: {exc.strerror}") from None
    return parse_rules(text, source=str(target))
