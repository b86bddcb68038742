"""The client's window: a new request is numbered less than ``client_window`` above the oldest
unfinished one, however out of order the requests before it finish."""

from __future__ import annotations

import trio

from bft.client.client import Client, ClientConfig
from tests.ledger.chain import COMMITTEE


def finish(client: Client, seq: int) -> None:
    """What ``Client._wait`` does when a request is answered."""
    client._pending.pop(seq)
    client._window_moved.set()


async def blocked(client: Client) -> bool:
    with trio.move_on_after(0.05) as waiting:
        await client._wait_for_window()
    return waiting.cancelled_caught


def test_the_window_follows_the_oldest_unfinished_request() -> None:
    async def main() -> None:
        config = ClientConfig(COMMITTEE, {0: ("127.0.0.1", 1)}, None, "pbft", client_window=4)
        client = Client(config, nursery=None)  # type: ignore[arg-type]  # no connections here
        for _ in range(4):
            client._enqueue(b"x")  # numbers 1-4: number 5 would be a window above 1
        assert await blocked(client)
        for seq in (4, 2, 3):
            finish(client, seq)
            assert await blocked(client), f"1 is unfinished after {seq} finished"
        finish(client, 1)
        assert not await blocked(client)
        for _ in range(4):
            client._enqueue(b"y")  # numbers 5-8
        finish(client, 5)
        finish(client, 7)
        assert not await blocked(client)  # 9 is 3 above 6, the oldest unfinished
        client._enqueue(b"z")
        assert await blocked(client)  # 10 would be 4 above 6
        finish(client, 6)
        assert not await blocked(client)  # 8 is the oldest now

    trio.run(main)
