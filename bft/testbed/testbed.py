"""A local testbed: one cluster directory, its replica processes, and clients to talk to them.

This is what ``bft testbed`` is built on, and what the end-to-end tests use::

    bed = Testbed(directory)              # a directory made by init_cluster / bft testbed init
    bed.start()                           # start every replica process that is not running
    trio.run(bed.wait_ready)              # until every replica answers a status query
    ...
    bed.stop()                            # SIGTERM, wait, SIGKILL stragglers
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from bft.client import ClientConfig, open_client

from .layout import ADMIN, CLIENT, Cluster, load_cluster
from .processes import Processes, TestbedError
from .status import ClusterView, ask_statuses, assess


class Testbed:
    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path | str) -> None:
        self.cluster: Cluster = load_cluster(Path(directory))
        self.directory = self.cluster.directory
        self.processes = Processes(self.cluster)

    @property
    def n(self) -> int:
        return self.cluster.n

    def client_config(
        self, *, admin: bool = False, sign: bool = False, **options: Any
    ) -> ClientConfig:
        """A client of this cluster (the admin client may inject faults)."""
        return ClientConfig.from_cluster(
            self.directory, client=ADMIN if admin else CLIENT, sign=sign, **options
        )

    # ------------------------------------------------------------------------------ processes

    def start(self, replicas: list[int] | None = None) -> list[int]:
        """Start the given replicas (default: all) that are not running; return those started."""
        started = []
        for replica in range(self.n) if replicas is None else replicas:
            if self.processes.pid(replica) is None:
                self.processes.start(replica)
                started.append(replica)
        return started

    def stop(self, replicas: list[int] | None = None, timeout: float = 10.0) -> dict[int, str]:
        return self.processes.stop(replicas, timeout)

    # ------------------------------------------------------------------------------ status

    async def statuses(self, timeout: float = 1.0) -> dict[int, dict[str, Any] | None]:
        async with open_client(self.client_config(admin=True), wait=0) as client:
            return await ask_statuses(client, self.n, timeout=timeout)

    async def view(self, timeout: float = 1.0) -> ClusterView:
        return assess(self.cluster, await self.statuses(timeout), self.processes)

    async def wait_ready(
        self, replicas: list[int] | None = None, timeout: float = 30.0
    ) -> dict[int, dict[str, Any]]:
        """Wait until the replicas (default: all) answer a status query.

        Raises :class:`TestbedError` when one of them has no process (it exited: the error
        quotes the end of its log) or when ``timeout`` passes.
        """
        wanted = list(range(self.n)) if replicas is None else list(replicas)
        answers: dict[int, dict[str, Any]] = {}
        with trio.move_on_after(timeout):
            async with open_client(self.client_config(admin=True), wait=0) as client:
                while True:
                    for replica in wanted:
                        if replica not in answers and self.processes.pid(replica) is None:
                            code = self.processes.exit_code(replica)
                            how = f" (exit status {code})" if code is not None else ""
                            raise TestbedError(
                                f"replica {replica} is not running{how}: "
                                f"{self.processes.log_tail(replica) or 'no log'}"
                            )
                    statuses = await ask_statuses(client, self.n, timeout=0.5)
                    for replica in wanted:
                        status = statuses.get(replica)
                        if status is not None:
                            answers[replica] = status
                    if all(r in answers for r in wanted):
                        return answers
                    await trio.sleep(0.1)
        silent = [r for r in wanted if r not in answers]
        raise TestbedError(
            f"replicas {silent} did not answer within {timeout:.0f} s "
            f"(see {self.processes.log_file(silent[0])})"
        )

    async def wait_converged(self, timeout: float = 30.0, settle: float = 0.3) -> int:
        """Wait until every replica reports the same ledger height, and still does ``settle``
        seconds later (no block in the middle of committing); return it."""
        heights: list[int] = []
        with trio.move_on_after(timeout):
            async with open_client(self.client_config(admin=True), wait=0) as client:
                previous: list[int] = []
                while True:
                    statuses = await ask_statuses(client, self.n, timeout=0.5)
                    heights = [int(s["height"]) if s else -1 for _, s in sorted(statuses.items())]
                    if len(set(heights)) == 1 and heights[0] >= 0 and heights == previous:
                        return heights[0]
                    previous = heights
                    await trio.sleep(settle if len(set(heights)) == 1 else 0.1)
        raise TestbedError(f"replicas did not converge within {timeout:.0f} s: heights {heights}")
