"""start_eagerly: a request's coroutine runs at once, as its own task, up to its first suspension; then the task
carries it on: results, errors and cancellation reach it as with any task."""

import asyncio

import pytest

from perfray.load.eager import start_eagerly
from perfray.load.pacer import run_fast


def in_a_callback(make):
    """Run ``make()`` from a plain loop callback (as the pacer's sends are), return what it returned."""
    loop = asyncio.get_running_loop()
    made = loop.create_future()
    loop.call_soon(lambda: made.set_result(make()))
    return made


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_the_first_step_runs_now_as_its_task_and_the_task_finishes_it(loop):
    log = []

    async def request(release):
        log.append(("started", asyncio.current_task()))
        await release
        log.append("resumed")
        return 42

    async def main():
        release = asyncio.get_running_loop().create_future()

        def send():
            task = start_eagerly(request(release))
            log.append(("returned", task))  # after the first step, before any loop turn
            return task

        task = await in_a_callback(send)
        assert log[0] == ("started", task) and log[1] == ("returned", task)
        release.set_result(None)
        assert await task == 42 and log[2] == "resumed"

    (run_fast if loop == "uvloop" else asyncio.run)(main())


def test_errors_and_cancellation_reach_the_coroutine():
    cleaned = []

    async def fails_at_once():
        raise KeyError("x")

    async def waits(where):
        try:
            await asyncio.sleep(10)
        finally:
            cleaned.append(where)

    async def main():
        failing = await in_a_callback(lambda: start_eagerly(fails_at_once()))
        with pytest.raises(KeyError):
            await failing
        before_first_turn = await in_a_callback(lambda: _cancel_now(start_eagerly(waits("before"))))
        running = await in_a_callback(lambda: start_eagerly(waits("after")))
        await asyncio.sleep(0.01)
        running.cancel()
        for task in (before_first_turn, running):
            with pytest.raises(asyncio.CancelledError):
                await task
        assert sorted(cleaned) == ["after", "before"]  # each coroutine's own cleanup ran

    asyncio.run(main())


def _cancel_now(task):
    task.cancel()  # before the task's own first step: the suspended coroutine must still be cancelled
    return task


def test_from_inside_a_task_it_starts_on_the_next_turn():
    log = []

    async def request():
        log.append("started")
        return 1

    async def main():
        task = start_eagerly(request())
        assert log == []  # another task is running: this one cannot be entered now
        assert await task == 1 and log == ["started"]

    asyncio.run(main())
