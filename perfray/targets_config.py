"""What a run checks: targets on summary metrics (per cell, or per phase) and the SLOs of a capacity search.
Kept apart from ``perfray.config`` (which uses them) so each stays small."""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TargetSpec(_Strict):
    """A threshold on a summary column, checked for every cell (or those whose summary labels match
    ``where``, e.g. ``{system_name: hybrid}``; ``{phase: burst}`` checks that phase's own figures)."""

    metric: str = Field(description="a summary column, e.g. p99_ms, failure_rate, recall_mean, qps_ratio")
    max: float | None = Field(None, description="the metric must be at most this")
    min: float | None = Field(None, description="the metric must be at least this")
    must_pass: bool = Field(True, description="false: reported, never fails the run")
    where: dict[str, Any] | None = Field(
        None, description="only cells whose summary labels match, e.g. {system_name: hybrid}; {phase: "
                          "burst} checks that phase")

    @model_validator(mode="after")
    def _one_bound(self) -> TargetSpec:
        from perfray.schema import SUMMARY_METRICS

        if self.metric not in SUMMARY_METRICS:
            raise ValueError(f"unknown metric {self.metric!r}; known: {', '.join(SUMMARY_METRICS)}")
        if (self.max is None) == (self.min is None):
            raise ValueError("give exactly one of 'max' or 'min'")
        return self


SLO_PATTERN = "METRIC<=BOUND or METRIC>=BOUND, e.g. p99_ms<=10"


def parse_slo(text: str) -> TargetSpec:
    """``p99_ms<=10`` / ``qps_ratio>=0.99`` → a must-pass target on that summary metric."""
    for op, bound in (("<=", "max"), (">=", "min")):
        metric, sep, value = str(text).partition(op)
        if sep:
            try:
                number = float(value)
            except ValueError:
                break
            if not math.isfinite(number):
                break
            try:
                return TargetSpec.model_validate({"metric": metric.strip(), bound: number})
            except ValidationError as err:
                first = err.errors()[0]["msg"].removeprefix("Value error, ")
                raise ValueError(f"SLO {text!r}: {first}") from None
    raise ValueError(f"SLO {text!r}: expected {SLO_PATTERN}")


class CapacitySpec(_Strict):
    """Capacity search: for every cell of the grid, the highest offered rate at which every SLO holds (open-loop
    steps grown geometrically until one breaks, then bisected to ``resolution``)."""

    slo: tuple[str, ...] = Field(
        ("p99_ms<=10", "failure_rate<=0.01"), description="SLOs every step must meet, as METRIC<=BOUND or "
                                                          "METRIC>=BOUND (e.g. p99_ms<=10)")
    min_qps: float = Field(100.0, gt=0, description="the first step's rate")
    max_qps: float = Field(100_000.0, gt=0, description="the highest rate tried")
    growth: float = Field(2.0, gt=1, description="rate factor between steps until an SLO breaks")
    resolution: float = Field(0.02, gt=0, lt=1, description="stop when (above - below) / below is this small")
    step_s: float = Field(5.0, gt=0, description="measured seconds of a first step at a rate")
    max_step_s: float = Field(40.0, gt=0, description="an undecided step is re-run longer, up to this")
    warmup_s: float = Field(1.0, ge=0, description="unmeasured seconds before each step")
    max_steps: int = Field(30, ge=1, description="most steps per search")
    target_qps: float | None = Field(None, gt=0, description="exit 1 unless every search's capacity reaches it")

    @field_validator("slo")
    @classmethod
    def _slos(cls, value):
        if not value:
            raise ValueError(f"needs at least one SLO ({SLO_PATTERN})")
        for text in value:
            parse_slo(text)
        return value

    @model_validator(mode="after")
    def _range(self) -> CapacitySpec:
        if self.min_qps > self.max_qps:
            raise ValueError(f"min_qps ({self.min_qps:g}) is above max_qps ({self.max_qps:g})")
        if self.step_s > self.max_step_s:
            raise ValueError(f"step_s ({self.step_s:g}) is above max_step_s ({self.max_step_s:g})")
        return self

    def targets(self) -> tuple[TargetSpec, ...]:
        return tuple(parse_slo(text) for text in self.slo)
