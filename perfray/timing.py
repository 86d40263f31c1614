"""The one place perfray stamps and waits for times.

Stamps are Unix-epoch nanoseconds derived from the monotonic clock: differences are exact within a
process (no NTP steps), and values from different processes/hosts line up as well as their wall clocks do.
"""

from __future__ import annotations

import asyncio
import functools
import time
from concurrent.futures import ThreadPoolExecutor

# asyncio's epoll timeout has millisecond granularity and rounds up, so asyncio.sleep() alone can be up to
# 1 ms late. The last stretch before a due time is slept on a helper thread (nanosleep is precise to tens of
# microseconds), which wakes the loop; only the final few microseconds are yield-spun.
COARSE_MARGIN_NS = 2_000_000
THREAD_MARGIN_NS = 300_000


class Clock:
    """Monotonic nanosecond clock anchored to the wall clock once, at construction."""

    __slots__ = ("_offset_ns", "_timer")

    def __init__(self) -> None:
        self._offset_ns = time.time_ns() - time.perf_counter_ns()
        self._timer: ThreadPoolExecutor | None = None

    def now_ns(self) -> int:
        """Current time as Unix-epoch ns on this process's monotonic timeline."""
        return time.perf_counter_ns() + self._offset_ns

    @property
    def offset_ns(self) -> int:
        """Unix-epoch ns minus ``time.perf_counter_ns()``: stamps are ``perf_counter_ns() + offset_ns``."""
        return self._offset_ns

    async def wait_until(self, due_ns: int) -> int:
        """Return at (or just after) ``due_ns`` without blocking the event loop; returns the wake-up stamp."""
        now = self.now_ns()
        if due_ns - now > COARSE_MARGIN_NS:
            await asyncio.sleep((due_ns - now - COARSE_MARGIN_NS) / 1e9)
            now = self.now_ns()
        if due_ns - now > THREAD_MARGIN_NS:
            if self._timer is None:
                self._timer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="perfray-timer")
            await asyncio.get_running_loop().run_in_executor(self._timer, self.sleep_until,
                                                             due_ns - THREAD_MARGIN_NS + 50_000)
            now = self.now_ns()
        while now < due_ns:
            await asyncio.sleep(0)
            now = self.now_ns()
        return now

    def sleep_until(self, due_ns: int) -> int:
        """Blocking wait for threads that do not run an event loop."""
        remaining = due_ns - self.now_ns()
        if remaining > 0:
            time.sleep(remaining / 1e9)
        return self.now_ns()


@functools.cache
def process_clock() -> Clock:
    """The one clock of this process: stamps taken by the generator, its targets and the systems' clients
    all share one anchor, so a wall-clock step between their construction cannot bias a latency."""
    return Clock()
