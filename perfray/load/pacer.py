"""Precise one-shot wake-ups on an event loop, without a spinning task or a timer thread.

asyncio's and uvloop's timers have millisecond granularity (epoll's timeout), so ``call_at`` alone can be a
whole millisecond late. On Linux a ``timerfd`` armed at an absolute CLOCK_MONOTONIC time (the clock behind
``time.perf_counter_ns``) becomes readable when it expires, and the loop's reader callback runs within the
kernel's wake-up latency: the loop sleeps in between, so the idle cost is one wake per armed time.
Elsewhere the loop's own timer wakes a little early and the last stretch is yielded away on the loop.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import sys
import time

_CLOCK_MONOTONIC = 1
_TFD_CLOEXEC = 0o2000000
_TFD_NONBLOCK = 0o4000
_TFD_TIMER_ABSTIME = 1
_LOOP_TIMER_MARGIN_NS = 1_500_000  # a loop timer can be up to ~1 ms late: wake this much before, then yield


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        return libc if hasattr(libc, "timerfd_create") else None
    except OSError:
        return None


class Pacer:
    """``arm(due_perf_ns, callback)`` runs ``callback()`` on ``loop`` once ``time.perf_counter_ns()`` reaches
    ``due_perf_ns`` (a later ``arm`` replaces an earlier one). ``kind`` says which mechanism is used."""

    def __init__(self, loop) -> None:
        self.loop = loop
        self._callback = None
        self._due = 0
        self._handle = None
        self._fd = -1
        libc = _libc()
        if libc is not None:
            fd = libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
            if fd >= 0:
                self._libc, self._fd, self._spec = libc, fd, _Itimerspec()
                loop.add_reader(fd, self._expired)
        self.kind = "timerfd" if self._fd >= 0 else "loop-timer"

    def arm(self, due_perf_ns: int, callback) -> None:
        self._callback, self._due = callback, due_perf_ns
        if self._fd >= 0:
            spec = self._spec.it_value
            spec.tv_sec, spec.tv_nsec = divmod(max(due_perf_ns, 1), 1_000_000_000)
            if self._libc.timerfd_settime(self._fd, _TFD_TIMER_ABSTIME, ctypes.byref(self._spec), None) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"timerfd_settime: {os.strerror(err)}")
            return
        if self._handle is not None:
            self._handle.cancel()
        delay_ns = due_perf_ns - time.perf_counter_ns() - _LOOP_TIMER_MARGIN_NS
        self._handle = self.loop.call_later(max(delay_ns, 0) / 1e9, self._expired)

    def cancel(self) -> None:
        self._callback = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _expired(self) -> None:
        if self._fd >= 0:
            try:
                os.read(self._fd, 8)
            except BlockingIOError:  # re-armed after it fired: nothing to read
                return
        elif time.perf_counter_ns() < self._due:  # a loop timer woke early: let the loop run, look again
            self._handle = self.loop.call_soon(self._expired)
            return
        callback, self._callback, self._handle = self._callback, None, None
        if callback is not None:
            callback()

    def close(self) -> None:
        self.cancel()
        if self._fd >= 0:
            self.loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1


def run_fast(coro):
    """``asyncio.run`` on uvloop when it is installed (as Ray runs load actors), else on the default loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)
