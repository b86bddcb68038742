"""Negative controls for the chaos checker: a clean history passes, and each doctored history or
ledger is reported with the right kind of violation. A checker that cannot fail proves nothing."""

from __future__ import annotations

from pathlib import Path

from bft.testbed.chaos import ChaosOptions, ChaosResult
from bft.testbed.history import (
    OK,
    REFUSED,
    TIMEOUT,
    Event,
    EventLog,
    History,
    HistoryReport,
    Op,
    check_history,
)
from crypto import SigningKey
from ledger import Block, Transaction, genesis_hash, make_header
from tests.ledger.chain import CHAIN, certify

IDS = {"a": b"A" * 16, "b": b"B" * 16}


class Run:
    """A small history (two clients) and the ledger that matches it, built op by op."""

    def __init__(self) -> None:
        self.history = History()
        for name, cid in IDS.items():
            self.history.add_client(name, cid)
        self.clock = 0.0
        self.seqs = {name: 0 for name in IDS}

    def op(self, client: str, index: int, outcome: str = OK) -> tuple[Op, bytes]:
        self.clock += 1.0
        payload = b"%s %d" % (client.encode(), index)
        op = self.history.begin(client, index, payload, self.clock, IDS[client])
        self.seqs[client] += 1
        raw = Transaction(
            client=IDS[client], seq=self.seqs[client], payload=payload, signature=b""
        ).encode()
        op.outcome = outcome
        op.finished = self.clock + 0.5
        self.clock += 0.5
        return op, raw


def chain(txs_per_block: list[list[bytes]]) -> list[Block]:
    prev = genesis_hash(CHAIN)
    blocks = []
    for height, txs in enumerate(txs_per_block, start=1):
        header = make_header(
            chain_id=CHAIN,
            height=height,
            prev_hash=prev,
            txs=txs,
            protocol="pbft",
            view=0,
            proposer=0,
        )
        blocks.append(Block(header=header, txs=tuple(txs), certificate=certify(header)))
        prev = header.hash()
    return blocks


def acknowledge(ops: list[tuple[Op, bytes]], blocks: list[Block]) -> None:
    """Give every acknowledged op the receipt fields its place in ``blocks`` implies."""
    where = {raw: (b, i) for b in blocks for i, raw in enumerate(b.txs)}
    for op, raw in ops:
        if op.outcome == OK and raw in where:
            block, index = where[raw]
            op.place, op.block_hash, op.raw = (block.height, index), block.hash(), raw
            op.seq = Transaction.decode(raw).seq


def clean() -> tuple[Run, list[tuple[Op, bytes]]]:
    run = Run()
    ops = [run.op("a", 0), run.op("b", 0), run.op("a", 1), run.op("b", 1, TIMEOUT)]
    return run, ops


def kinds(report: HistoryReport) -> set[str]:
    return {v.kind for v in report.violations}


def check(run: Run, blocks: list[Block], **options: object) -> HistoryReport:
    return check_history(run.history, blocks, chain_id=CHAIN, **options)  # type: ignore[arg-type]


def test_a_clean_history_passes_and_an_indeterminate_op_may_commit_once() -> None:
    run, ops = clean()
    blocks = chain([[ops[0][1], ops[1][1]], [ops[2][1], ops[3][1]]])
    acknowledge(ops, blocks)
    report = check(run, blocks)
    assert report.ok, report.violations
    assert (report.acknowledged, report.indeterminate, report.indeterminate_committed) == (3, 1, 1)
    assert report.ordered_pairs_checked > 0


def test_an_acknowledged_op_missing_from_the_ledger_is_a_durability_violation() -> None:
    run, ops = clean()
    full = chain([[ops[0][1], ops[1][1]], [ops[2][1]]])
    acknowledge(ops, full)
    lost = chain([[ops[0][1], ops[1][1]]])  # the last block never made it
    report = check(run, lost)
    assert kinds(report) == {"durability"}
    assert "a #1" in report.violations[0].text


def test_an_acknowledged_op_at_another_place_or_in_another_block_is_reported() -> None:
    run, ops = clean()
    blocks = chain([[ops[0][1], ops[1][1]], [ops[2][1]]])
    acknowledge(ops, blocks)
    ops[1][0].place = (2, 0)  # the receipt named another place
    ops[2][0].block_hash = b"\x00" * 32  # the receipt certified another block
    report = check(run, blocks)
    assert kinds(report) == {"durability"}
    assert len(report.violations) == 2


