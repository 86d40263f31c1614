"""What a run checks: targets on summary metrics (per cell, or per phase) and the SLOs of a capacity search.
Kept apart from ``perfray.config`` (which uses them) so each stays small."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from perfray.config_model import Strict


class TargetSpec(Strict):
    """A threshold on a summary column, checked for every cell (or those whose summary labels match
    ``where``, e.g. ``{system_name: hybrid}``; ``{phase: burst}`` checks that phase's own figures). A bound no value
    of the metric meets is refused (a latency at or below 0, a failure rate below 0, a recall or share above 1)."""

    metric: str = Field(description="a summary column, e.g. p99_ms, failure_rate, recall_mean, qps_ratio")
    max: float | None = Field(None, description="the metric must be at most this")
    min: float | None = Field(None, description="the metric must be at least this")
    must_pass: bool = Field(True, description="false: reported, never fails the run")
    where: dict[str, Any] | None = Field(
        None, description="only cells whose summary labels match, e.g. {system_name: hybrid}; {phase: "
                          "burst} checks that phase")

    @model_validator(mode="after")
    def _one_bound(self) -> TargetSpec:
        _known(self.metric)
        if (self.max is None) == (self.min is None):
            raise ValueError("give exactly one of 'max' or 'min'")
        name, value = ("max", self.max) if self.max is not None else ("min", self.min)
        _passable(self.metric, name, value)
        return self


def _known(metric: str) -> None:
    from perfray.schema import SUMMARY_METRICS

    if metric not in SUMMARY_METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(SUMMARY_METRICS)}")


def _passable(metric: str, name: str, value: float, at_most: bool | None = None) -> None:
    """Refuse a bound (``max``, ``min``, or an SLO's ``goal``/``stretch``: ``at_most`` says which way; finite, as
    every config number is) that no value of the metric meets: a target no system could pass."""
    from perfray.schema import metric_range

    at_most = name == "max" if at_most is None else at_most
    low, high, low_occurs = metric_range(metric)
    if at_most and (value < low or (value == low and not low_occurs)):
        raise ValueError(f"{metric} {name} {value:g}: {metric} is never {'below' if low_occurs else 'at or below'} "
                         f"{low:g}, so no system could meet it")
    if not at_most and value > high:
        raise ValueError(f"{metric} {name} {value:g}: {metric} is never above {high:g}, so no system could meet it")


class SloSpec(Strict):
    """A service-level objective of the plan: a goal (must be met: a missed goal fails the run, like a target) and
    optionally a stretch goal (reported apart, never fails the run) on one summary metric, judged as targets are
    (a percentile on its whole 95% interval, "inconclusive" when it straddles the bound)."""

    metric: str = Field(description="a summary column, e.g. p99_ms, failure_rate, achieved_qps")
    goal: float = Field(description="the objective")
    stretch: float | None = Field(None, description="the stretch objective: at least as strict as the goal")
    better: Literal["lower", "higher"] | None = Field(
        None, description="which way is better; default from the metric (higher for rates of service, recall, "
                          "speedups and ratios, lower for latencies and failures)")
    where: dict[str, Any] | None = Field(
        None, description="only cells (or with phase: that phase) whose summary labels match, as for targets")

    @model_validator(mode="after")
    def _consistent(self) -> SloSpec:
        _known(self.metric)
        for name, value in (("goal", self.goal), ("stretch", self.stretch)):
            if value is not None:
                _passable(self.metric, name, value, at_most=self.lower)
        if self.stretch is not None and (self.stretch > self.goal if self.lower else self.stretch < self.goal):
            raise ValueError(f"slo {self.metric}: stretch {self.stretch:g} is less strict than goal {self.goal:g} "
                             f"({'lower' if self.lower else 'higher'} is better)")
        return self

    @property
    def lower(self) -> bool:
        from perfray.schema import HIGHER_IS_BETTER

        return self.better == "lower" if self.better else self.metric not in HIGHER_IS_BETTER

    def targets(self) -> list[tuple[str, TargetSpec]]:
        """("goal", its must-pass target) and ("stretch", its advisory one), when set."""
        bound = "max" if self.lower else "min"
        return [(kind, TargetSpec(metric=self.metric, where=self.where, must_pass=kind == "goal", **{bound: value}))
                for kind, value in (("goal", self.goal), ("stretch", self.stretch)) if value is not None]


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


class CapacitySpec(Strict):
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
    sizing_qps: float | None = Field(None, gt=0, description="the rate to size for: the GPUs it needs at these SLOs, "
                                     "N [lo, hi] from the USL fitted to the capacities (default: target_qps)")

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
