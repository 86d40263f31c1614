"""``python -m perfray validate``: the phases of a plan as one campaign (``perfray.campaign``), each phase a normal
run through the sweep command's own path, with every store the campaign needs checked before the first phase."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from perfray.campaign import (
    CAPACITY_PHASES,
    Campaign,
    exit_code,
    new_doc,
    overall,
    parse_phases,
    phase_configs,
    phase_verdict,
    plan_phases,
    validation_md,
)
from perfray.errors import UnavailableError, UsageError, make_dir
from perfray.results.writer import check_run_id


def _only(text: str | None, numbers: list[int]) -> list[int]:
    if text is None:
        return numbers
    try:
        wanted = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--only {text!r}: expected phase numbers, e.g. 1,3") from None
    unknown = sorted(set(wanted) - set(numbers))
    if not wanted or unknown:
        raise UsageError(f"--only {text!r}: the plan's phases are {', '.join(map(str, numbers))}")
    return [n for n in numbers if n in wanted]


def _open(args) -> tuple[Campaign, list[tuple[int, str, Path]]]:
    if args.resume is not None:
        campaign = Campaign.resume(args.resume)
        return campaign, plan_phases(Path(campaign.doc["plan"]))
    phases = plan_phases(args.plan)
    numbers = [p[0] for p in phases]
    if args.capacity is None:  # the default: phases 1 and 3 (the capacity searches), those the plan has
        capacity = tuple(n for n in CAPACITY_PHASES if n in numbers)
    else:
        capacity = parse_phases(args.capacity, "--capacity")
        if set(capacity) - set(numbers):
            raise UsageError(f"--capacity {args.capacity!r}: the plan's phases are {', '.join(map(str, numbers))}")
    run_id = args.run_id if args.run_id is not None else f"validate-{time.strftime('%Y%m%d-%H%M%S')}"
    check_run_id(run_id)
    root = Path(args.results_dir) / run_id
    if root.exists():
        raise UsageError(f"--run-id {run_id!r}: {root} already exists; results are never overwritten "
                         "(--resume finishes a campaign)")
    return Campaign(root, new_doc(args.plan, args.scale, phases, capacity, args.overrides)), phases


def _preflight(configs: dict) -> None:
    """Every store any phase uses answers before the first phase runs: else one line naming it and the fix."""
    from perfray.sut.session import SystemSession

    session = SystemSession(next(iter(configs.values())).stores)
    try:
        for number, config in configs.items():
            try:
                session.check(config.cells())
            except UnavailableError as err:
                raise UnavailableError(f"phase {number}: {err} (local stores: python -m perfray services)") from None
    finally:
        session.close()


def run_validate_command(args, run) -> int:
    """``run(config, args, kind)``: the sweep command's own run of one config (``perfray.cli._run``)."""
    campaign, phases = _open(args)
    selected = _only(args.only, [n for n, _, _ in phases])
    overrides = [*campaign.doc.get("overrides", []), *args.overrides] if args.resume else args.overrides
    configs = phase_configs([p for p in phases if p[0] in selected], overrides, campaign.doc["scale"],
                            tuple(campaign.doc.get("capacity_phases", ())))
    _preflight(configs)  # before anything is written: a store that is down costs no phase
    make_dir(campaign.root.parent, "--results-dir")
    campaign.root.mkdir(exist_ok=True)
    campaign.write()
    codes: list[int] = []
    try:
        for i, number in enumerate(selected, 1):
            entry = campaign.entry(number)
            if campaign.done(entry):
                entry["status"] = "complete"  # (a campaign killed before it could write so)
                print(f"perfray: phase {number} ({entry['name']}) finished before: kept ({entry['run_id']})")
                continue
            entry["run_id"] = _free(campaign.root, f"{number}-{entry['name']}")
            entry["status"] = "running"
            campaign.write()
            print(f"perfray: phase {i}/{len(selected)}: {number} {entry['name']} -> {campaign.root / entry['run_id']}",
                  flush=True)
            phase_args = argparse.Namespace(results_dir=campaign.root, run_id=entry["run_id"], quiet=args.quiet,
                                            no_report=False)
            code = run(configs[number], phase_args, "")
            entry.update(status=campaign.manifest(entry).get("status", "failed"), exit_code=code)
            codes.append(code)
            campaign.write()
            if code == 130:
                break
    finally:
        campaign.doc["status"] = "complete" if all(campaign.done(campaign.entry(n)) for n in selected) else "partial"
        campaign.doc["finished_unix_s"] = time.time()
        campaign.write()
        (campaign.root / "validation.md").write_text(validation_md(campaign))
    verdict = overall([phase_verdict(campaign.manifest(campaign.entry(n))) for n in selected])
    print(f"perfray: validation {campaign.root / 'validation.md'} ({campaign.doc['status']}): {verdict}")
    code = exit_code(codes)
    return 1 if code == 0 and verdict == "no-go" else code  # e.g. a capacity phase that never held its goal rate


def _free(root: Path, stem: str) -> str:
    """A sub-run id not used yet (an unfinished attempt keeps its directory: ``stem.2``, ``stem.3`` …)."""
    name, n = stem, 1
    while (root / name).exists():
        n += 1
        name = f"{stem}.{n}"
    return name
