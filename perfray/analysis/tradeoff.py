"""What recall a system's speed bought: cells that differ only in their search parameters (``search.params``, e.g.
HNSW's ``ef``) form one trade-off curve of recall against p99 latency at the offered rate, or against the capacity
at the SLOs when the run searched capacity. The report marks each curve's Pareto front and its operating points:
the fastest setting that reaches recall 0.90, and 0.95 (``OPERATING_RECALLS``)."""

from __future__ import annotations

import math
from pathlib import Path

OPERATING_RECALLS = (0.90, 0.95)
# Summary labels that make two cells different experiments (everything a curve's points must share).
_SAME = ("system", "system_name", "k", "dataset", "filter_selectivity", "filter_field", "n_gpus", "topology", "backend", "op_mix",
         "arrival", "query_skew", "load_actors", "concurrency", "batch_max", "batch_window_ms", "hops", "cache",
         "repeat")


def _finite(value) -> bool:
    return value is not None and isinstance(value, int | float) and math.isfinite(value)


def tradeoff_curves(summary: list[dict], manifest: dict) -> list[dict]:
    """One curve per experiment swept over search parameters: ``{"name", "axis", "points": [...]}``, points
    sorted by recall, each ``{"params", "recall", "value", "p50_ms", "p99_ms", "cells", "pareto",
    "operating": [0.9, ...]}``. ``axis`` is ``capacity_qps`` (higher is better) in a capacity run, else ``p99_ms``."""
    searches = (manifest.get("capacity") or {}).get("searches") or []
    axis = "capacity_qps" if searches else "p99_ms"
    groups: dict[tuple, list[dict]] = {}
    if searches:
        for search in searches:
            steps = [r for r in summary if r.get("capacity_search") == search["search"]]
            if not steps:
                continue
            recalls = [r["recall_mean"] for r in steps if _finite(r.get("recall_mean"))]
            point = {"params": steps[-1].get("search_params", ""), "recall": sum(recalls) / len(recalls)
                     if recalls else math.nan, "value": search.get("capacity_qps", math.nan),
                     "p50_ms": math.nan, "p99_ms": math.nan, "cells": [r["cell"] for r in steps]}
            groups.setdefault(_key(steps[-1]), []).append(point)
    else:
        for row in summary:
            point = {"params": row.get("search_params", ""), "recall": row.get("recall_mean", math.nan),
                     "value": row.get("p99_ms", math.nan), "p50_ms": row.get("p50_ms", math.nan),
                     "p99_ms": row.get("p99_ms", math.nan), "cells": [row["cell"]]}
            groups.setdefault(_key(row) + (row.get("target_qps"),), []).append(point)
    curves = []
    for key, points in groups.items():
        if len({p["params"] for p in points}) < 2 or not any(_finite(p["recall"]) for p in points):
            continue  # not swept over search parameters, or nothing to score
        points.sort(key=lambda p: (p["recall"] if _finite(p["recall"]) else -1.0))
        _mark(points, higher_is_better=axis == "capacity_qps")
        curves.append({"name": _name(key, points), "axis": axis, "points": points})
    return curves


def _key(row: dict) -> tuple:
    return tuple(row.get(name) for name in _SAME)


def _name(key: tuple, points: list[dict]) -> str:
    labels = dict(zip(_SAME, key, strict=False))
    return f"{labels['system']} (k={labels['k']}, {labels['n_gpus']} GPU)" if labels.get("system_name") == \
        "gpu_search" else f"{labels['system']} (k={labels['k']})"


