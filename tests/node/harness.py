"""An in-process cluster: every replica a `Replica` task in this Trio run, over real loopback
sockets with TLS, each with its own cancel scope so one can be stopped and started again from
its data directory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from bft.node import Replica, load_replica_config
from bft.testbed import Cluster, load_cluster


class InProcessCluster:
    def __init__(self, cluster: Cluster, nursery: trio.Nursery) -> None:
        self.cluster = cluster
        self.nursery = nursery
        self.replicas: dict[int, Replica] = {}
        self._scopes: dict[int, trio.CancelScope] = {}
        self._stopped: dict[int, trio.Event] = {}

    @property
    def directory(self) -> Path:
        return self.cluster.directory

    async def start(self, replica: int) -> Replica:
        return await self.nursery.start(self._run, replica)  # type: ignore[no-any-return]

    async def start_all(self) -> None:
        for replica in range(self.cluster.n):
            await self.start(replica)

    async def _run(self, replica: int, task_status: trio.TaskStatus[Replica]) -> None:
        done = self._stopped[replica] = trio.Event()
        try:
            with trio.CancelScope() as scope:
                self._scopes[replica] = scope
                node = Replica(load_replica_config(self.cluster.replica_config(replica)))
                self.replicas[replica] = node
                await node.run(task_status=task_status)
        finally:
            done.set()

    async def stop(self, replica: int) -> None:
        """Cancel the replica's tasks and wait until its files are closed."""
        self._scopes[replica].cancel()
        await self._stopped[replica].wait()
        del self.replicas[replica]

    def heights(self) -> dict[int, int]:
        return {i: r.store.height for i, r in self.replicas.items() if r.store is not None}


@asynccontextmanager
async def running(directory: Path) -> AsyncIterator[InProcessCluster]:
    """Every replica of the cluster initialised in ``directory``, started in this Trio run and
    stopped when the block is left."""
    async with trio.open_nursery() as nursery:
        nodes = InProcessCluster(load_cluster(directory), nursery)
        await nodes.start_all()
        yield nodes
        nursery.cancel_scope.cancel()
