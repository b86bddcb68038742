"""Safety rules: the one object that signs for a HotStuff replica (after Aptos' SafetyRules).

It holds the replica's signer and the state that keeps its signatures from contradicting each
other, even across a crash:

* ``last_voted_view`` - the highest view it voted or timed out in. It never votes in a view at
  or below it (one vote per view; no vote in a view it gave up on).
* ``lock`` - the locked QC (Yin et al., "HotStuff", PODC'19, chained HotStuff, section 5): on
  learning a QC for block ``b''``, the replica locks on ``b''.justify`` (the QC of ``b''``'s
  parent) when it is newer than the current lock.
* ``last_proposed_view`` / ``last_proposed_hash`` - as a leader, it never signs two different
  proposals for one view.

The voting rule (``safeNode`` in the paper): vote for block ``b`` in view ``v`` when ``v`` is above
the last voted view, ``b`` extends its justify QC (parent link, next height, higher view), and
``b`` extends the locked block *or* its justify QC is from a later view than the lock. Because a
block's parent is always the block its QC certifies and views strictly increase along a chain,
"``b`` extends the locked block" with a justify no newer than the lock means exactly that the
justify certifies the locked block itself; the rule is therefore decided from the QCs alone::

    safe(b) = b.view > last_voted_view
              and (b.justify.view > lock.view or b.justify.block_hash == lock.block_hash)

Every method that changes the state returns the new :class:`SafetyState`; the caller must make
it durable (``CoreBase.persist``) before any message signed here leaves (the driver persists a
``Ready``'s records before it sends its messages). Certificates handed in (the justify QC, a QC
used to move the lock) must already be verified by the caller; these rules decide what may be
signed, not whether a certificate's signatures hold.

Commit votes (a block's ledger commit statement) are signed here too, and one height is never
signed for two blocks while the object lives; across restarts the ledger itself keeps that rule
(a replica signs only blocks of its own committed chain).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from bft.core.errors import SafetyViolation
from bft.core.interface import Signer
from crypto.codec import Bytes, Nested, Record, UInt, record, wire
from crypto.hashing import DIGEST_SIZE

from .messages import QC, HotStuffBlock, Statements


@record(tag=0x60)
class SafetyState(Record):
    """The durable state of the safety rules."""

    last_voted_view: int = wire(UInt())
    last_proposed_view: int = wire(UInt())
    last_proposed_hash: bytes = wire(Bytes(max_size=DIGEST_SIZE))
    lock: QC = wire(Nested(QC))


class SafetyRules:
    """Signs votes, timeouts, proposals and commit votes only when that is safe."""

    __slots__ = ("_commits", "_signer", "_state", "st")

    def __init__(
        self, signer: Signer, chain_id: str, genesis: QC, persisted: Iterable[Record] = ()
    ) -> None:
        self._signer = signer
        self.st = Statements(chain_id)
        state = SafetyState(
            last_voted_view=0, last_proposed_view=0, last_proposed_hash=b"", lock=genesis
        )
        for rec in persisted:
            if isinstance(rec, SafetyState):
                state = _merge(state, rec)
        self._state = state
        self._commits: OrderedDict[int, bytes] = OrderedDict()

    # -- reading

    @property
    def state(self) -> SafetyState:
        return self._state

    @property
    def last_voted_view(self) -> int:
        return self._state.last_voted_view

    @property
    def lock(self) -> QC:
        return self._state.lock

    # -- votes

    def vote_refusal(self, block: HotStuffBlock) -> str:
        """``""`` when voting for ``block`` is safe, else why not."""
        header, justify = block.header, block.justify
        state = self._state
        if header.view <= state.last_voted_view:
            return f"already voted or timed out in view {state.last_voted_view}"
        if header.prev_hash != justify.block_hash or header.height != justify.height + 1:
            return "block does not extend the block its QC certifies"
        if header.view <= justify.view:
            return "block's view is not above its QC's view"
        lock = state.lock
        if justify.view > lock.view or justify.block_hash == lock.block_hash:
            return ""
        return (
            f"block conflicts with the lock (QC of view {justify.view}, lock of view {lock.view})"
        )

    def sign_vote(self, block: HotStuffBlock) -> tuple[bytes, SafetyState]:
        """Sign a vote for ``block``; returns the signature and the state to persist first."""
        reason = self.vote_refusal(block)
        if reason:
            raise SafetyViolation(f"asked to sign an unsafe vote: {reason}")
        header = block.header
        self._state = _replace(self._state, last_voted_view=header.view)
        digest = self.st.vote_digest(header.view, header.height, header.hash())
        return self._signer.sign_digest(digest), self._state

    def observe_qc(self, certified: HotStuffBlock) -> SafetyState | None:
        """A QC for ``certified`` was verified: lock on its justify if newer (the paper's
        ``b_lock <- b'``). Returns the state to persist when the lock moved."""
        candidate = certified.justify
        if candidate.view <= self._state.lock.view:
            return None
        self._state = _replace(self._state, lock=candidate)
        return self._state

    # -- timeouts

    def sign_timeout(self, view: int) -> tuple[bytes, SafetyState | None]:
        """Sign a timeout for ``view``; afterwards no vote in ``view`` is signed."""
        changed = None
        if view > self._state.last_voted_view:
            self._state = _replace(self._state, last_voted_view=view)
            changed = self._state
        return self._signer.sign_digest(self.st.timeout_digest(view)), changed

    # -- proposals

    def proposal_refusal(self, view: int, block_hash: bytes) -> str:
        state = self._state
        if view < state.last_proposed_view:
            return f"already proposed in view {state.last_proposed_view}"
        if view == state.last_proposed_view and block_hash != state.last_proposed_hash:
            return f"already proposed another block in view {view}"
        return ""

    def sign_proposal(self, view: int, block_hash: bytes) -> tuple[bytes, SafetyState]:
        reason = self.proposal_refusal(view, block_hash)
        if reason:
            raise SafetyViolation(f"asked to sign an equivocating proposal: {reason}")
        self._state = _replace(self._state, last_proposed_view=view, last_proposed_hash=block_hash)
        return self._signer.sign_digest(self.st.proposal_digest(view, block_hash)), self._state

    # -- ledger commit votes

    def sign_early_commit(self, view: int, height: int, block_hash: bytes) -> bytes:
        """Sign the ledger commit statement of a block that a QC on the block being voted for
        would commit (see ``HotStuffCore.sign_early_commits``). Not recorded: only 2f+1 such
        signatures certify a block, and they mean the block is committed, so a replica that
        signed one early for a block that never gathered them may sign the block committed at
        that height instead. Never for another block than one this replica committed there."""
        known = self._commits.get(height)
        if known is not None and known != block_hash:
            raise SafetyViolation(f"asked to commit two different blocks at height {height}")
        return self._signer.sign_digest(self.st.commit_digest(view, height, block_hash))

    def sign_commit(self, view: int, height: int, block_hash: bytes) -> bytes:
        """Sign the ledger commit statement of a block the caller committed."""
        known = self._commits.get(height)
        if known is not None and known != block_hash:
            raise SafetyViolation(f"asked to commit two different blocks at height {height}")
        self._commits[height] = block_hash
        while len(self._commits) > 4096:
            self._commits.popitem(last=False)
        return self._signer.sign_digest(self.st.commit_digest(view, height, block_hash))


def _replace(state: SafetyState, **changes: object) -> SafetyState:
    fields = {name: getattr(state, name) for name, _ in SafetyState.SCHEMA}
    fields.update(changes)
    return SafetyState(**fields)  # type: ignore[arg-type]


def _merge(a: SafetyState, b: SafetyState) -> SafetyState:
    """The state that is at least as strict as both (records are read back in any order)."""
    proposed = max(
        (a.last_proposed_view, a.last_proposed_hash), (b.last_proposed_view, b.last_proposed_hash)
    )
    return SafetyState(
        last_voted_view=max(a.last_voted_view, b.last_voted_view),
        last_proposed_view=proposed[0],
        last_proposed_hash=proposed[1],
        lock=a.lock if a.lock.view >= b.lock.view else b.lock,
    )
