"""What a PBFT replica makes durable before it sends, and how it reads it back.

A restarted replica must never sign something that conflicts with what it signed before the
crash, and must still report the requests it had prepared when it joins a view change (the
safety of a view change rests on f+1 honest replicas reporting every committed request). So,
before the message that depends on it is sent, a replica persists:

* :class:`ViewRecord` - the view it is in or moving to;
* :class:`VoteRecord` - each pre-prepare, prepare or commit it signs: ``(kind, view, seq,
  digest)``;
* :class:`~bft.pbft.messages.PreparedProof` - each prepared certificate it forms.

Committed blocks are in the ledger, which the driver makes durable before replies. At each
stable checkpoint the replica replaces the whole log by what is still above it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from crypto.codec import Bytes, Record, Text, UInt, record, wire
from crypto.hashing import DIGEST_SIZE

from .messages import PreparedProof

VOTE_KINDS = ("pre-prepare", "prepare", "commit")


@record(tag=0x3A)
class ViewRecord(Record):
    view: int = wire(UInt())


@record(tag=0x3B)
class VoteRecord(Record):
    kind: str = wire(Text(choices=VOTE_KINDS))
    view: int = wire(UInt())
    seq: int = wire(UInt(minimum=1))
    digest: bytes = wire(Bytes(DIGEST_SIZE))


@dataclass
class Durable:
    """The durable state read back from a replica's log."""

    view: int = 0
    votes: dict[tuple[str, int, int], bytes] = field(default_factory=dict)
    prepared: dict[int, PreparedProof] = field(default_factory=dict)

    @classmethod
    def load(cls, records: Iterable[Record]) -> Durable:
        state = cls()
        for rec in records:
            if isinstance(rec, ViewRecord):
                state.view = max(state.view, rec.view)
            elif isinstance(rec, VoteRecord):
                state.votes[(rec.kind, rec.view, rec.seq)] = rec.digest
            elif isinstance(rec, PreparedProof):
                seq = rec.preprepare.seq
                known = state.prepared.get(seq)
                if known is None or known.preprepare.view < rec.preprepare.view:
                    state.prepared[seq] = rec
        return state

    def snapshot(self, above: int) -> list[Record]:
        """Records for everything above sequence number ``above``."""
        out: list[Record] = [ViewRecord(view=self.view)]
        for (kind, view, seq), digest in sorted(self.votes.items()):
            if seq > above:
                out.append(VoteRecord(kind=kind, view=view, seq=seq, digest=digest))
        out += [p for s, p in sorted(self.prepared.items()) if s > above]
        return out

    def forget_below(self, height: int) -> None:
        self.votes = {k: d for k, d in self.votes.items() if k[2] > height}
        self.prepared = {s: p for s, p in self.prepared.items() if s > height}
