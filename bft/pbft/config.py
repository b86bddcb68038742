"""PBFT's settings, all in ticks, counts and bytes (the runtime maps ticks to time)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bft.core.requests import BatchPolicy
from crypto import Committee


@dataclass(frozen=True)
class PbftConfig:
    checkpoint_interval: int = 16
    """K: a stable checkpoint every K sequence numbers (the log below it is collected)."""
    window: int = 64
    """L: sequence numbers above the low watermark that may be in progress."""
    max_inflight: int = 16
    """How many batches a primary keeps ordered-but-not-executed at once (pipelining)."""
    batch: BatchPolicy = field(default_factory=BatchPolicy)
    request_timeout: int = 100
    """Ticks a backup waits for a pending client request to execute before suspecting the
    primary."""
    starvation_factor: int = 5
    """A request still pending after this many request timeouts makes a backup suspect the
    primary even while other requests execute (it is being passed over)."""
    view_change_timeout: int = 60
    """Ticks to wait for NEW-VIEW; doubles with each consecutive failed view change."""
    max_view_change_timeout: int = 2_000
    retransmit_interval: int = 25
    """Ticks between re-sends of the messages of unfinished work (for lossy links)."""
    require_signatures: bool = False
    max_tx_bytes: int = 64 * 1024
    client_window: int = 1024
    max_clients: int = 100_000
    max_client_entries: int = 1_000_000
    mempool_requests: int = 100_000
    mempool_bytes: int = 256 << 20
    mempool_per_client: int = 10_000
    leaders: Mapping[int, int] = field(default_factory=dict)
    """Primary of chosen views (for Twins); other views use ``view mod n``."""
    evidence_kept: int = 64
    start_height: int = 1
    """For a chain that switched to PBFT: the first height this committee certifies."""
    earlier_committees: tuple[tuple[int, Committee], ...] = ()
    """For a chain that switched mode: ``(first height, committee)`` of each earlier mode, in
    height order; blocks below ``start_height`` (fetched by state transfer, or vouched for by a
    view change) are checked against the committee of their height."""

    # Test-only knob for negative controls: use this quorum (e.g. f+1) instead of the Byzantine
    # quorum to prepare, commit and certify. Unsafe; never set outside tests that show the
    # invariant checkers catch it.
    unsafe_quorum: int | None = None

    def __post_init__(self) -> None:
        if self.checkpoint_interval < 1 or self.window < 2 * self.checkpoint_interval:
            raise ValueError("window must be at least twice the checkpoint interval")
        if not 1 <= self.max_inflight <= self.window:
            raise ValueError("max_inflight must be within the window")
