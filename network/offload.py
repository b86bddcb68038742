"""Running CPU-heavy crypto on a worker thread, one hop per batch.

PyNaCl releases the GIL while it verifies, so a batch of signatures (a quorum certificate, a
block's client signatures) checked on a worker thread runs beside the event loop. A thread hop
costs tens of microseconds: hop once per batch, never once per signature, and keep small batches
(below :data:`OFFLOAD_MIN_SIGNATURES`) on the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import trio

T = TypeVar("T")

OFFLOAD_MIN_SIGNATURES = 8
"""Below this many signatures a batch is cheaper to verify inline than to hand to a thread."""


async def verify_off_loop(
    fn: Callable[[], T], *, signatures: int, limiter: trio.CapacityLimiter | None = None
) -> T:
    """Run ``fn`` (a whole batch of verification) on a worker thread when it is big enough.

    Exceptions raised by ``fn`` propagate unchanged. ``limiter`` bounds how many batches verify at
    once (default: Trio's shared thread limiter).
    """
    if signatures < OFFLOAD_MIN_SIGNATURES:
        return fn()
    return await trio.to_thread.run_sync(fn, limiter=limiter)
