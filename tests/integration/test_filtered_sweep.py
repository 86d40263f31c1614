"""A filtered sweep through real Ray: the search actors mask each query's window, the yardstick answers the
filtered top-k, and recall against the filtered ground truth is exact for both at every selectivity, by attr
range and by genre label."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from perfray.config import load_config
from perfray.driver import SweepDriver
from perfray.results.writer import prepare_run_dir, read_cell


@pytest.mark.timeout(300)
def test_filtered_cells_find_the_exact_neighbours_among_the_passing_items(tmp_path):
    config = load_config(None, [
        "sweep={filter.selectivity: [0.01, 0.001], filter.field: [attr, genre], system: [gpu_search, instant]}", "dataset.n=5000",
        "dataset.dim=16", "dataset.n_queries=200", "search.backend=numpy", "search.n_gpus=2",
        "search.topology=sharded", "target_qps=300", "duration_s=1.0", "warmup_s=0.3",
        "microbench.enabled=false", "targets=[{metric: recall_min, min: 1.0}, {metric: failure_rate, max: 0.0}]"])
    run_dir = prepare_run_dir(tmp_path, "filtered")
    code = SweepDriver(config, run_dir, "filtered").run()
    assert code == 0
    summary = pq.read_table(run_dir / "summary.parquet").to_pylist()
    assert [(r["system_name"], r["filter_field"], r["filter_selectivity"]) for r in summary] == [
        (system, field, s) for s in (0.01, 0.001) for field in ("attr", "genre") for system in ("gpu_search", "instant")]
    for r in summary:  # 50 items per query, then 5 (< k: recall is of the 5)
        assert r["recall_mean"] == r["recall_min"] == 1.0 and r["requests"] >= 300
    for cell in range(8):
        recall = read_cell(run_dir, cell)["recall"].to_numpy(zero_copy_only=False)
        assert not np.isnan(recall).any() and (recall == 1.0).all()
    from perfray.analysis.report import write_report

    section = write_report(run_dir)[0].read_text().split("## Filtered search", 1)[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and line[2].isdigit()]
    cols = [line.split(" | ") for line in rows]
    assert len(rows) == 8 and all(float(c[4]) == float(c[5]) == 1.0 for c in cols)  # recall mean, min
    assert sorted((c[2], c[3]) for c in cols) == sorted(
        (field, s) for s in ("0.100%", "1.000%") for field in ("attr", "genre") for _ in range(2))
