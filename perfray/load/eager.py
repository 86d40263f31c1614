"""Starting a coroutine now, not on the event loop's next turn.

A task made by ``create_task`` first runs on the loop's next turn: after the current callback, an I/O poll and
whatever else is ready — ~20 µs on a 2-core VM, all of it counted as the hand-off between perfray deciding to
send and the client starting the query. ``start_eagerly`` runs the coroutine at once, as its task, up to its
first real suspension (for a store client: the query's bytes going out), and the task carries on from there:
Python 3.12's eager tasks, used there and emulated here on 3.11.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine


def start_eagerly(coro) -> asyncio.Future:
    """Run ``coro`` as a task on the running loop, its first step now rather than on the loop's next turn;
    returns the task. During that step ``asyncio.current_task()`` is the task, as drivers that track lock
    owners need. From inside another task it cannot be entered: the task then starts on the next turn."""
    loop = asyncio.get_running_loop()
    if sys.version_info >= (3, 12):
        return asyncio.Task(coro, loop=loop, eager_start=True)
    if asyncio.current_task(loop) is not None:
        return loop.create_task(coro)
    rest = _Rest(coro)
    task = loop.create_task(rest)  # its first step, on the next turn, hands on what the eager step waits for
    asyncio.tasks._enter_task(loop, task)
    try:
        rest.waiting = coro.send(None)
    except StopIteration as done:
        rest.outcome = (done.value, None)
    except BaseException as err:  # noqa: BLE001 - raised from the task's first step, as a task would
        rest.outcome = (None, err)
    finally:
        asyncio.tasks._leave_task(loop, task)
    return task


class _Rest(Coroutine):
    """The coroutine a task drives after its eager first step: the task's first ``send`` gets what that step
    waits for (a future), later sends and throws (cancellation) go into the coroutine itself."""

    __slots__ = ("coro", "waiting", "outcome")

    def __init__(self, coro) -> None:
        self.coro, self.waiting, self.outcome = coro, None, None

    def send(self, value):
        if self.outcome is not None:  # it finished during the eager step
            result, err = self.outcome
            if err is not None:
                raise err
            raise StopIteration(result)
        if self.waiting is not None:
            waiting, self.waiting = self.waiting, None
            return waiting
        return self.coro.send(value)

    def throw(self, typ, val=None, tb=None):
        self.waiting = None
        if self.outcome is not None:
            raise typ if val is None else val
        return self.coro.throw(typ) if val is None and tb is None else self.coro.throw(typ, val, tb)

    def close(self) -> None:
        self.coro.close()

    def __await__(self):
        raise TypeError("_Rest is driven by its task, not awaited")