def _mark(points: list[dict], higher_is_better: bool) -> None:
    """Pareto front (no other point has at least the recall and at least as good a value, one strictly better)
    and the operating point per OPERATING_RECALLS (the best value among the points reaching that recall)."""
    def better(a: float, b: float) -> bool:
        return a > b if higher_is_better else a < b

    def score(p) -> float:
        value = p["value"]
        if not _finite(value):
            return -math.inf if higher_is_better else math.inf
        return value

    for p in points:
        p["operating"] = []
        p["pareto"] = _finite(p["recall"]) and _finite(p["value"]) and not any(
            q is not p and _finite(q["recall"]) and _finite(q["value"]) and q["recall"] >= p["recall"]
            and not better(p["value"], q["value"]) and (q["recall"] > p["recall"] or better(q["value"], p["value"]))
            for q in points)
    for target in OPERATING_RECALLS:
        reaching = [p for p in points if _finite(p["recall"]) and p["recall"] >= target and _finite(p["value"])]
        if reaching:
            best = max(reaching, key=score) if higher_is_better else min(reaching, key=score)
            best["operating"].append(target)


def tradeoff_section(curves: list[dict], figure: Path | None) -> list[str]:
    if not curves:
        return []
    lines = ["", "## Recall and what it cost", "",
             "Cells that differ only in their search parameters: the recall each setting reached (exact ground "
             "truth) beside its " + ("capacity at the SLOs" if curves[0]["axis"] == "capacity_qps" else
                                     "latency at the offered rate") + ". Pareto: no other setting is both at "
             f"least as accurate and at least as fast. Operating points: the fastest setting reaching recall "
             f"{' and '.join(f'{r:.2f}' for r in OPERATING_RECALLS)}.", ""]
    for curve in curves:
        capacity = curve["axis"] == "capacity_qps"
        lines += [f"**{curve['name']}**", "",
                  "| search params | recall | " + ("capacity QPS" if capacity else "p50 ms | p99 ms") +
                  " | cells | Pareto | operating point |",
                  "|---|---|---|" + ("" if capacity else "---|") + "---|---|---|"]
        for p in curve["points"]:
            value = f"{p['value']:,.0f}" if capacity and _finite(p["value"]) else \
                f"{_fmt(p['p50_ms'])} | {_fmt(p['p99_ms'])}"
            marks = ", ".join(f"recall ≥ {r:.2f}" for r in p["operating"]) or "–"
            lines.append(f"| {p['params'] or '(store default)'} | {_fmt(p['recall'], 4)} | {value} | "
                         f"{', '.join(str(c) for c in p['cells'])} | {'✓' if p['pareto'] else ''} | {marks} |")
        missing = [r for r in OPERATING_RECALLS if not any(r in p["operating"] for p in curve["points"])]
        if missing:
            lines.append(f"\nNo setting reached recall {' or '.join(f'{r:.2f}' for r in missing)}.")
        lines.append("")
    if figure is not None:
        lines.append(f"![{figure.stem}]({figure.name})")
    return lines


def _fmt(value, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if _finite(value) else "–"


def tradeoff_figure(curves: list[dict], out: Path) -> Path | None:
    """recall_tradeoff.png: each curve's settings (value against recall), its Pareto front joined, the operating
    points ringed and labelled."""
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for curve in curves:
        pts = [p for p in curve["points"] if _finite(p["recall"]) and _finite(p["value"])]
        front = [p for p in pts if p["pareto"]]
        (line,) = ax.plot([p["recall"] for p in front], [p["value"] for p in front], "-", label=curve["name"])
        ax.scatter([p["recall"] for p in pts], [p["value"] for p in pts], color=line.get_color(), s=18)
        for p in pts:
            ax.annotate(p["params"] or "default", (p["recall"], p["value"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
            if p["operating"]:
                ax.scatter([p["recall"]], [p["value"]], s=140, facecolors="none", edgecolors=line.get_color())
    for target in OPERATING_RECALLS:
        ax.axvline(target, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("recall (exact ground truth)")
    ax.set_ylabel("capacity at the SLOs (QPS)" if curves[0]["axis"] == "capacity_qps" else "p99 latency (ms)")
    ax.set_title("Recall and what it cost (operating points ringed at recall ≥ "
                 + " / ".join(f"{r:.2f}" for r in OPERATING_RECALLS) + ")")
    ax.legend(fontsize=8)
    path = out / "recall_tradeoff.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
