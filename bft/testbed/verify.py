"""Check every replica's ledger of a testbed: each verifies against the committee, and all agree.

For each replica the ledger is opened read-only (safe while the replica runs) and verified from
height 1 (hash chain, Merkle roots, every certificate against the committee file). Then the
ledgers are compared block hash by block hash: at every height that two replicas both hold, the
hashes must be equal (agreement, S1); ``identical`` says whether all heights are equal too.
Optionally, a set of acknowledged transaction ids is checked: each must be in every ledger
exactly once (durability, S3), and no transaction may appear twice.

Transaction ids are collected from one ledger, the longest: a ledger that agrees with it block
hash by block hash holds a prefix of it (the hashes cover the transactions), so its own ids need
not be held too. Only a ledger that disagrees is read for its ids separately.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from crypto import Committee
from crypto.keyfiles import load_committee
from ledger import BlockError, CorruptRecord, LedgerError, txid_of
from ledger.store import LedgerStore

from .layout import Cluster


@dataclass
class LedgerCheck:
    replica: int
    height: int = 0
    transactions: int = 0
    last_hash: bytes = b""
    error: str | None = None
    hashes: list[bytes] = field(default_factory=list, repr=False)
    diverged: bool = False


@dataclass
class VerifyReport:
    ledgers: list[LedgerCheck]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def identical(self) -> bool:
        return self.ok and len({(c.height, c.last_hash) for c in self.ledgers}) == 1

    @property
    def heights(self) -> list[int]:
        return [c.height for c in self.ledgers]


def check_ledger(cluster: Cluster, replica: int, committee: Committee) -> LedgerCheck:
    check = LedgerCheck(replica)
    path = cluster.data_dir(replica) / "ledger"
    if not path.exists():
        return check  # never ran, or never committed: an empty ledger
    try:
        with LedgerStore.open(path, chain_id=cluster.chain_id, readonly=True) as store:
            summary = store.verify(committee)
            check.height, check.transactions = summary.height, summary.transactions
            check.last_hash = summary.last_hash
            for block in store.blocks(1, summary.height):
                check.hashes.append(block.hash())
    except (BlockError, CorruptRecord) as exc:
        check.error = f"invalid at height {exc.height}: {exc.reason}"
    except (LedgerError, OSError) as exc:
        check.error = str(exc)
    return check


def verify_cluster(cluster: Cluster, acknowledged: Iterable[bytes] = ()) -> VerifyReport:
    """Verify every replica's ledger and compare them (see the module's docstring)."""
    committee = load_committee(cluster.committee_file)
    checks = [check_ledger(cluster, i, committee) for i in range(cluster.n)]
    problems: list[str] = []
    for check in checks:
        if check.error:
            problems.append(f"replica {check.replica}: ledger {check.error}")
    longest = max(checks, key=lambda c: c.height)
    for check in checks:
        for height, (mine, theirs) in enumerate(
            zip(check.hashes, longest.hashes, strict=False), start=1
        ):
            if mine != theirs:
                problems.append(
                    f"replicas {check.replica} and {longest.replica} disagree at height {height}"
                )
                check.diverged = True
                break
    wanted = list(acknowledged)
    shared = _transactions(cluster, longest)
    for check in checks:
        first, again = _transactions(cluster, check) if check.diverged else shared
        duplicated = [t for t, h in again.items() if h <= check.height]
        if duplicated:
            problems.append(
                f"replica {check.replica}: {len(duplicated)} transactions appear more than once "
                f"(first {duplicated[0].hex()[:16]})"
            )
        beyond = check.height + 1
        missing = [  # not once within the heights this ledger holds
            t
            for t in wanted
            if first.get(t, beyond) > check.height or again.get(t, beyond) <= check.height
        ]
        if missing:
            problems.append(
                f"replica {check.replica}: {len(missing)} acknowledged transactions are not "
                f"in its ledger exactly once (first {missing[0].hex()[:16]})"
            )
    return VerifyReport(checks, problems)


def _transactions(
    cluster: Cluster, check: LedgerCheck
) -> tuple[dict[bytes, int], dict[bytes, int]]:
    """The height of each transaction id's first appearance in a replica's ledger (up to the
    height its check verified), and of the second appearance of ids that appear more than once."""
    first: dict[bytes, int] = {}
    again: dict[bytes, int] = {}
    if check.height == 0:
        return first, again
    path = cluster.data_dir(check.replica) / "ledger"
    with LedgerStore.open(path, chain_id=cluster.chain_id, readonly=True) as store:
        for block in store.blocks(1, check.height):
            height = block.height
            for tx in block.txs:
                txid = txid_of(tx)
                if txid in first:
                    again.setdefault(txid, height)
                else:
                    first[txid] = height
    return first, again
