"""Length-prefixed frames over a byte stream.

A frame is a 4-byte big-endian length followed by that many bytes. The length is checked against
the limit *before* any of the body is read or buffered, so a peer announcing a huge frame costs
four bytes of memory and is disconnected. :class:`FrameDecoder` is the sans-I/O part (bytes in,
frames out); :class:`FramedStream` wraps a Trio stream with it.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Iterable

import trio

HEADER = struct.Struct(">I")
DEFAULT_MAX_FRAME = 16 * 1024 * 1024
_READ_SIZE = 256 * 1024


class FrameError(Exception):
    """The byte stream is not a sequence of acceptable frames."""


def encode_frame(payload: bytes) -> bytes:
    return HEADER.pack(len(payload)) + payload


def encode_frames(payloads: Iterable[bytes]) -> bytes:
    parts: list[bytes] = []
    for payload in payloads:
        parts.append(HEADER.pack(len(payload)))
        parts.append(payload)
    return b"".join(parts)


class FrameDecoder:
    """Turns received bytes into frames; refuses a frame longer than ``max_frame`` at once."""

    __slots__ = ("_buffer", "_need", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()
        self._need: int | None = None

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return every frame now complete. Raises :class:`FrameError`."""
        self._buffer += data
        frames: list[bytes] = []
        buffer = self._buffer
        while True:
            if self._need is None:
                if len(buffer) < HEADER.size:
                    break
                (length,) = HEADER.unpack_from(buffer, 0)
                if length > self.max_frame:
                    raise FrameError(
                        f"frame of {length} bytes exceeds the limit of {self.max_frame}"
                    )
                del buffer[: HEADER.size]
                self._need = length
            if len(buffer) < self._need:
                break
            frames.append(bytes(buffer[: self._need]))
            del buffer[: self._need]
            self._need = None
        return frames


class FramedStream:
    """Frames over a Trio stream. ``receive`` returns ``None`` at a clean end of stream."""

    def __init__(self, stream: trio.abc.Stream, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.stream = stream
        self.decoder = FrameDecoder(max_frame)
        self._ready: deque[bytes] = deque()  # many small frames in one read: no pop(0)
        self.bytes_received = 0
        self.bytes_sent = 0
        self._send_nowait = getattr(stream, "send_nowait", None)  # a DirectStream's, say

    async def receive(self) -> bytes | None:
        while not self._ready:
            data = await self.stream.receive_some(_READ_SIZE)
            if not data:
                if self.decoder.buffered:
                    raise FrameError("stream ended inside a frame")
                return None
            self.bytes_received += len(data)
            self._ready.extend(self.decoder.feed(data))
        return self._ready.popleft()

    async def send(self, payloads: Iterable[bytes]) -> None:
        """Send several frames with one ``send_all``."""
        data = encode_frames(payloads)
        self.bytes_sent += len(data)
        await self.stream.send_all(data)

    def send_nowait(self, payloads: Iterable[bytes]) -> bool:
        """Send frames from the calling task without waiting, if the stream can (see
        :meth:`network.direct.DirectStream.send_nowait`): ``True`` if they are all on the wire,
        ``False`` if part waits for the next :meth:`send`. Raises :class:`trio.WouldBlock`,
        sending nothing, if the stream cannot take them now."""
        if self._send_nowait is None:
            raise trio.WouldBlock
        data = encode_frames(payloads)
        done: bool = self._send_nowait(data)
        self.bytes_sent += len(data)
        return done

    async def aclose(self) -> None:
        await self.stream.aclose()
