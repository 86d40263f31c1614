"""Capacity at an SLO: the highest offered rate at which every SLO holds, found with open-loop steps.

The search grows the rate geometrically from ``min_qps`` until a step breaks an SLO, then bisects between the
highest rate shown to hold and the lowest that broke until they are ``resolution`` apart. A percentile SLO is
judged on its confidence interval: a step whose interval straddles the bound is re-run longer (as long as
its samples say would decide it, up to ``max_step_s``); still undecided, it counts against the rate (capacity
is what was *shown* to hold). Latency counts from the intended send time, so a late load generator only adds to
it: a step that meets its SLOs meets them however late the pacer sent. A step that did not meet them says nothing
about the system when its generator sent materially late and the break lies within the generator's worst lateness
of the bound: it is run once more at the same rate (one stall of a busy host is not a limit), and late again the
search stops there and says the generator limited it.

``CapacitySearch`` is plain state (no Ray, no clock): the driver asks ``next_step()``, measures the step as a
cell, and hands the cell's summary row to ``record()``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from perfray.analysis.intervals import PERCENTILES, order_statistic_indices
from perfray.analysis.summary import check_targets
from perfray.schema import GENERATOR_LAG_LIMIT_MS
from perfray.targets_config import CapacitySpec

MEETS, BREAKS, UNDECIDED, GENERATOR = "meets", "breaks", "inconclusive", "generator"


@dataclass(frozen=True)
class Step:
    qps: float
    duration_s: float


@dataclass
class StepResult:
    qps: float
    duration_s: float
    cell: int
    outcome: str
    broken: list[str] = field(default_factory=list)  # SLOs missed (or undecided) at this step
    samples_to_decide: float | None = None
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    p999_ms: float = math.nan
    p99_lo_ms: float = math.nan
    p99_hi_ms: float = math.nan
    failure_rate: float = math.nan
    achieved_qps: float = math.nan
    generator_lateness_p99_ms: float = math.nan
    generator_lateness_max_ms: float = math.nan


def judge_step(row: dict, spec: CapacitySpec) -> tuple[str, list[str], float | None]:
    """(outcome, SLOs not shown met, samples that would decide the undecided ones) of one step's summary row."""
    verdicts = check_targets([row], spec.targets())
    missed = [v for v in verdicts if not v["passed"]]
    climbing = not missed and row.get("drift_check") == "warn" and row.get("drift", 0.0) > 0
    if not missed and not climbing:
        return MEETS, [], None  # however late the generator sent: its lateness is in every latency
    if generator_may_explain(row, spec, [v["metric"] for v in missed]):
        return GENERATOR, [], None
    if climbing:  # latency still climbing: not shown to hold; run longer
        return UNDECIDED, [f"not steady (p50 {row['drift']:+.0%} over the step)"], None
    names = [f"{v['metric']} {v['bound']}" for v in missed]
    if all(v.get("inconclusive") for v in missed):
        more = [v.get("samples_to_decide") for v in missed]
        return UNDECIDED, names, max((m for m in more if m is not None), default=None)
    return BREAKS, names, None


def generator_may_explain(row: dict, spec: CapacitySpec, missed: list[str]) -> bool:
    """Whether the generator's lateness may be why a step missed the SLOs ``missed`` (none: its latency climbed
    over the step): the pacers' lateness p99 is material and some missed latency bound is not shown broken by the
    system itself. Each request's latency is its lateness plus the system's part, so the system's own percentile is
    at least the low end of the measured one's interval less the worst lateness: when that still exceeds the bound,
    the system broke it. A failure rate is the system's (a timeout counts from the send, not the intent)."""
    if not row.get("generator_lateness_p99_ms", 0.0) > material_lateness_ms(spec):
        return False
    worst = row.get("generator_lateness_max_ms", math.nan)
    worst = worst if worst is not None and math.isfinite(worst) else row["generator_lateness_p99_ms"]
    bounds = {t.metric: t.max for t in spec.targets() if t.metric.endswith("_ms") and t.max is not None}
    return not missed or any(m in bounds and not _num(row.get(f"{m}_lo")) - worst > bounds[m] for m in missed)


def material_lateness_ms(spec: CapacitySpec) -> float:
    """How late (p99) the generator may send before a step that missed its SLOs may have missed them by its doing:
    1 ms, or a tenth of the tightest latency SLO when that is larger (2 ms of lateness cannot decide a 20 ms p99)."""
    bounds = [t.max for t in spec.targets() if t.metric.endswith("_ms") and t.max is not None]
    return max(GENERATOR_LAG_LIMIT_MS, 0.1 * min(bounds)) if bounds else GENERATOR_LAG_LIMIT_MS


