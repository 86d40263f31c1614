"""A write of ``load.writes`` on a load actor's loop, and the freshness probes that follow a sampled one.

The write's row is stamped around the store's own call (sent, acknowledged). A write picked for probing
(``WriteSet.probe``) is then searched for at its vector every ``probe_interval`` until the store shows it (an
insert or upsert found as the nearest item, a delete gone): ``freshness_ns`` is the time from the
acknowledgement to the sending of the first search that showed it (a store that shows writes at once: a few
tens of µs, the probe's own start). One not shown within ``probe_limit`` has none, and its row says so by
the missing value.
"""

from __future__ import annotations

import asyncio


async def write_and_probe(system, writes, j: int) -> dict:
    """Apply write ``j`` through ``system.write_async``; returns the reply's fields (``sent_ns``, ``done_ns``,
    ``freshness_ns`` when probed and shown)."""
    sent_ns, done_ns = await system.write_async(writes, j)
    reply = {"sent_ns": sent_ns, "done_ns": done_ns}
    if writes.probe[j]:
        reply["freshness_ns"] = await _freshness(system, writes, j, done_ns)
    return reply


async def _freshness(system, writes, j: int, acked_ns: int) -> int | None:
    while True:
        shown, probe_sent_ns = await system.shows_async(writes, j)
        if shown:
            return max(probe_sent_ns - acked_ns, 0)
        if probe_sent_ns - acked_ns > writes.probe_limit_ns:
            return None
        await asyncio.sleep(writes.probe_interval_ns / 1e9)
