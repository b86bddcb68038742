"""A bounded queue of outbound frames with its writer: a slow reader holds up only its own
queue; when the queue is full the oldest frames are dropped (and counted). While the writer is
idle and the queue empty, frames go onto the connection from the caller when the socket takes
them, without waking the writer."""

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
        self._direct: FramedStream | None = None  # the connection, while the writer is idle

    def __len__(self) -> int:
        return len(self.queue)

    def put(self, frames: Iterable[bytes]) -> None:
        direct = self._direct
        if direct is not None and not self.queue:
            frames = list(frames)
            try:
                done = direct.send_nowait(frames)
            except trio.WouldBlock:
                pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                # The writer's next send fails the same way and ends the connection.
                self._direct = None
                self.dropped += len(frames)
                self._wakeup.set()
                return
            else:
                if not done:
                    self._wakeup.set()  # the writer finishes what the socket did not take
                return
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
                self._direct = framed
                try:
                    await self._wakeup.wait()
                finally:
                    self._direct = None
            batch = list(self.queue)
            self.clear()
            await framed.send(batch)
