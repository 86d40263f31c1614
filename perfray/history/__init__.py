"""Benchmarks over time: an index of a folder of runs, series per workload and hardware, and change points."""
