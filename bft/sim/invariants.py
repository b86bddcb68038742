"""The safety and liveness properties of ../shared/TESTING.md, checked after a run.

* S1 agreement: of any two honest ledgers, one is a prefix of the other (same block hash at every
  height both have).
* S2 integrity: every block links to its parent, its Merkle root matches, and its certificate is
  valid for the committee (2f+1 distinct signers in the BFT modes).
* S3 durability: no request appears twice in a ledger, and every acknowledged request is in every
  honest ledger that reaches its height, at the place the client was told, byte for byte.
* S4 validity: every transaction in a ledger is byte-identical to one a client sent (and, when
  clients sign, carries its client's valid signature).
* L liveness: once faults stop, every request is answered, and the honest replicas that are up
  converge on one height.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bft.core.requests import requests_of
from crypto import Committee
from ledger import Block, BlockError, CommitteeSchedule, Transaction, verify_chain

from .workload import Outcome, Workload


@dataclass(frozen=True, slots=True)
class Violation:
    invariant: str
    detail: str

    def __str__(self) -> str:
        return f"{self.invariant}: {self.detail}"


def check_agreement(ledgers: Mapping[int, Sequence[Block]]) -> list[Violation]:
    out: list[Violation] = []
    ids = sorted(ledgers)
    hashes = {i: [b.hash() for b in ledgers[i]] for i in ids}
    for x, a in enumerate(ids):
        for b in ids[x + 1 :]:
            for height, (ha, hb) in enumerate(zip(hashes[a], hashes[b], strict=False), start=1):
                if ha != hb:
                    out.append(
                        Violation(
                            "S1",
                            f"replicas {a} and {b} committed different blocks at height {height} "
                            f"({ha.hex()[:12]} vs {hb.hex()[:12]})",
                        )
                    )
                    break
    return out


def check_integrity(
    replica: int, ledger: Sequence[Block], committee: Committee | CommitteeSchedule
) -> list[Violation]:
    try:
        verify_chain(ledger, chain_id=committee.chain_id, committee=committee)
    except BlockError as exc:
        return [Violation("S2", f"replica {replica}: {exc}")]
    return []


def check_durability(ledgers: Mapping[int, Sequence[Block]], workload: Workload) -> list[Violation]:
    out: list[Violation] = []
    for replica, ledger in ledgers.items():
        seen: dict[tuple[bytes, int], tuple[int, int]] = {}
        for block in ledger:
            for position, request in enumerate(requests_of(block)):
                first = seen.setdefault(request.id, (block.height, position))
                if first != (block.height, position):
                    out.append(
                        Violation(
                            "S3",
                            f"replica {replica}: request {request.client!r}#{request.seq} is in "
                            f"the ledger twice, at {first} and {(block.height, position)}",
                        )
                    )
        for sub in workload.acked():
            assert_place = sub.place
            if assert_place is None:
                continue
            height, position = assert_place
            if height > len(ledger):
                continue
            block = ledger[height - 1]
            if position >= len(block.txs) or block.txs[position] != sub.request.raw:
                out.append(
                    Violation(
                        "S3",
                        f"replica {replica}: acknowledged request {sub.request.client!r}#"
                        f"{sub.request.seq} is not at height {height}, position {position}",
                    )
                )
    return out


def check_validity(
    ledgers: Mapping[int, Sequence[Block]], workload: Workload, chain_id: str, signatures: bool
) -> list[Violation]:
    out: list[Violation] = []
    for replica, ledger in ledgers.items():
        for block in ledger:
            for position, raw in enumerate(block.txs):
                if raw not in workload.sent_raw:
                    out.append(
                        Violation(
                            "S4",
                            f"replica {replica}: height {block.height} position {position} holds a "
                            f"transaction no client sent",
                        )
                    )
                elif signatures and not Transaction.decode(raw).verify_signature(chain_id):
                    out.append(
                        Violation(
                            "S4",
                            f"replica {replica}: height {block.height} position {position} "
                            "has a bad client signature",
                        )
                    )
    return out


def check_liveness(
    heights: Mapping[int, int], workload: Workload, healed_at: int, bound: int
) -> list[Violation]:
    out: list[Violation] = []
    pending = workload.pending()
    if pending:
        out.append(
            Violation("L", f"{len(pending)} requests still unanswered at the end of the run")
        )
    late = [
        s
        for s in workload.submissions.values()
        if s.outcome is Outcome.INDETERMINATE and s.last_sent > healed_at + bound
    ]
    if late:
        out.append(Violation("L", f"{len(late)} requests gave up after the faults healed"))
    if len(set(heights.values())) > 1:
        out.append(Violation("L", f"honest replicas did not converge: heights {dict(heights)}"))
    return out
