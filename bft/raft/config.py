"""Raft's settings, all in ticks, counts and bytes (the runtime maps ticks to time)."""

from __future__ import annotations

from dataclasses import dataclass, field

from bft.core.requests import BatchPolicy
from crypto import Committee


@dataclass(frozen=True)
class RaftConfig:
    election_ticks: int = 10
    """The shortest election timeout. Each follower draws its timeout afresh, uniformly from
    ``[election_ticks, 2 * election_ticks)``, from its own seeded generator. It is also the
    leader's check-quorum period and the followers' leader lease."""
    heartbeat_ticks: int = 2
    """Ticks between a leader's heartbeats, which also retransmit what a follower lacks."""
    pre_vote: bool = True
    """Ask for pre-votes before starting an election (section 9.6 of Ongaro's dissertation)."""
    check_quorum: bool = True
    """A leader that has not heard from a majority within ``election_ticks`` steps down, and a
    follower that heard from its leader within ``election_ticks`` ignores (pre-)vote requests
    (leader stickiness, as in etcd)."""
    seed: int = 0
    """Seeds each replica's election-timeout generator, together with its replica id."""

    batch: BatchPolicy = field(default_factory=BatchPolicy)
    max_uncommitted: int = 16
    """Entries a leader appends beyond its commit index before it waits (pipeline depth)."""
    max_entries_per_message: int = 64
    max_message_bytes: int = 4 << 20
    """An AppendEntries carries entries up to this many transaction bytes (at least one)."""
    max_inflight: int = 8
    """AppendEntries in flight to one follower that is keeping up (the flow-control window)."""
    stall_ticks: int = 6
    """A follower whose match index has not moved for this long while entries are in flight
    is probed again from its match index (the in-flight messages were lost)."""

    log_retain: int = 256
    """Committed entries kept in memory for followers that lag a little; one further behind
    fetches the certified blocks from the leader's ledger."""
    log_retain_bytes: int = 8 << 20
    """...and at most this many bytes of their transactions (entries are blocks of up to
    ``batch.max_bytes``: the count alone would let large transactions hold hundreds of MiB)."""
    wal_compact_records: int = 4096
    """Replace the protocol log by a snapshot once it holds this many records..."""
    wal_compact_bytes: int = 64 << 20
    """...or this many bytes of entries' transactions (entries are blocks: by count alone a
    log of large blocks could reach gigabytes on disk, all replayed at a restart)."""
    fetch_timeout: int = 20
    """Ticks to wait for a block fetch before asking again."""

    require_signatures: bool = False
    max_tx_bytes: int = 64 * 1024
    client_window: int = 1024
    max_clients: int = 100_000
    max_client_entries: int = 1_000_000
    mempool_requests: int = 100_000
    mempool_bytes: int = 256 << 20
    mempool_per_client: int = 10_000

    start_height: int = 1
    """The first ledger height this Raft deployment certifies (above the ledger it started from,
    for a chain that switched mode)."""
    earlier_committees: tuple[tuple[int, Committee], ...] = ()
    """For a chain that switched mode: ``(first height, committee)`` of each earlier mode, in
    height order; each governs up to the next one's first height, the last up to
    ``start_height - 1``. Blocks fetched from below ``start_height`` are verified against the
    committee that certified them."""

    def __post_init__(self) -> None:
        if self.election_ticks < 2 or not 1 <= self.heartbeat_ticks < self.election_ticks:
            raise ValueError("need 1 <= heartbeat_ticks < election_ticks, election_ticks >= 2")
        if self.max_uncommitted < 1 or self.max_inflight < 1:
            raise ValueError("max_uncommitted and max_inflight must be positive")
        if not 1 <= self.max_entries_per_message <= 256:
            raise ValueError("max_entries_per_message must be within 1..256")
        if self.log_retain < 0 or self.log_retain_bytes < 0:
            raise ValueError("log_retain and log_retain_bytes must be >= 0")
        if self.wal_compact_records < 1 or self.wal_compact_bytes < 1:
            raise ValueError("wal_compact_records and wal_compact_bytes must be positive")
        heights = [h for h, _ in self.earlier_committees]
        if heights != sorted(heights) or any(not 1 <= h < self.start_height for h in heights):
            raise ValueError("earlier_committees must be in height order, below start_height")

    def committee_for(self, height: int, own: Committee) -> Committee:
        """The committee that certifies the block at ``height``."""
        if height >= self.start_height:
            return own
        chosen = own
        for first, committee in self.earlier_committees:
            if first <= height:
                chosen = committee
        return chosen
