"""Shared plumbing for the testbed tests: polling with a deadline, finding the leader."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import trio

from bft.testbed import Testbed, assess


async def wait_until(condition: Callable[[], bool], what: str, poll: float = 0.05) -> None:
    """Poll ``condition`` until it holds (the caller's ``fail_after`` bounds the wait)."""
    try:
        while not condition():
            await trio.sleep(poll)
    except trio.Cancelled:
        print(f"gave up waiting for: {what}")
        raise


async def current_leader(bed: Testbed, exclude: int | None = None) -> int:
    """The leader a majority of the running replicas name (polls until there is one)."""
    while True:
        view = assess(bed.cluster, await bed.statuses(timeout=1.0), bed.processes)
        if view.leader is not None and view.leader != exclude and view.leader_votes * 2 > bed.n:
            return view.leader
        await trio.sleep(0.05)


async def wait_agreed_leader(bed: Testbed) -> int:
    """Wait until every replica names the same leader."""
    while True:
        view = assess(bed.cluster, await bed.statuses(timeout=1.0), bed.processes)
        if view.leader is not None and view.leader_votes == bed.n:
            return view.leader
        await trio.sleep(0.1)


async def describe(bed: Testbed) -> str:
    """Every replica's verbose status, for a failing test's message."""
    import json

    from bft.client import open_client
    from bft.testbed import ask_statuses

    with trio.move_on_after(5):
        async with open_client(bed.client_config(admin=True), wait=0) as client:
            statuses = await ask_statuses(client, bed.n, timeout=2.0, verbose=True)
            return json.dumps(statuses, indent=1)
    return "(no answer)"


def run_bft(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """``bft ARGS`` as an operator runs it: a real process, its output captured."""
    env = {k: v for k, v in os.environ.items() if k != "BFT_DEBUG"}
    return subprocess.run(
        [sys.executable, "-m", "bft.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
