import asyncio
import time

import pytest

from perfray.load import pacer as pacer_module
from perfray.load.pacer import Pacer


def fire_times(force_loop_timer: bool, monkeypatch) -> list[tuple[int, int]]:
    if force_loop_timer:
        monkeypatch.setattr(pacer_module, "_libc", lambda: None)

    async def main():
        pacer = Pacer(asyncio.get_running_loop())
        got = []
        for delay_us in (50, 300, 1_000, 2_500, 40, 5_000):
            due = time.perf_counter_ns() + delay_us * 1_000
            fired = asyncio.get_running_loop().create_future()
            pacer.arm(due + 10**9, lambda: None)  # replaced by the next arm: must never fire
            pacer.arm(due, lambda f=fired: f.set_result(time.perf_counter_ns()))
            got.append((due, await asyncio.wait_for(fired, 1)))
        await asyncio.sleep(0.01)
        kind = pacer.kind
        pacer.close()
        return got, kind

    got, kind = asyncio.run(main())
    assert kind == ("loop-timer" if force_loop_timer else "timerfd")
    return got


@pytest.mark.parametrize("force_loop_timer", [False, True])
def test_pacer_fires_once_at_or_after_the_due_time_never_before(force_loop_timer, monkeypatch):
    for due, fired in fire_times(force_loop_timer, monkeypatch):
        assert fired >= due
        assert fired - due < 50_000_000  # and not lost: within a (very) generous bound on a busy box
