"""The offered load of a cell: its rate, arrival process, phases, load actors and clients. Kept apart from
``perfray.config`` (which uses it, and exports these names too) so each stays small."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from perfray.config_model import Strict


class Phase(Strict):
    """A stretch of the rate schedule. ``rate`` multiplies the cell's ``target_qps`` unless ``qps`` is set;
    ``rate_end``/``qps_end`` make it a linear ramp."""

    name: str = Field(min_length=1, description="the phase's name (summaries, targets' where: {phase: …})")
    duration_s: float = Field(gt=0, description="how long the phase lasts")
    rate: float = Field(1.0, ge=0, description="multiplies the cell's target_qps")
    rate_end: float | None = Field(None, ge=0, description="ramp linearly from rate to this over the phase")
    qps: float | None = Field(None, ge=0, description="an absolute rate instead of rate")
    qps_end: float | None = Field(None, ge=0, description="ramp linearly from qps to this over the phase")
    measured: bool = Field(True, description="false: the phase is warm-up, left out of the cell's summary")


class WriteSpec(Strict):
    """Writes mixed into a cell's schedule (``perfray.data.writes``): open loop like reads, at ``rate`` per second
    through every phase, each a row with ``op`` = ``kind``. ``freshness_sample`` writes, spread over the cell, are
    followed by probe searches at the written vector until the store shows the write (an insert or upsert found
    as the nearest item, a delete gone): their rows carry ``freshness_ns``, the time from the write's
    acknowledgement until a search first showed it."""

    rate: float = Field(gt=0, description="writes per second, across the load actors")
    kind: Literal["insert", "upsert", "delete"] = Field(
        "insert", description="what each write does: insert a new item, upsert an existing one, or delete "
                              "one")
    freshness_sample: int = Field(20, ge=0, description="writes per cell followed by freshness probes")
    probe_interval_ms: float = Field(1.0, gt=0, description="time between freshness probes of a write")
    probe_limit_ms: float = Field(1_000.0, gt=0, description="a write not shown by then has no freshness")
    visibility_ms: float = Field(0.0, ge=0, description="how long the store states a write may take to show: a "
                                 "read sent later that returns a deleted item is a stale read")


class LoadSpec(Strict):
    target_qps: float = Field(
        500.0, gt=0, description="offered requests per second across the load actors (phases' rate "
                                 "multiplies it)")
    scale_with_gpus: bool = Field(False, description="offer target_qps per GPU (weak scaling)")
    duration_s: float = Field(5.0, gt=0, description="measured seconds (when no phases are given)")
    warmup_s: float = Field(1.0, ge=0, description="unmeasured seconds before them")
    arrival: str = Field("poisson", description="constant, poisson, gamma:<cv>, pareto:<alpha> or trace:<file>")
    phases: tuple[Phase, ...] | None = Field(
        None, description="explicit rate phases instead of warm-up + sustained (ramps, bursts)")
    actors: int | str = Field(
        1, description="load actors; auto: enough to keep each under half its client path's calibrated ceiling")
    batch_window_ms: float = Field(
        1.0, ge=0, description="micro-batching towards GPU search actors: a request waits at most this long "
                               "for others")
    batch_max: int = Field(64, ge=1, description="most requests in one micro-batch")
    max_in_flight: int = Field(
        2048, ge=1, description="requests in flight per load actor beyond which new ones become dropped "
                                "rows")
    timeout_ms: float = Field(2_000.0, gt=0, description="a reply slower than this is a timeout row")
    op_mix: Literal["simple", "mixed", "complex"] = Field(
        "simple", description="k and queries-per-request mix: simple, mixed or complex")
    concurrency: int = Field(8, ge=1, le=1024, description="client threads per load actor (database systems)")
    query_skew: str = Field("uniform", description="which query-pool rows are asked: uniform, or zipf:<s> "
                            "(popularity 1/rank**s over a seeded order of the pool)")
    writes: WriteSpec | None = Field(None, description="writes while searching: {rate, kind: insert|upsert|delete}")
    seed: int = Field(0, description="seed of the arrival schedule, query choice and op mix")

    @field_validator("phases")
    @classmethod
    def _phases(cls, value):
        if value is not None and len(value) == 0:
            raise ValueError("empty; list phases, or leave it out for warm-up then duration_s")
        return value

    @field_validator("arrival")
    @classmethod
    def _arrival(cls, value):
        kind, arg = parse_arrival(value)
        if kind == "trace":
            load_trace(arg)  # a missing or unusable file is a config error now, not a dead load actor later
        return value

    @field_validator("query_skew")
    @classmethod
    def _skew(cls, value):
        parse_skew(value)
        return value

    @field_validator("actors")
    @classmethod
    def _actors(cls, value):
        if value == "auto" or (isinstance(value, int) and value >= 1):
            return value
        raise ValueError(f"expected a number of load actors >= 1 or auto, got {value!r}")

    def phase_plan(self) -> tuple[Phase, ...]:
        """Explicit phases, or warm-up (unmeasured) + sustained at ``target_qps``."""
        if self.phases:
            return self.phases
        plan = []
        if self.warmup_s > 0:
            plan.append(Phase(name="warmup", duration_s=self.warmup_s, measured=False))
        plan.append(Phase(name="sustained", duration_s=self.duration_s))
        return tuple(plan)


def phase_rates(phase: Phase, target_qps: float) -> tuple[float, float]:
    """(start, end) rate of a phase in QPS."""
    start = phase.qps if phase.qps is not None else phase.rate * target_qps
    if phase.qps_end is not None:
        end = phase.qps_end
    elif phase.rate_end is not None:
        end = phase.rate_end * target_qps
    else:
        end = start
    return start, end


SIMPLE_ARRIVALS = ("constant", "poisson")
ARRIVAL_FORMS = "constant, poisson, gamma:<cv>, pareto:<alpha> (alpha > 1) or trace:<file>"


def parse_arrival(text: str) -> tuple[str, float | Path | None]:
    """``poisson`` → (poisson, None); ``gamma:2`` → (gamma, 2.0); ``trace:t.csv`` → (trace, Path). ValueError
    names what was expected."""
    kind, sep, arg = str(text).partition(":")
    if kind in SIMPLE_ARRIVALS and not sep:
        return kind, None
    if kind in ("gamma", "pareto") and sep:
        try:
            value = float(arg)
        except ValueError:
            value = float("nan")
        if kind == "gamma" and np.isfinite(value) and value > 0:
            return kind, value
        if kind == "pareto" and np.isfinite(value) and value > 1:
            return kind, value
        want = "a coefficient of variation > 0" if kind == "gamma" else "a shape alpha > 1 (a finite mean)"
        raise ValueError(f"arrival {text!r}: expected {kind}:<{want}>")
    if kind == "trace" and arg:
        return kind, Path(arg)
    raise ValueError(f"arrival {text!r}: expected {ARRIVAL_FORMS}")


@functools.lru_cache(maxsize=8)
def load_trace(path: Path) -> np.ndarray:
    """A trace's arrival offsets (s), sorted and starting at 0; ValueError naming the file when unusable."""
    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            if table.num_columns != 1:
                raise ValueError(f"{path}: expected one column of arrival offsets, found {table.num_columns}")
            values = table.column(0).to_numpy(zero_copy_only=False).astype(np.float64)
        else:
            text = path.read_text(encoding="utf-8").split()
            if text and not _is_number(text[0]):
                text = text[1:]  # a header
            values = np.array([float(v) for v in text], dtype=np.float64)
    except OSError as err:
        raise ValueError(f"{path}: cannot read the trace ({err.strerror})") from None
    except (UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{path}: expected one column of arrival offsets in seconds ({err})") from None
    if values.size < 2 or not np.isfinite(values).all():
        raise ValueError(f"{path}: expected at least two finite arrival offsets in seconds")
    values = np.sort(values)
    if values[-1] <= values[0]:
        raise ValueError(f"{path}: the trace's offsets span no time")
    return values - values[0]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_skew(text: str) -> float:
    """``uniform`` → 0; ``zipf:<s>`` → s (> 0). ValueError names what was expected."""
    if text == "uniform":
        return 0.0
    kind, sep, arg = str(text).partition(":")
    try:
        value = float(arg) if kind == "zipf" and sep else float("nan")
    except ValueError:
        value = float("nan")
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"query skew {text!r}: expected uniform or zipf:<s> with s > 0 (e.g. zipf:1.1)")
    return value
