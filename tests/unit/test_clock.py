import time

from perfray.config import Workload
from perfray.load.generator import LoadGenerator
from perfray.load.targets import SystemEndpoint
from perfray.sut.session import make_system
from perfray.systems_config import StoresSpec
from perfray.timing import Clock, process_clock


def test_generator_endpoints_and_clients_share_one_clock_anchor(monkeypatch):
    """Stamps from the generator (intended/sent), the endpoint (client sent/done) and the HTTP client (reply
    arrival) are subtracted from one another: one anchor per process, or a wall-clock step between two
    constructions would bias every latency."""
    process_clock.cache_clear()
    generator = LoadGenerator(0)
    stepped = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: stepped() + 1_000_000_000)  # the wall clock steps 1 s (NTP)
    assert Clock().offset_ns - generator.clock.offset_ns > 900_000_000  # a clock anchored now would differ
    system = make_system("http", Workload.model_validate({"system": "http"}), StoresSpec())
    endpoint = SystemEndpoint(system, 4)
    assert endpoint.clock.offset_ns == generator.clock.offset_ns and endpoint.clock is process_clock()


class _PreemptedClocks:
    """``time`` for the http client: the wall clock is the monotonic one + WALL_OFFSET; each read advances 100 ns,
    and the reads named in ``stalls`` (by position) come after this thread was preempted for that long."""

    WALL_OFFSET = 1_700_000_000_000_000_000

    def __init__(self, start_ns: int, stalls: dict[int, int]) -> None:
        self.t, self.reads, self.stalls = start_ns, 0, stalls

    def _read(self) -> int:
        self.t += 100 + self.stalls.get(self.reads, 0)
        self.reads += 1
        return self.t

    def perf_counter_ns(self) -> int:
        return self._read()

    def time_ns(self) -> int:
        return self._read() + self.WALL_OFFSET


def _kernel_stamp(wall_ns: int):
    import socket
    import struct

    from perfray.sut.http_client import SO_TIMESTAMPNS

    return [(socket.SOL_SOCKET, SO_TIMESTAMPNS, struct.pack("@qq", *divmod(wall_ns, 1_000_000_000)))]


def test_a_kernel_stamp_is_not_moved_by_a_preemption_between_the_clock_reads(monkeypatch):
    """A reply's kernel stamp goes onto perfray's timeline through the wall clock's place on the monotonic one.
    Read while this thread is preempted between the two clocks, that place is off by the preemption, and the
    stamp with it (a reply that arrived 3 ms before it was read would be stamped 1 ms late): the pair is read
    again; preempted every time, the read time stands in, never a later one."""
    import asyncio

    from perfray.sut import http_client
    from perfray.timing import Clock

    class Anchored(Clock):
        def __init__(self) -> None:
            super().__init__()
            self._offset_ns = 5_000  # perfray's stamps: perf_counter_ns + 5 µs

    arrived = 50_000_000  # on the monotonic clock; the reply is read 3 ms later
    kernel = _kernel_stamp(arrived + _PreemptedClocks.WALL_OFFSET)

    async def stamp(stalls: dict[int, int]) -> int:
        clocks = _PreemptedClocks(arrived + 3_000_000, stalls)
        monkeypatch.setattr(http_client, "time", clocks)
        pool = http_client.HttpPool("http://127.0.0.1:9/", 1, {}, 1.0, Anchored())
        return pool.arrival_ns(kernel) - 5_000

    # reads: 0 the read time, 1 wall, 2 monotonic, (3 wall, 4 monotonic)...
    assert abs(asyncio.run(stamp({})) - arrived) <= 100
    assert abs(asyncio.run(stamp({2: 1_000_000})) - arrived) <= 100  # preempted between wall and monotonic
    assert abs(asyncio.run(stamp({1: 1_000_000})) - arrived) <= 100  # between the read time and the wall clock
    always = {1: 1_000_000, 3: 1_000_000, 5: 1_000_000}
    assert asyncio.run(stamp(always)) == arrived + 3_000_000 + 100  # the read time: never later than it
