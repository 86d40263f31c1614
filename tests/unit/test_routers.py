"""The replicated router: a replica that dies is taken out of rotation, and every row it failed still names it."""

import numpy as np
import pyarrow.compute as pc

from perfray.load.generator import QueryPool
from perfray.load.targets import ReplicatedRouter
from tests.support import make_plan, run_plan


class Died(RuntimeError):
    pass


class Replica:
    """Answers at once; from its ``dies_after``-th call on, fails every call with a fatal error."""

    fatal_errors = (Died,)

    def __init__(self, dies_after: int | None = None) -> None:
        self.dies_after, self.calls = dies_after, 0

    def submit(self, queries, k, rows=None):
        self.calls += 1
        return self._reply(len(queries), k, self.dies_after is not None and self.calls > self.dies_after)

    async def _reply(self, n, k, dead):
        if dead:
            raise Died("replica gone")
        return np.zeros((n, k), dtype=np.int64), np.zeros((n, k), dtype=np.float32)


def test_a_dead_replica_is_left_and_its_error_rows_name_it():
    replicas = [Replica(), Replica(dies_after=20), Replica()]
    table, _ = run_plan(make_plan(400, 0.5), ReplicatedRouter(replicas),
                        QueryPool(np.zeros((16, 4), dtype=np.float32)))
    status = pc.cast(table["status"], "string").to_numpy(zero_copy_only=False)
    endpoint = table["endpoint"].to_numpy(zero_copy_only=False)
    errors = status == "error"
    assert table.num_rows == 200 and errors.sum() == 1  # the call that found it dead; later ones went elsewhere
    assert set(endpoint[errors].tolist()) == {1} and set(table["error"].filter(pc.equal(table["status"], "error"))
                                                         .to_pylist()) == {"Died"}
    assert replicas[1].calls == 21 and (endpoint[~errors] != 1).sum() == 200 - 21
