"""Errors of the protocol cores.

Three kinds, after h11 and etcd/raft:

* :class:`LocalMisuse` - the caller broke the core's contract (``advance`` without ``ready``, a
  request that skipped admission). Raised; a bug in the driver.
* bad remote input - a malformed, mis-signed, stale or duplicate message. Never raised: the core
  records it in :class:`Rejections` (counted by reason, with the last few kept for logs) and
  carries on. A peer cannot crash a replica.
* :class:`SafetyViolation` - an invariant the protocol relies on is broken (two different blocks
  about to commit at one height, a vote that conflicts with a persisted one). Raised and never
  caught: stopping is safer than continuing.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass


class CoreError(Exception):
    """Base of the cores' exceptions."""


class LocalMisuse(CoreError):
    """The driver or caller used a core against its contract."""


class SafetyViolation(CoreError):
    """A protocol invariant is broken. Never catch this."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """One piece of remote input the core refused, and why."""

    sender: int
    kind: str
    reason: str


MAX_REASONS = 256
"""Distinct reasons :class:`Rejections` counts one by one. Some reasons carry what a peer sent (a
height, a decoder's message), so a hostile peer could otherwise grow the table for ever."""

OTHER_REASONS = f"other reasons (more than {MAX_REASONS} distinct ones)"


class Rejections:
    """Counts of refused remote input by reason, and the most recent ones (both bounded).

    At most :data:`MAX_REASONS` reasons are counted apart; later new ones are counted together
    under :data:`OTHER_REASONS` (the recent ones still keep their own text). ``total`` counts all.
    """

    __slots__ = ("_recent", "by_reason", "total")

    def __init__(self, keep: int = 64) -> None:
        self.by_reason: Counter[str] = Counter()
        self._recent: deque[Rejected] = deque(maxlen=keep)
        self.total = 0

    def record(self, sender: int, kind: str, reason: str) -> None:
        self.total += 1
        counts = self.by_reason
        if reason in counts or len(counts) < MAX_REASONS:
            counts[reason] += 1
        else:
            counts[OTHER_REASONS] += 1
        self._recent.append(Rejected(sender, kind, reason))

    @property
    def recent(self) -> tuple[Rejected, ...]:
        return tuple(self._recent)

    def count(self, reason_prefix: str) -> int:
        return sum(n for r, n in self.by_reason.items() if r.startswith(reason_prefix))
