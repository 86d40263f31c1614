"""Every measured figure the docs state for a benchmark names the dated log it comes from, and the log exists."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIGURE = re.compile(r"\d[\d.,]*\s?(?:µs|us|ms|s\b|QPS|req/s|rows/s|MB|GB|B/row|%|×|x\b)")
LOG = re.compile(r"benchmarks/results/[\w.\-]+\.txt|`([\w.\-]+-\d{4}-\d{2}-\d{2}[\w.\-]*\.txt)`")


def benchmark_rows() -> list[tuple[str, str]]:
    """(file, row) for each table row about a benchmark script in the README and docs/."""
    rows = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        row = None
        for line in path.read_text().splitlines():
            if line.startswith("| `python benchmarks/"):
                row = line
            elif row is not None and not line.startswith("|") and line.strip():
                row += " " + line  # a row broken over lines
            if row is not None and row.rstrip().endswith("|"):
                rows.append((path.name, row))
                row = None
    return rows


def cited_logs(row: str) -> list[Path]:
    names = [m.group(0) if m.group(0).startswith("benchmarks/") else f"benchmarks/results/{m.group(1)}"
             for m in LOG.finditer(row)]
    return [REPO / n for n in names]


def test_there_are_benchmark_rows_to_check():
    assert len(benchmark_rows()) >= 8


@pytest.mark.parametrize("where, row", benchmark_rows(), ids=lambda v: v.split("`")[1] if "`" in v else v)
def test_each_benchmark_figure_names_an_existing_dated_log(where, row):
    if not FIGURE.search(row.split("|")[2]):
        return  # no figure stated ("see Backends")
    logs = cited_logs(row)
    assert logs, f"{where}: {row[:80]}… states figures but names no benchmarks/results/ log"
    missing = [str(p.relative_to(REPO)) for p in logs if not p.is_file()]
    assert not missing, f"{where}: names logs that do not exist: {missing}"
