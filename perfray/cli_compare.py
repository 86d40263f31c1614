"""``perfray compare``: a candidate run against a baseline run (speedups with intervals), or with
``--baseline-history`` a new run against the earlier runs of its series (a CI gate)."""

from __future__ import annotations

import math

from perfray.errors import UsageError


def run_compare_command(args) -> int:
    from perfray.analysis.compare import compare

    if args.baseline_history is not None:
        return run_gate_command(args)
    if len(args.runs) != 2:
        raise UsageError(f"compare: expected BASELINE CANDIDATE (two runs), got {len(args.runs)}; or "
                         "--baseline-history RESULTS_DIR RUN")
    args.baseline, args.candidate = args.runs
    if not 0.5 <= args.confidence < 1:
        raise UsageError(f"--confidence: expected a level in [0.5, 1), got {args.confidence}")
    if not (math.isfinite(args.min_speedup) and args.min_speedup > 0):  # <= 0: every candidate would meet it
        raise UsageError(f"--min-speedup: expected a ratio above 0 (1.5: 50% better; 0.9: at most 10% worse), "
                         f"got {args.min_speedup}")
    from perfray.analysis.distributions import shifts_text

    path, rows = compare(args.baseline, args.candidate, args.metric, args.min_speedup, args.confidence)
    for r in rows:
        print(f"cell {r['cell']:>3} {args.metric}: {r['point']:.2f}x (interval {r['low']:.2f}-{r['high']:.2f}, "
              f"{r['method']}) {r['verdict']}")
        print(f"         whole distribution (candidate / baseline): {shifts_text(r['distribution'])}")
    print(f"comparison: {path}")
    return 0 if all(r["verdict"] == "meets" for r in rows) else 1


def run_gate_command(args) -> int:
    from perfray.history.gate import MAGNITUDE, gate

    if len(args.runs) != 1:
        raise UsageError(f"compare --baseline-history: expected one run to judge, got {len(args.runs)}")
    if args.magnitude is not None and not (math.isfinite(args.magnitude) and args.magnitude >= 0):
        raise UsageError(f"--magnitude: expected a share >= 0 (0.05: a 5% change), got {args.magnitude}")
    metrics = tuple(m.strip() for m in args.metric.split(",") if m.strip())
    verdicts = gate(args.baseline_history, args.runs[0], metrics,
                    magnitude=MAGNITUDE if args.magnitude is None else args.magnitude)
    for v in verdicts:
        where = f"search {v['search']}" if v.get("search", -1) >= 0 else f"cell {v['cell']:>3}"
        if v["verdict"] == "too few runs":
            print(f"{where} {v['metric']}: {v['value']:.4g}, {v['runs']} earlier runs: too few to judge")
            continue
        print(f"{where} {v['metric']}: {v['value']:.4g} vs {v['geomean']:.4g} over {v['n']} runs ({v['ratio']:.3f}x; "
              f"noise bound {v['bound']:.4g}) {v['verdict'].upper()} [{v['label']}]")
    return 1 if any(v["verdict"] == "regression" for v in verdicts) else 0
