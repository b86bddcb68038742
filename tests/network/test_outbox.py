"""The outbound queue with its writer, over a real socket: bounded, ordered, and sent from the
caller while the writer is idle."""

from __future__ import annotations

import trio

from network.direct import DirectStream
from network.framing import FramedStream
from network.outbox import Outbox


async def _pair() -> tuple[FramedStream, FramedStream]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server = await listeners[0].accept()
    await listeners[0].aclose()
    return FramedStream(DirectStream.plain(client)), FramedStream(DirectStream.plain(server))


async def _frames(reader: FramedStream, count: int) -> list[bytes]:
    out = []
    for _ in range(count):
        frame = await reader.receive()
        assert frame is not None
        out.append(frame)
    return out


def test_a_full_queue_drops_the_oldest_frames() -> None:
    outbox = Outbox(max_frames=3)
    outbox.put([b"1", b"2"])
    outbox.put([b"3", b"4", b"5"])
    assert list(outbox.queue) == [b"3", b"4", b"5"] and outbox.dropped == 2


async def test_an_idle_writer_lets_the_caller_send_and_order_holds() -> None:
    writer_side, reader = await _pair()
    outbox = Outbox(max_frames=100)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            outbox.put([b"queued before the writer"])
            nursery.start_soon(outbox.run, writer_side)
            assert await _frames(reader, 1) == [b"queued before the writer"]
            await trio.sleep(0.01)  # the writer is idle now
            outbox.put([b"a", b"b"])
            assert len(outbox) == 0  # sent by put itself, nothing queued
            big = b"B" * (12 * 1024 * 1024)  # more than the socket takes at once
            outbox.put([big])
            outbox.put([b"after"])  # must wait behind the rest of the big frame
            assert list(outbox.queue) == [b"after"]
            assert await _frames(reader, 4) == [b"a", b"b", big, b"after"]
            nursery.cancel_scope.cancel()
    await writer_side.aclose()
    await reader.aclose()
