"""Check every replica's ledger of a testbed: each verifies against the committee, and all agree.

For each replica the ledger is opened read-only (safe while the replica runs) and verified from
height 1 (hash chain, Merkle roots, every certificate against the committee file). Then the
ledgers are compared block hash by block hash: at every height that two replicas both hold, the
hashes must be equal (agreement, S1); ``identical`` says whether all heights are equal too.
Optionally, a set of acknowledged transaction ids is checked: each must be in every ledger
exactly once (durability, S3), and no transaction may appear twice.
"""

from __future__ import annotations

from collections import Counter
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
    txids: Counter[bytes] = field(default_factory=Counter, repr=False)


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
                check.txids.update(txid_of(tx) for tx in block.txs)
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
                break
        duplicated = [t for t, k in check.txids.items() if k > 1]
        if duplicated:
            problems.append(
                f"replica {check.replica}: {len(duplicated)} transactions appear more than once "
                f"(first {duplicated[0].hex()[:16]})"
            )
    wanted = list(acknowledged)
    if wanted:
        for check in checks:
            missing = [t for t in wanted if check.txids[t] != 1]
            if missing:
                problems.append(
                    f"replica {check.replica}: {len(missing)} acknowledged transactions are not "
                    f"in its ledger exactly once (first {missing[0].hex()[:16]})"
                )
    return VerifyReport(checks, problems)
