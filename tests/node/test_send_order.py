"""The driver sends a ``Ready``'s messages in order per peer, each peer's together, and after
the records they depend on are durable (a Raft leader's own entries excepted)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import trio

from bft.core.ready import BROADCAST, Outbound
from bft.node.disk import DiskRunner
from bft.node.replica import Replica
from bft.node.wal import ProtocolLog
from bft.pbft.messages import Checkpoint, Commit, Prepare
from bft.raft import SPEC, AppendEntries, AppendReply, Entry, RaftConfig, RaftCore
from crypto import Committee, SigningKey
from crypto.codec import Record
from network import Endpoint, LinkFaults, NetworkConfig, PeerLinks
from tests.raft.harness import Cluster, request

KEYS = [SigningKey(bytes([i + 1]) * 32) for i in range(4)]
COMMITTEE = Committee("order", [k.public_key for k in KEYS])


def _replica_with_unconnected_links(
    me: int = 0, protocol: str = "pbft", n: int = 4
) -> tuple[Replica, PeerLinks]:
    """Replica ``me``'s sending side, its links to the others not connected: what it sends
    waits in each link's queue, in the order it was sent."""
    committee = Committee("order", [k.public_key for k in KEYS[:n]])
    endpoint = Endpoint(committee, protocol, None, None, NetworkConfig())
    links = PeerLinks(endpoint, me, {i: ("127.0.0.1", 1) for i in range(n)}, LinkFaults())
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


class _WatchedLog(ProtocolLog):
    """The real protocol log, noting how many frames the links had queued at each append."""

    def __init__(self, directory: Path, links: PeerLinks) -> None:
        super().__init__(directory, SPEC.log_records)
        self.links = links
        self.queued_at_append: list[int] = []

    def append(self, records: Sequence[Record]) -> None:
        self.queued_at_append.append(sum(len(k.queue) for k in self.links.links.values()))
        super().append(records)


def _drive(replica: Replica, links: PeerLinks, core: RaftCore, tmp_path: Path) -> _WatchedLog:
    wal = _WatchedLog(tmp_path / "wal", links)
    replica.core = core
    replica.wal = wal
    replica.metrics = None
    replica.disk = DiskRunner(0.003, trio.CapacityLimiter(1), replica.stats)
    return wal


async def test_a_raft_leader_sends_its_new_entries_while_it_writes_them(tmp_path: Path) -> None:
    cluster = Cluster(3, RaftConfig(check_quorum=False))
    cluster.elect(0)
    leader = cluster.core(0)
    replica, links = _replica_with_unconnected_links(0, "raft", 3)
    wal = _drive(replica, links, leader, tmp_path)
    leader.propose(request(1, 1))
    await replica._carry_out()
    assert wal.queued_at_append == [2]  # AppendEntries to both followers, queued already
    assert [type(SPEC.messages.decode(f)) for k in links.links.values() for f in k.queue] == [
        AppendEntries,
        AppendEntries,
    ]
    wal.close()
    reopened = ProtocolLog(wal.directory, SPEC.log_records)
    assert [type(r) for r in reopened.take_loaded()] == [Entry]  # and written, within the Ready
    reopened.close()


async def test_a_raft_follower_acknowledges_entries_only_once_they_are_durable(
    tmp_path: Path,
) -> None:
    cluster = Cluster(3, RaftConfig(check_quorum=False))
    cluster.elect(0)
    cluster.propose(request(1, 1), to=[0])
    entries = [m for m in cluster.sent(AppendEntries, 0) if m.entries]
    follower = cluster.core(1)
    replica, links = _replica_with_unconnected_links(1, "raft", 3)
    wal = _drive(replica, links, follower, tmp_path)
    follower.step(0, entries[0])
    await replica._carry_out()
    assert wal.queued_at_append == [0]  # nothing went out before the write
    sent = [SPEC.messages.decode(frame) for frame in links.links[0].queue]
    assert [type(m) for m in sent] == [AppendReply] and sent[0].success
    wal.close()
