"""A folder of runs as one table: a row per (run, cell) — or per capacity search — keyed by the cell's workload
fingerprint and the hardware fingerprint, with the run's time, git commit and versions, and the metrics with their
95% intervals. Incremental: ``history.parquet`` in the folder keeps what was read, and a run is read again only
when its manifest changed.

Software versions and the commit are columns, not keys: a series spans upgrades, which is what it is for. The
hardware (GPU models, the driver host's CPUs and the cluster's node shapes) is a key: a different machine is a
different series. Plain pyarrow reads each run's small summary files; the row tables are never opened."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from perfray.errors import UsageError

# summary columns kept per cell: the value and, where the summary has one, its 95% interval
METRICS = ("p50_ms", "p99_ms", "p999_ms", "achieved_qps", "failure_rate", "recall_mean", "capacity_qps")
INDEX_FILE = "history.parquet"


def fingerprint(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:12]


def hardware(manifest: dict) -> dict:
    """What the measurement ran on: GPU models, the driver host's CPUs, the cluster's node shapes."""
    nodes = sorted((n.get("cpus"), n.get("gpus")) for n in manifest.get("nodes") or [])
    host = manifest.get("host") or {}
    return {"gpus": (manifest.get("gpus") or {}).get("models"), "host_cpus": host.get("cpus"),
            "machine": host.get("machine"), "nodes": nodes}


def run_rows(run: Path, manifest: dict) -> list[dict]:
    """One row per cell of a finished run (per search of a capacity run)."""
    base = {"run_id": manifest.get("run_id", run.name), "path": str(run), "name": manifest.get("name"),
            "time_unix_s": manifest.get("created_unix_s"), "git_commit": manifest.get("git_commit"),
            "perfray": (manifest.get("versions") or {}).get("perfray"), "status": manifest.get("status"),
            "hardware": fingerprint(hardware(manifest)), "hardware_json": json.dumps(hardware(manifest))}
    cells = {c["cell"]: c for c in manifest.get("cells", [])}
    rows = []
    capacity = run / "capacity.parquet"
    if capacity.is_file():
        for row in pq.read_table(capacity).to_pylist():
            first = cells.get((row.get("step_cells") or [None])[0], {})
            workload = dict(first.get("workload") or {})
            workload.get("load", {}).pop("target_qps", None)  # the search set the rate
            rows.append({**base, "cell": -1, "search": row["search"], "workload": fingerprint(workload),
                         "label": _label(workload), "capacity_qps": row["capacity_qps"],
                         "capacity_qps_lo": row.get("capacity_lo"), "capacity_qps_hi": row.get("capacity_hi")})
        return rows
    summary = run / "summary.parquet"
    if not summary.is_file():
        return rows
    for row in pq.read_table(summary).to_pylist():
        workload = (cells.get(row["cell"]) or {}).get("workload") or {}
        out = {**base, "cell": row["cell"], "search": -1, "workload": fingerprint(workload),
               "label": _label(workload), "repeat": row.get("repeat", 0)}
        for metric in METRICS:
            out[metric] = _num(row.get(metric))
            out[f"{metric}_lo"], out[f"{metric}_hi"] = _num(row.get(f"{metric}_lo")), _num(row.get(f"{metric}_hi"))
        rows.append(out)
    return rows


def per_run(rows: list[dict], metric: str) -> list[dict]:
    """One row per (run, workload, hardware, search) for ``metric``: a run made with ``--repeat`` has a row per
    repeat, and its value becomes their geometric mean with the interval from the spread between them (t on the
    log values: run-to-run noise, which one repeat's own percentile interval does not hold); a run without repeats
    keeps its own value and interval."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        value = row.get(metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            key = (row["run_id"], row.get("workload"), row.get("hardware"), row.get("search", -1))
            groups.setdefault(key, []).append(row)
    out = []
    for members in groups.values():
        if len(members) == 1:
            out.append(members[0])
            continue
        values = np.array([m[metric] for m in members], dtype=np.float64)
        merged = {**members[0], "repeats": len(members)}
        if (values > 0).all():
            from scipy.stats import t

            logs = np.log(values)
            half = float(t.ppf(0.975, logs.size - 1) * logs.std(ddof=1) / math.sqrt(logs.size))
            merged.update({metric: math.exp(logs.mean()), f"{metric}_lo": math.exp(logs.mean() - half),
                           f"{metric}_hi": math.exp(logs.mean() + half)})
        else:  # a zero among them (no failures, say): the mean, and no interval
            merged.update({metric: float(values.mean()), f"{metric}_lo": math.nan, f"{metric}_hi": math.nan})
        out.append(merged)
    return out


def _label(workload: dict) -> str:
    """A short name for people: system, GPUs, rate, k."""
    search, load = workload.get("search") or {}, workload.get("load") or {}
    rate = load.get("target_qps")
    return (f"{workload.get('system', 'gpu_search')} {search.get('n_gpus', '?')} GPU k={search.get('k', '?')}"
            + (f" @ {rate:g} QPS" if rate is not None else ""))


def _num(value) -> float:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else math.nan


def index_runs(results: Path) -> pa.Table:
    """Every run under ``results`` (folders with a manifest), read once: ``history.parquet`` keeps each run's rows
    with its manifest's modification time, and only new or changed runs are read."""
    results = Path(results)
    if not results.is_dir():
        raise UsageError(f"{results}: not a folder of runs")
    index_path = results / INDEX_FILE
    kept: dict[str, list[dict]] = {}
    if index_path.is_file():
        for row in pq.read_table(index_path).to_pylist():
            kept.setdefault(row["path"], []).append(row)
    rows: list[dict] = []
    for manifest_path in sorted(results.glob("*/manifest.json")):
        run = manifest_path.parent
        stamp = manifest_path.stat().st_mtime
        old = kept.get(str(run))
        if old and old[0].get("manifest_mtime") == stamp:
            rows += old
            continue
        try:
            manifest = json.loads(manifest_path.read_text())
        except ValueError:
            continue  # a run being written: read next time
        if manifest.get("status") not in ("complete", "degraded"):
            continue
        rows += [{**r, "manifest_mtime": stamp} for r in run_rows(run, manifest)]
    keys = list(dict.fromkeys(k for r in rows for k in r))  # cell rows and capacity rows have their own columns
    table = (pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in rows]) if rows
             else pa.table({"run_id": pa.array([], pa.string())}))
    if rows:
        tmp = index_path.with_suffix(".tmp")
        pq.write_table(table, tmp)
        tmp.replace(index_path)
    return table
