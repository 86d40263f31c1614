"""What perfray itself cost the host it measured from, and a warning when the system under test shared it.

Each cell's manifest entry carries ``host_cpu`` (cores each of perfray's roles used on the driver's host while the
cell ran, and how busy the host was) and ``sut_colocation`` (whether the system under test ran where the load was
generated, and why it is thought so). The summary row carries the three figures a reader filters on; the report
says it out loud.
"""

from __future__ import annotations

# The harness took more than this share of a co-located host's cores: the report says the latency includes waiting
# for them (a 2-core laptop running a local server crosses it at a few thousand requests per second).
HEAVY_SHARE = 0.25


def colocation_fields(entry: dict) -> dict:
    """Summary columns: ``harness_cores`` (perfray's load actors, driver and Ray daemons on the driver's host, in
    cores), ``host_busy_share`` and ``sut_shares_host``."""
    cpu, where = entry.get("host_cpu") or {}, entry.get("sut_colocation") or {}
    return {"harness_cores": cpu.get("harness_cores"), "host_busy_share": cpu.get("busy_share"),
            "sut_shares_host": where.get("shares_host")}


def colocation_section(manifest: dict) -> list[str]:
    """The CPU table per cell, with a warning first when the system under test shared a host with the load."""
    cells = [c for c in manifest.get("cells", []) if c.get("host_cpu")]
    if not cells:
        return []
    shared = [c for c in cells if (c.get("sut_colocation") or {}).get("shares_host")]
    lines = ["", "## What perfray's own processes took from the host", ""]
    if shared:
        heavy = [c for c in shared if c["host_cpu"]["harness_cores"] > HEAVY_SHARE * c["host_cpu"]["cores"]]
        why = sorted({w for c in shared for w in c["sut_colocation"]["why"]})
        lines += [f"> **The system under test shared a host with perfray's load generation** in {len(shared)} of "
                  f"{len(cells)} cells ({'; '.join(why[:4])}{' …' if len(why) > 4 else ''}). Its latency includes "
                  "waiting for the cores perfray's own processes took (below)"
                  + (f"; in {len(heavy)} cells they took more than {HEAVY_SHARE:.0%} of the host" if heavy else "")
                  + ". For the system's own figures, generate the load on other hosts (`cluster.load_placement: "
                  "separate`, or a load group through `cluster.load_resources`) or compare with a bare client in "
                  "the same sitting (`benchmarks/colocation.py`).", ""]
    lines += ["Cores used on the driver's host while each cell ran (CPU seconds per second, from the kernel's "
              "per-process times). *other* is busy time no perfray process accounts for: a local server under "
              "test, or a neighbour.", "",
              "| cell | host | host busy | perfray: load actors | driver | Ray daemons | search actors | other | "
              "shares host with the load |", "|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        cpu, where = c["host_cpu"], c.get("sut_colocation") or {}
        lines.append(f"| {c['cell']} | {cpu['host']} ({cpu['cores']} cores) | {cpu['busy_share']:.0%} | "
                     f"{cpu['load_cores']:.2f} | {cpu['driver_cores']:.2f} | {cpu['ray_cores']:.2f} | "
                     f"{cpu['search_cores']:.2f} | {cpu['other_cores']:.2f} | "
                     f"{'yes: ' + ', '.join(where['why']) if where.get('shares_host') else 'no'} |")
    return lines