class CapacitySearch:
    def __init__(self, spec: CapacitySpec) -> None:
        self.spec = spec
        self.steps: list[StepResult] = []
        self.below: float | None = None  # highest rate shown to hold
        self.above: float | None = None  # lowest rate that broke (or stayed undecided)
        self.limited_by: str | None = None
        # a step gives every percentile SLO enough samples for both ends of its interval to exist
        self._min_samples = max((_samples_for_interval(PERCENTILES[t.metric]) for t in spec.targets()
                                 if t.metric in PERCENTILES), default=0)
        self._next: Step | None = self._step(min(spec.min_qps, spec.max_qps))

    def _step(self, qps: float) -> Step:
        return Step(qps, min(self.spec.max_step_s, max(self.spec.step_s, 1.2 * self._min_samples / qps)))

    def next_step(self) -> Step | None:
        if len(self.steps) >= self.spec.max_steps and self._next is not None:
            self._next, self.limited_by = None, self.limited_by or "max_steps"
        return self._next

    def record(self, step: Step, row: dict, cell: int) -> StepResult:
        outcome, broken, more = judge_step(row, self.spec)
        result = StepResult(
            qps=step.qps, duration_s=step.duration_s, cell=cell, outcome=outcome, broken=broken,
            samples_to_decide=more, **{k: _num(row.get(k)) for k in (
                "p50_ms", "p99_ms", "p999_ms", "failure_rate", "achieved_qps", "generator_lateness_p99_ms",
                "generator_lateness_max_ms")},
            p99_lo_ms=_num(row.get("p99_ms_lo")), p99_hi_ms=_num(row.get("p99_ms_hi")))
        self.steps.append(result)
        self._next = self._after(step, outcome, more)
        return result

    def _after(self, step: Step, outcome: str, more: float | None) -> Step | None:
        spec = self.spec
        if outcome == GENERATOR:  # once more at the same rate: one stall of a busy host is not a limit
            before = self.steps[-2] if len(self.steps) > 1 else None
            if before is None or before.outcome != GENERATOR or before.qps != step.qps:
                return step
            self.limited_by = "generator"
            return None
        undecided = outcome == UNDECIDED
        if undecided:
            longer = self._longer(step, more)
            if longer is not None:
                return longer
            outcome = BREAKS  # not shown to hold in the longest step allowed
        if outcome == MEETS:
            self.below = max(self.below or 0.0, step.qps)
        else:
            self.above = min(self.above or math.inf, step.qps)
        if self.below is None:  # the first rate already broke, or was never shown to hold either way
            self.limited_by = "undecided" if undecided else "min_qps"
            return None
        if self.above is None:
            if self.below >= spec.max_qps:
                self.limited_by = "max_qps"
                return None
            return self._step(min(self.below * spec.growth, spec.max_qps))
        if (self.above - self.below) / self.below <= spec.resolution:
            self.limited_by = "slo"
            return None
        return self._step((self.below + self.above) / 2)

    def _longer(self, step: Step, more: float | None) -> Step | None:
        """The same rate again, long enough for the samples its interval needs (at least twice as long)."""
        if step.duration_s >= self.spec.max_step_s:
            return None
        needed = 1.2 * more / step.qps if more is not None and math.isfinite(more) else 0.0
        return Step(step.qps, min(self.spec.max_step_s, max(2 * step.duration_s, needed)))

    def result(self) -> dict:
        """The capacity (the highest rate shown to hold; NaN when none did), its bracket and how it ended."""
        below = self.below if self.below is not None else math.nan
        above = self.above if self.above is not None else math.nan
        target = self.spec.target_qps
        return {"capacity_qps": below, "capacity_lo": below, "capacity_hi": above,
                "limited_by": self.limited_by or "unfinished", "steps": len(self.steps),
                "slo": "; ".join(self.spec.slo), "target_qps": target if target is not None else math.nan,
                "meets_target": None if target is None else bool(below >= target)}

    def step_rows(self) -> list[dict]:
        return [asdict(s) for s in self.steps]


def _samples_for_interval(q: float) -> int:
    """The fewest samples for which the q-quantile's 95% interval has both ends (e.g. 368 for p99)."""
    n = 1
    while None in order_statistic_indices(n, q):
        n = int(n * 1.05) + 1
    lo, hi = n // 2, n
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if None in order_statistic_indices(mid, q) else (lo, mid)
    return lo


def _num(value) -> float:
    return math.nan if value is None else float(value)
