"""A bounded queue of outbound frames with its writer: a slow reader holds up only its own
queue; when the queue is full the oldest frames are dropped (and counted)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import trio

from .framing import FramedStream


class Outbox:
    def __init__(self, max_frames: int | None = None, max_bytes: int | None = None) -> None:
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.queue: deque[bytes] = deque()
        self.queued_bytes = 0
        self.dropped = 0
        self._wakeup = trio.Event()

    def __len__(self) -> int:
        return len(self.queue)

    def put(self, frames: Iterable[bytes]) -> None:
        for frame in frames:
            self.queue.append(frame)
            self.queued_bytes += len(frame)
        while len(self.queue) > 1 and (
            (self.max_frames is not None and len(self.queue) > self.max_frames)
            or (self.max_bytes is not None and self.queued_bytes > self.max_bytes)
        ):
            self.queued_bytes -= len(self.queue.popleft())
            self.dropped += 1
        self._wakeup.set()

    def clear(self) -> None:
        self.queue.clear()
        self.queued_bytes = 0

    async def run(self, framed: FramedStream) -> None:
        """Send what is queued, in order, several frames per write (until cancelled)."""
        while True:
            if not self.queue:
                self._wakeup = trio.Event()
                await self._wakeup.wait()
            batch = list(self.queue)
            self.clear()
            await framed.send(batch)
