"""The driver sends a ``Ready``'s messages in order per peer, each peer's together."""

from __future__ import annotations

from collections import Counter

from bft.core.ready import BROADCAST, Outbound
from bft.node.replica import Replica
from bft.pbft.messages import Checkpoint, Commit, Prepare
from crypto import Committee, SigningKey
from network import Endpoint, LinkFaults, NetworkConfig, PeerLinks

KEYS = [SigningKey(bytes([i + 1]) * 32) for i in range(4)]
COMMITTEE = Committee("order", [k.public_key for k in KEYS])


def _replica_with_unconnected_links() -> tuple[Replica, PeerLinks]:
    """Replica 0's sending side, its links to 1-3 not connected: what it sends waits in each
    link's queue, in the order it was sent."""
    endpoint = Endpoint(COMMITTEE, "pbft", None, None, NetworkConfig())
    links = PeerLinks(endpoint, 0, {i: ("127.0.0.1", 1) for i in range(4)}, LinkFaults())
    replica = Replica.__new__(Replica)
    replica.links = links
    replica.byzantine = ""
    replica.stats = Counter()
    return replica, links


def test_each_peer_gets_its_messages_in_order_and_broadcasts_reach_all() -> None:
    replica, links = _replica_with_unconnected_links()
    sig = b"s" * 64
    digest = b"d" * 32
    commit = Commit(view=0, seq=1, digest=digest, signature=sig)
    checkpoint = Checkpoint(height=1, view=0, block_hash=digest, signature=sig)
    to_two = Prepare(view=0, seq=2, digest=digest, signature=sig)
    messages = (
        Outbound(BROADCAST, commit),
        Outbound(2, to_two),
        Outbound(BROADCAST, checkpoint),
    )
    replica._send_peers(messages)
    queues = {peer: list(link.queue) for peer, link in links.links.items()}
    assert queues == {
        1: [commit.encode(), checkpoint.encode()],
        2: [commit.encode(), to_two.encode(), checkpoint.encode()],
        3: [commit.encode(), checkpoint.encode()],
    }
    assert replica.stats["messages_sent"] == 3
