"""Client signatures checked once per replica, wherever the transaction arrives first.

A client sends its transaction to every replica in HotStuff (and in PBFT or Raft when the leader
did not answer it in time), and a backup then receives it twice at nearly the same moment: from
the client, and inside the leader's proposal. Both paths check signatures on a worker thread, so
each could start before the other has recorded its result in the
:class:`~bft.core.admission.VerifiedCache`, and the same signature would be checked twice.

:class:`SignatureChecks` records which transactions a batch is checking *before* it leaves the
event loop. A later batch that holds some of them waits for that batch to finish, then finds
them in the cache, and checks only the rest. A batch waits only for batches that claimed their
transactions before it did, so no two batches wait for each other.

A batch of 8 or more signatures is checked on a worker thread (``on_thread``, the default), where
PyNaCl releases the GIL while it verifies: the event loop goes on beside it when the replica has a
core to spare. When it has none (several replicas sharing a machine's cores) the thread only
costs: it takes the GIL back after every signature, and handing it to and from the busy loop
costs more CPU than the loop checking the batch itself (``[crypto] verify_on_thread``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import TypeVar

import trio

from bft.core.admission import (
    AdmissionPolicy,
    VerifiedCache,
    check_transactions,
    verify_signatures,
)
from bft.core.requests import Request
from ledger import looks_signed, txid_of
from network import verify_off_loop

T = TypeVar("T")


class SignatureChecks:
    """The replica's client-signature checks: one cache, and the checks under way."""

    def __init__(self, chain_id: str, cache: VerifiedCache, *, on_thread: bool = True) -> None:
        self.chain_id = chain_id
        self.cache = cache
        self.on_thread = on_thread
        self._pending: dict[bytes, trio.Event] = {}
        self.stats: Counter[str] = Counter()

    @property
    def under_way(self) -> int:
        """Transactions whose signatures a batch is checking now."""
        return len(self._pending)

    async def admit(
        self, raws: Sequence[bytes], policy: AdmissionPolicy
    ) -> tuple[list[Request], list[tuple[int, str]]]:
        """:func:`check_transactions` for a client's batch, each signature checked once."""
        result, _ = await self._run(
            raws, lambda: check_transactions(raws, policy, self.cache), record=None
        )
        return result

    async def proposal(self, signed: Sequence[bytes]) -> list[bytes]:
        """Check the signed transactions of a proposal; return the ids of the good ones (those
        checked now, and those found checked already)."""
        _, ids = await self._run(
            signed,
            lambda: verify_signatures(signed, self.chain_id, self.cache),
            record=self.cache.add,
        )
        cache = self.cache
        return [txid for txid in ids if txid in cache]

    async def _run(
        self,
        raws: Sequence[bytes],
        check: Callable[[], T],
        record: Callable[[T], None] | None,
    ) -> tuple[T, list[bytes]]:
        """Run ``check`` once no other batch is checking any of ``raws``; return its result
        and the ids of the signed transactions among ``raws``."""
        mine = trio.Event()
        ids: list[bytes] = []
        claimed: list[bytes] = []
        others: list[trio.Event] = []
        pending, cache = self._pending, self.cache
        for raw in raws:
            if not looks_signed(raw):
                continue
            txid = txid_of(raw)
            ids.append(txid)
            if txid in cache:
                continue
            event = pending.get(txid)
            if event is None:
                pending[txid] = mine
                claimed.append(txid)
            elif event is not mine and event not in others:
                others.append(event)
        try:
            if others:
                self.stats["waited_for_another_check"] += 1
                for event in others:
                    await event.wait()
            if self.on_thread:
                result = await verify_off_loop(check, signatures=len(claimed))
            else:
                result = check()
            if record is not None:
                record(result)
            self.stats["signatures_checked"] += len(claimed)
            return result, ids
        finally:
            for txid in claimed:
                if pending.get(txid) is mine:
                    del pending[txid]
            mine.set()
