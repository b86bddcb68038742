"""HotStuff's settings, all in ticks, counts and bytes (the runtime maps ticks to time)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bft.core.requests import BatchPolicy


@dataclass(frozen=True)
class HotStuffConfig:
    batch: BatchPolicy = field(default_factory=BatchPolicy)
    """How many transactions (and bytes) a leader puts in one block."""
    view_timeout: int = 10
    """Ticks a replica with work waits in a view before it times out; doubles with each
    consecutive view entered by a timeout certificate beyond the first f (f faulty leaders in a
    row are expected), up to ``max_view_timeout``."""
    max_view_timeout: int = 160
    retransmit_interval: int = 3
    """Fewest ticks between re-sends of the messages of unfinished work (for lossy links). The
    interval adapts: a replica re-sends once its unfinished work has waited twice as long as its
    recent views took, at least this and at most ``max_retransmit_interval``."""
    max_retransmit_interval: int = 20
    """Most ticks between re-sends (``retransmit_interval`` here too: a fixed interval)."""
    status_interval: int = 20
    """Ticks between gossips of the ledger height, view and highest certificates (none while
    blocks commit; up to 16 times longer while idle and unchanged)."""
    fetch_timeout: int = 6
    """Ticks to wait for fetched blocks before asking another peer."""
    fetch_patience: int = 6
    """Ticks a replica that sees peers ahead of its ledger waits for certificates before it
    fetches the certified blocks instead."""
    require_signatures: bool = False
    max_tx_bytes: int = 64 * 1024
    client_window: int = 1024
    max_clients: int = 100_000
    max_client_entries: int = 1_000_000
    mempool_requests: int = 100_000
    mempool_bytes: int = 256 << 20
    mempool_per_client: int = 10_000
    max_orphans: int = 256
    """Blocks kept while their ancestors are being fetched."""
    snapshot_every: int = 64
    """Compact the durable log once this many records were appended since the last snapshot."""
    leaders: Mapping[int, int] = field(default_factory=dict)
    """Leader of chosen views (for Twins); other views use ``view mod n``."""
    evidence_kept: int = 64

    def __post_init__(self) -> None:
        if self.view_timeout < 1 or self.max_view_timeout < self.view_timeout:
            raise ValueError("need 1 <= view_timeout <= max_view_timeout")
        if self.retransmit_interval < 1 or self.status_interval < 1 or self.fetch_timeout < 1:
            raise ValueError("intervals are at least one tick")
        if self.max_retransmit_interval < self.retransmit_interval:
            raise ValueError("need retransmit_interval <= max_retransmit_interval")
