"""Peer links as the runtime uses them: a restarted peer is redialled at once, and an injected
delay is latency (each batch held once), not a cap of one frame per delay."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
import trio

from bft.testbed.layout import free_ports, init_cluster
from crypto.keyfiles import load_committee
from network import Acceptor, Endpoint, Identity, LinkFaults, NetworkConfig, PeerLink, read_frames
from network.tls import client_context, replica_files, server_context


@pytest.fixture(scope="module")
def cluster_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("links")
    init_cluster(directory, protocol="pbft", n=4)
    return directory


def endpoint(directory: Path, replica: int, config: NetworkConfig) -> Endpoint:
    committee = load_committee(directory / "keys" / "committee.toml")
    files = replica_files(directory / "tls", replica)
    return Endpoint(committee, "pbft", server_context(files), client_context(files), config)


class Inbox:
    def __init__(self, config: NetworkConfig) -> None:
        self.frames: list[bytes] = []
        self.config = config

    async def on_connection(self, identity: Identity, framed) -> None:  # type: ignore[no-untyped-def]
        async def handler(who: Identity, frame: bytes) -> None:
            self.frames.append(frame)

        await read_frames(framed, identity, handler, self.config)


async def test_a_link_in_backoff_redials_as_soon_as_the_peer_is_back(cluster_dir: Path) -> None:
    # A backoff far longer than the test may take: only peer_is_up can make the link dial.
    slow = NetworkConfig(reconnect_min=30.0, reconnect_max=30.0, handshake_timeout=2.0)
    (port,) = free_ports(1)
    inbox = Inbox(slow)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            link = PeerLink(
                endpoint(cluster_dir, 1, slow), 1, 0, ("127.0.0.1", port), LinkFaults(),
                random.Random(1),
            )  # fmt: skip
            nursery.start_soon(link.run)
            link.send(b"hello again")
            while link.stats["connect_failures"] == 0:  # nobody listens yet: now in backoff
                await trio.sleep(0.01)
            acceptor = Acceptor(endpoint(cluster_dir, 0, slow), "replica", inbox.on_connection)
            await nursery.start(acceptor.serve, "127.0.0.1", port)
            link.peer_is_up()  # what the replica does when the peer connects to it
            while inbox.frames != [b"hello again"]:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()


async def test_an_injected_delay_holds_batches_not_each_frame(cluster_dir: Path) -> None:
    config = NetworkConfig(handshake_timeout=2.0)
    faults = LinkFaults()
    faults.delay(0, 0.2)
    inbox = Inbox(config)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            acceptor = Acceptor(endpoint(cluster_dir, 0, config), "replica", inbox.on_connection)
            listeners = await nursery.start(acceptor.serve, "127.0.0.1", 0)
            port = listeners[0].socket.getsockname()[1]
            link = PeerLink(
                endpoint(cluster_dir, 1, config), 1, 0, ("127.0.0.1", port), faults,
                random.Random(1),
            )  # fmt: skip
            nursery.start_soon(link.run)
            began = time.monotonic()
            for i in range(30):
                link.send(b"%d" % i)
            while len(inbox.frames) < 30:
                await trio.sleep(0.01)
            took = time.monotonic() - began
            assert inbox.frames == [b"%d" % i for i in range(30)]
            # Held about once or twice (0.2 s each), never 30 times in a row (6 s).
            assert 0.2 <= took < 2.0, took
            nursery.cancel_scope.cancel()
