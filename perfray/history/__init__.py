"""Benchmarks over time: an index of a folder of runs, series per workload and hardware, and change points."""

GATE_HELP = """\
perfray compare BASELINE CANDIDATE: speedups of the candidate over the baseline, per cell, with 95% intervals;
exit 1 unless every cell meets --min-speedup.

perfray compare --baseline-history RESULTS_DIR RUN: a CI gate. RUN is judged against the earlier runs of each
of its series in RESULTS_DIR (same workload, same hardware; perfray history's keys). Exit 1 only for a
regression: the run lies beyond the series' one-sided prediction bound at alpha 0.01 shared among every series
and metric judged (lognormal run-to-run noise, t on the earlier runs' log values), differs from their geometric
mean by at least --magnitude (5%), and, for a percentile, its whole 95% interval lies beyond that mean. A series
with fewer than 5 earlier runs is not judged. Measured false alarms (2,000 A/A gates of 4 cells against 10
earlier runs, drawn with this box's measured run-to-run spread): 0.55% on p50, 1.2% on p99, at the configured
1%; a 25% slowdown of p99 caught 96% of the time, 10% only 21% at that spread (more runs, or --repeat, see more).
Log: benchmarks/results/history_alarms-2026-12-07.txt.
"""