def test_a_transaction_twice_in_the_ledger_is_a_duplicate() -> None:
    run, ops = clean()
    blocks = chain([[ops[0][1], ops[1][1]], [ops[2][1], ops[0][1]]])
    acknowledge(ops, blocks)
    assert "duplicate" in kinds(check(run, blocks))


def test_an_indeterminate_op_committed_twice_is_a_duplicate() -> None:
    run, ops = clean()
    timed_out = ops[3][1]
    blocks = chain([[ops[0][1], ops[1][1]], [ops[2][1], timed_out], [timed_out]])
    acknowledge(ops, blocks)
    assert "duplicate" in kinds(check(run, blocks))


def test_one_payload_under_two_sequence_numbers_is_a_duplicate() -> None:
    run, ops = clean()
    again = Transaction(client=IDS["a"], seq=99, payload=b"a 0", signature=b"").encode()
    blocks = chain([[ops[0][1], ops[1][1]], [ops[2][1], again]])
    acknowledge(ops, blocks)
    assert "duplicate" in kinds(check(run, blocks))


def test_a_refused_op_that_committed_is_reported() -> None:
    run = Run()
    ops = [run.op("a", 0), run.op("b", 0, REFUSED)]
    blocks = chain([[ops[0][1], ops[1][1]]])
    acknowledge(ops, blocks)
    assert kinds(check(run, blocks)) == {"refusal"}


def test_a_transaction_no_client_sent_or_garbage_is_a_validity_violation() -> None:
    run, ops = clean()
    forged = Transaction(client=b"Z" * 16, seq=1, payload=b"z 0", signature=b"").encode()
    stolen = Transaction(client=b"Z" * 16, seq=5, payload=b"b 1", signature=b"").encode()
    blocks = chain([[ops[0][1], ops[1][1]], [ops[2][1], forged, stolen, b"\xff\x00garbage"]])
    acknowledge(ops, blocks)
    report = check(run, blocks)
    assert kinds(report) == {"validity"}
    assert len(report.violations) == 3


def test_an_unsigned_transaction_in_a_signed_run_is_a_validity_violation() -> None:
    key = SigningKey(b"\x42" * 32)
    run = Run()
    signer = key.public_key.raw
    run.history.add_client("s", signer)
    good = Transaction.signed(key, CHAIN, 1, b"s 0")
    bad = Transaction(client=signer, seq=2, payload=b"s 1", signature=b"\x01" * 64)
    for index, tx in enumerate((good, bad)):
        op = run.history.begin("s", index, tx.payload, float(index), signer)
        op.outcome = TIMEOUT
    blocks = chain([[good.encode(), bad.encode()]])
    report = check(run, blocks, signed=True)
    assert kinds(report) == {"validity"}
    assert "signature" in report.violations[0].text


def test_an_op_acknowledged_before_another_was_submitted_must_come_first() -> None:
    run, ops = clean()
    # a #0 was acknowledged at 1.5 s, a #1 submitted at 4 s: the ledger puts a #1 first.
    blocks = chain([[ops[2][1], ops[1][1]], [ops[0][1], ops[3][1]]])
    acknowledge(ops, blocks)
    report = check(run, blocks)
    assert kinds(report) == {"order"}


def test_concurrent_ops_may_commit_in_either_order() -> None:
    run = Run()
    first, second = run.op("a", 0), run.op("a", 1)
    second[0].submitted = first[0].submitted  # in flight together
    blocks = chain([[second[1], first[1]]])
    acknowledge([first, second], blocks)
    report = check(run, blocks)
    assert report.ok, report.violations
    assert report.concurrent_inversions == 1


def test_the_verdict_names_the_seed_and_the_events_around_a_violation(tmp_path: Path) -> None:
    run, ops = clean()
    acknowledge(ops, chain([[ops[0][1], ops[1][1]], [ops[2][1]]]))
    log = EventLog(started=0.0)
    log.events += [Event(0.2, "nemesis", "long before"), Event(4.0, "nemesis", "kill -9 [1]")]
    result = ChaosResult(ChaosOptions(protocol="pbft", seed=1234), tmp_path, run.history, log)
    result.report = check(run, chain([[ops[0][1], ops[1][1]]]))
    lines = "\n".join(result.verdict_lines())
    assert "FAIL" in lines and "--seed 1234" in lines
    assert "violation [durability]" in lines
    assert "kill -9 [1]" in lines  # a #1 ran from 3 s to 3.5 s: within the margin
    assert "long before" not in lines
