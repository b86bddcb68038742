"""The client library against an in-process cluster: order of a batch, status right after
connecting, errors that come out as themselves, and clients that hang up abruptly."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from bft.client import ClientConfig, ClientError, ClusterUnreachable, NotCommitted, open_client
from bft.client.client import Rejected
from bft.client.protocol import Submit
from bft.testbed import init_cluster
from ledger import Receipt, Transaction

from .harness import InProcessCluster, running


@pytest.fixture
def cluster_dir(tmp_path: Path) -> Path:
    init_cluster(tmp_path, protocol="pbft", n=4)
    return tmp_path


async def test_errors_come_out_of_open_client_as_themselves(cluster_dir: Path) -> None:
    nobody = ClientConfig.from_cluster(cluster_dir, connect_timeout=0.2)
    with trio.fail_after(10):
        with pytest.raises(ClusterUnreachable):
            async with open_client(nobody):
                pass
        with pytest.raises(KeyError):
            async with open_client(nobody, wait=0):
                raise KeyError("from the body")


async def test_submit_many_keeps_the_order_of_its_payloads(cluster_dir: Path) -> None:
    config = ClientConfig.from_cluster(cluster_dir)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nodes = InProcessCluster(nodes_cluster(cluster_dir), nursery)
            await nodes.start_all()
            async with open_client(config) as client:
                receipts = await client.submit_many([b"%03d" % i for i in range(300)])
            places = [(r.height, r.index) for r in receipts]  # type: ignore[union-attr]
            assert places == sorted(places) and len(set(places)) == 300
            nursery.cancel_scope.cancel()


async def test_send_calls_back_with_each_outcome_and_frees_its_slot(cluster_dir: Path) -> None:
    """``send`` returns once a request is queued; its callback gets the verified receipt (or
    the error ``submit`` would raise), and only then is the slot free: ``max_inflight`` holds."""
    config = ClientConfig.from_cluster(cluster_dir, max_inflight=8)
    outcomes: dict[int, object] = {}
    most_open = 0
    with trio.fail_after(60):
        async with running(cluster_dir), open_client(config) as client:
            done = trio.Event()

            def record(index: int, outcome: object) -> None:
                outcomes[index] = outcome
                if len(outcomes) == 200:
                    done.set()

            for i in range(200):
                await client.send(b"s%03d" % i, functools.partial(record, i))
                most_open = max(most_open, len(client._pending))
            await done.wait()
            assert not client._pending
    assert most_open == 8
    receipts = [outcomes[i] for i in range(200)]
    assert all(isinstance(r, Receipt) for r in receipts)
    for i, receipt in enumerate(receipts):
        receipt.verify(config.committee)  # type: ignore[union-attr]
        assert Transaction.decode(receipt.tx).payload == b"s%03d" % i  # type: ignore[union-attr]
    places = [(r.height, r.index) for r in receipts]  # type: ignore[union-attr]
    assert places == sorted(places)


async def test_send_reports_timeouts_and_close_and_survives_a_raising_callback(
    cluster_dir: Path,
) -> None:
    """Unanswered, a sent request comes to ``NotCommitted`` at its deadline; one still open when
    the client closes comes to it then; a callback that raises is logged and counted, and the
    client goes on."""
    config = ClientConfig.from_cluster(cluster_dir, timeout=1.0, connect_timeout=0.2)
    got: list[tuple[str, float]] = []
    both_called = trio.Event()

    def note(name: str) -> Callable[[object], None]:
        def callback(outcome: object) -> None:
            got.append((name, trio.current_time() - began))
            if len(got) == 2:
                both_called.set()
            assert isinstance(outcome, NotCommitted), outcome
            if name == "raises":
                raise RuntimeError("a callback's own bug")

        return callback

    with trio.fail_after(20):
        async with open_client(config, wait=0) as client:
            began = trio.current_time()
            await client.send(b"raises", note("raises"))
            await client.send(b"expires", note("expires"))
            await both_called.wait()  # at their deadlines
            assert [name for name, _ in got] == ["raises", "expires"]
            assert all(1.0 <= t < 1.2 for _, t in got), got
            assert client.stats["callback_errors"] == 1 and client.stats["indeterminate"] == 2
            await client.send(b"open at close", note("closed"))
        assert got[-1][0] == "closed" and got[-1][1] < 1.5
    assert client.stats["indeterminate"] == 3 and not client._pending


async def test_status_right_after_connecting_and_clients_that_hang_up(cluster_dir: Path) -> None:
    config = ClientConfig.from_cluster(cluster_dir)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nodes = InProcessCluster(nodes_cluster(cluster_dir), nursery)
            await nodes.start_all()
            for _ in range(5):
                # open_client waits for a quorum only; status waits for the replica it asks.
                async with open_client(config) as client:
                    statuses = [await client.status(i, timeout=5) for i in range(4)]
                    assert all(s is not None and s["replica"] == i for i, s in enumerate(statuses))
                    await client.submit(b"x")
                # ... and each time the client hangs up without a goodbye: no replica minds.
            while any(r.status()["clients"] for r in nodes.replicas.values()):
                await trio.sleep(0.02)  # each replica notices the hang-up and drops the session
            async with open_client(config) as client:
                await client.submit(b"still committing")
            nursery.cancel_scope.cancel()


def nodes_cluster(directory: Path):  # type: ignore[no-untyped-def]
    from bft.testbed import load_cluster

    return load_cluster(directory)


@pytest.mark.parametrize("limit", ["client_window", "max_inflight"])
async def test_requests_beyond_the_client_limits_wait(cluster_dir: Path, limit: str) -> None:
    """Nobody answers, so the first requests stay unfinished until their deadline. Later ones
    must not be numbered a window or more above them (``client_window``: the replicas would
    refuse those as stale), nor be more than ``max_inflight`` outstanding; they wait, and a
    submit cancelled while it waits leaves nothing behind."""
    config = ClientConfig.from_cluster(cluster_dir, **{limit: 5}, timeout=0.5, connect_timeout=0.2)
    outcomes: list[str] = []
    with trio.fail_after(20):
        async with open_client(config, wait=0) as client:

            async def one() -> None:
                try:
                    await client.submit(b"x")
                except NotCommitted:
                    outcomes.append("indeterminate")

            async with trio.open_nursery() as nursery:
                for _ in range(12):
                    nursery.start_soon(one)
                await trio.sleep(0.2)
                assert sorted(client._pending) == [1, 2, 3, 4, 5]
                with trio.move_on_after(0.05) as waiting:
                    await client.submit(b"cancelled while it waits")
                assert waiting.cancelled_caught
            assert client._seq == 12 and outcomes == ["indeterminate"] * 12
            assert client._slots.value == config.max_inflight and not client._pending
            if limit == "client_window":
                assert client.stats["window_waits"] > 0


async def test_a_lone_request_leaves_at_once_and_requests_under_load_share_frames(
    cluster_dir: Path,
) -> None:
    """The batcher lingers only while other requests are in flight: one request at a time is
    not held back by ``linger``; many at once share frames."""
    config = ClientConfig.from_cluster(cluster_dir, linger=0.5)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nodes = InProcessCluster(nodes_cluster(cluster_dir), nursery)
            await nodes.start_all()
            async with open_client(config) as client:
                await client.submit(b"warm-up")
                began = trio.current_time()
                for i in range(3):
                    await client.submit(b"alone %d" % i)
                assert trio.current_time() - began < 3 * 0.5  # no linger paid
                frames = client.stats["batches_sent"]
                await client.submit_many([b"many %d" % i for i in range(200)])
                assert client.stats["batches_sent"] - frames < 20
            nursery.cancel_scope.cancel()


async def test_a_signing_client_numbers_above_an_earlier_process_with_its_key(
    cluster_dir: Path,
) -> None:
    """A signing client's identity is its key, which outlives the process: a new process must
    not number from 1 again (its transactions would collide with the earlier ones)."""
    config = ClientConfig.from_cluster(cluster_dir, sign=True, connect_timeout=0.2)
    with trio.fail_after(20):
        async with open_client(config, wait=0) as earlier:
            first = earlier._seq + 1
            assert first > 10**15  # microseconds of the wall clock
            earlier._seq += 50_000  # it sent a burst
        await trio.sleep(0.001)
        async with open_client(config, wait=0) as later:
            assert later._seq + 1 > first
        unsigned = ClientConfig.from_cluster(cluster_dir, connect_timeout=0.2)
        async with open_client(unsigned, wait=0) as fresh:
            assert fresh._seq == 0  # a new identity each time: from 1
        named = ClientConfig.from_cluster(cluster_dir, client_id=b"app-1", connect_timeout=0.2)
        async with open_client(named, wait=0) as kept_identity:
            assert kept_identity.client_id == b"app-1" and kept_identity._seq + 1 > first
        for size in (33, 32):  # 32 bytes is a signing client's id: replicas would refuse it
            with pytest.raises(ClientError, match=r"client_id must be 1\.\.31 bytes"):
                async with open_client(dataclasses.replace(named, client_id=bytes(size)), wait=0):
                    pass
        chosen = ClientConfig.from_cluster(cluster_dir, sign=True, first_seq=7, connect_timeout=0.2)
        async with open_client(chosen, wait=0) as kept:
            assert kept._seq == 6
        with pytest.raises(ClientError, match="first_seq must be positive"):
            bad = ClientConfig.from_cluster(cluster_dir, sign=True, first_seq=0)
            async with open_client(bad, wait=0):
                pass


async def test_a_sequence_number_used_before_is_a_clear_error_not_a_timeout(
    cluster_dir: Path,
) -> None:
    """Two processes with one key and the same numbers: the second learns at once that its
    number holds another transaction, instead of waiting out its timeout."""
    numbered = ClientConfig.from_cluster(cluster_dir, sign=True, first_seq=1, timeout=20)
    with trio.fail_after(60):
        async with running(cluster_dir):
            async with open_client(numbered) as one:
                await one.submit(b"first process")
            async with open_client(numbered) as two:
                with trio.fail_after(10), pytest.raises(Rejected, match="already used"):
                    await two.submit(b"second process")
                assert two.stats["seq_taken"] == 1
            async with open_client(ClientConfig.from_cluster(cluster_dir, sign=True)) as three:
                receipt = await three.submit(b"third process")
            assert Transaction.decode(receipt.tx).payload == b"third process"


async def test_an_unanswered_request_gives_up_at_its_deadline(cluster_dir: Path) -> None:
    """``timeout`` is kept per request (by one task for all of them): each unanswered request
    raises ``NotCommitted`` once its own deadline passes, not before, and in submission order."""
    config = ClientConfig.from_cluster(cluster_dir, timeout=1.0, connect_timeout=0.2)
    ended: list[tuple[int, float]] = []
    with trio.fail_after(20):
        async with open_client(config, wait=0) as client:
            began = trio.current_time()

            async def one(i: int) -> None:
                try:
                    await client.submit(b"x%d" % i)
                except NotCommitted:
                    ended.append((i, trio.current_time() - began))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(one, 0)
                await trio.sleep(0.5)
                nursery.start_soon(one, 1)
            assert not client._pending
    assert [i for i, _ in ended] == [0, 1]
    assert 1.0 <= ended[0][1] < 1.4, ended
    assert 1.5 <= ended[1][1] < 1.9, ended  # its own deadline, not the first's + timeout
    assert client.stats["indeterminate"] == 2


@pytest.mark.parametrize("protocol", ["pbft", "hotstuff"])
async def test_a_replica_lying_to_clients_does_not_keep_them_from_their_receipts(
    tmp_path: Path, protocol: str
) -> None:
    """One replica answers every client with a block certificate that does not verify; its
    answers race the honest ones. Every transaction must still get its receipt in time."""
    init_cluster(tmp_path, protocol=protocol, n=4)
    config = ClientConfig.from_cluster(tmp_path, timeout=8)
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            nodes = InProcessCluster(nodes_cluster(tmp_path), nursery)
            await nodes.start_all()
            nodes.replicas[3].byzantine = "bad-replies"
            async with open_client(config) as client:
                results = []
                for start in range(0, 240, 20):
                    results += await client.submit_many(
                        [b"tx %d" % i for i in range(start, start + 20)]
                    )
                failed = [r for r in results if isinstance(r, ClientError)]
                assert not failed, failed[:3]
                # Whether the liar's answer is the one checked depends on arrival order (it
                # was, for some blocks, in every run before the fix; tests/client pins the
                # rule itself), so the count of bad certificates seen is not asserted.
                for r in results:
                    r.verify(client.committee)  # type: ignore[union-attr]
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("targeted", [False, True])
async def test_a_hotstuff_block_is_answered_by_its_proposer_and_the_f_after_it(
    tmp_path: Path, targeted: bool
) -> None:
    """A HotStuff request sent to every replica is answered by the f+1 replicas from its block's
    proposer on (one of them honest), not by the others. One sent to the leaders an answer
    named (``targeted``) is answered by the replicas it was sent to."""
    init_cluster(tmp_path, protocol="hotstuff", n=4)
    config = ClientConfig.from_cluster(tmp_path, leader_first=targeted)
    answers: list[tuple[int, int, int]] = []  # (replica, block proposer, height)
    sent_to: list[tuple[int, ...]] = []
    with trio.fail_after(60):
        async with running(tmp_path) as nodes, open_client(config) as client:
            on_committed, send_alone = client._on_committed, client._send_alone

            def watched(replica: int, message: Any) -> None:
                answers.append((replica, message.header.proposer, message.header.height))
                on_committed(replica, message)

            def targets_noted(targets: tuple[int, ...], frame: bytes) -> bool:
                sent_to.append(targets)
                return send_alone(targets, frame)

            client._on_committed = watched  # type: ignore[method-assign]
            client._send_alone = targets_noted  # type: ignore[method-assign]
            for start in range(0, 120, 12):  # in rounds: blocks of several views
                results = await client.submit_many([b"hs %d" % i for i in range(start, start + 12)])
                assert all(isinstance(r, Receipt) for r in results)
            left = sum(r.stats["answers_left_to_others"] for r in nodes.replicas.values())
            assert client.stats["widened"] == 0 and client.stats["retries"] == 0
    by_height: dict[int, set[int]] = {}
    for replica, _, height in answers:
        by_height.setdefault(height, set()).add(replica)
    if not targeted:
        assert not sent_to
        assert all((replica - proposer) % 4 <= 1 for replica, proposer, _ in answers), answers
        assert max(len(replicas) for replicas in by_height.values()) == 2  # f+1 answer
        assert left > 0
    else:
        assert len(sent_to) >= 9  # every round but the first (no answer named leaders yet)
        first = min(by_height)
        for height, replicas in by_height.items():
            if height != first:
                assert any(replicas <= set(targets) for targets in sent_to), (height, replicas)


async def test_a_copy_of_a_request_does_not_take_its_replies(tmp_path: Path) -> None:
    """Anyone can submit a copy of a client's transaction (a faulty replica sees them all). The
    replicas must still answer the client that submitted it first, not only the last
    connection: here only two replicas hold the client's request (the others start later and
    learn it from the proposal), and both also get a copy from another connection."""
    from bft.client.protocol import Submit

    init_cluster(tmp_path, protocol="pbft", n=4)
    config = ClientConfig.from_cluster(tmp_path, timeout=30, retry_after=60)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nodes = InProcessCluster(nodes_cluster(tmp_path), nursery)
            await nodes.start(0)
            await nodes.start(1)
            async with (
                open_client(config, wait=2) as victim,
                open_client(config, wait=2) as copier,
            ):
                receipts = []

                async def submit() -> None:
                    receipts.append(await victim.submit(b"mine"))

                nursery.start_soon(submit)
                while not victim._pending:
                    await trio.sleep(0.01)
                raw = next(iter(victim._pending.values())).raw
                await trio.sleep(0.2)  # admitted by replicas 0 and 1, not committed (no quorum)
                copier._broadcast([Submit(txs=(raw,)).encode()])
                await trio.sleep(0.2)
                await nodes.start(2)
                await nodes.start(3)
                with trio.fail_after(20):  # well before the victim's retry (60 s)
                    while not receipts:
                        await trio.sleep(0.05)
                receipts[0].verify(victim.committee)
                assert victim.stats["retries"] == 0
            nursery.cancel_scope.cancel()


def replayer(directory: Path) -> ClientConfig:
    """A client that numbers from 1 under a fixed id, so its transactions can be sent again."""
    return ClientConfig.from_cluster(directory, timeout=30, client_id=b"replayer", first_seq=1)


async def one_block_each(config: ClientConfig, count: int) -> list[Receipt]:
    """Commit ``count`` transactions one at a time: each in a block of its own."""
    async with open_client(config) as client:
        receipts = [await client.submit(b"old %d" % i) for i in range(count)]
    assert len({r.header.height for r in receipts}) == count
    return receipts


async def test_answers_from_the_ledger_do_not_hold_up_ordering(tmp_path: Path) -> None:
    """Transactions settled long ago, submitted again, are answered from their blocks in the
    ledger. Those reads must not stall ordering: here each takes 50 ms, and 60 old transactions
    from 60 blocks are replayed at once (3 s of reads); a new transaction still commits at once.
    """
    import time

    init_cluster(tmp_path, protocol="pbft", n=4)
    config = replayer(tmp_path)
    with trio.fail_after(120):
        async with running(tmp_path) as nodes:
            old = await one_block_each(config, 60)
            top = max(r.header.height for r in old)
            for node in nodes.replicas.values():
                store = node.store
                real_get = store.get

                def slow_get(height: int, real_get=real_get) -> object:  # type: ignore[no-untyped-def]
                    if height <= top:
                        time.sleep(0.05)  # a slow disk
                    return real_get(height)

                store.get = slow_get  # type: ignore[method-assign]
            async with (
                open_client(ClientConfig.from_cluster(tmp_path, timeout=30)) as fresh,
                open_client(config) as again,
            ):
                await fresh.submit(b"pad")
                await again.wait_connected()  # a frame to a replica not yet connected is lost
                again._broadcast([Submit(txs=tuple(r.tx for r in old)).encode()])
                while not all(n.stats["client_txs_settled_again"] for n in nodes.replicas.values()):
                    await trio.sleep(0.01)
                began = trio.current_time()
                await fresh.submit(b"new")
                assert trio.current_time() - began < 1.5


async def test_replaying_transactions_from_old_blocks_costs_the_refusal_allowance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each answer for a block older than FREE_ANSWER_BLOCKS is a ledger read: a connection
    replaying old transactions, even each only once, is charged for them and throttled; the
    same replay of recent blocks (a lagging replica's backlog, a prompt retry) is free."""
    from bft.node import replica as replica_module

    monkeypatch.setattr(replica_module, "FREE_ANSWER_BLOCKS", 5)
    init_cluster(tmp_path, protocol="pbft", n=4)
    path = tmp_path / "replica-0.toml"
    path.write_text(
        path.read_text().replace("[limits]\n", "[limits]\nclient_refusals_per_s = 10\n")
    )
    with trio.fail_after(120):
        async with running(tmp_path) as nodes:
            old = await one_block_each(replayer(tmp_path), 40)
            target = nodes.replicas[0]
            async with open_client(ClientConfig.from_cluster(tmp_path, timeout=30)) as again:
                await again.wait_connected()  # a frame to a replica not yet connected is lost
                again._send(0, [Submit(txs=tuple(r.tx for r in old[-3:])).encode()])
                while target.stats["client_txs_settled_again"] < 3:
                    await trio.sleep(0.01)
                assert target.stats["client_txs_settled_long_ago"] == 0
                again._send(0, [Submit(txs=tuple(r.tx for r in old[:-3])).encode()])
                while target.stats["client_txs_settled_again"] < 40:
                    await trio.sleep(0.01)
                assert target.stats["client_txs_settled_long_ago"] >= 30
                assert target.stats["client_throttled"] == 1


@pytest.mark.parametrize("protocol", ["pbft", "raft", "hotstuff"])
async def test_requests_go_to_the_leader_alone_once_the_client_knows_it(
    tmp_path: Path, protocol: str
) -> None:
    """PBFT and Raft: once a block names the leader, the other replicas receive no request from
    the client (they learn each from the leader's proposal), and every receipt still verifies.
    HotStuff's leader changes every view: once an answer names the leaders of the next views
    (three of four), each request goes to those, and they answer it."""
    init_cluster(tmp_path, protocol=protocol, n=3 if protocol == "raft" else 4)
    config = ClientConfig.from_cluster(tmp_path, timeout=30)
    with trio.fail_after(90):
        async with running(tmp_path) as nodes, open_client(config) as client:
            await client.submit(b"first")  # to every replica: no leader known yet
            received = {i: r.stats["client_txs_received"] for i, r in nodes.replicas.items()}
            receipts = []
            for start in range(0, 200, 50):
                receipts += await client.submit_many(
                    [b"tx %d" % i for i in range(start, start + 50)]
                )
            for receipt in receipts:
                receipt.verify(client.committee)  # type: ignore[union-attr]
            more = {
                i: r.stats["client_txs_received"] - received[i] for i, r in nodes.replicas.items()
            }
            if protocol == "hotstuff":
                assert sum(more.values()) == 200 * 3, more  # f+1, but at least three
                assert client.stats["batches_to_leader"] >= 4
                assert client.stats["widened"] == 0 and client.stats["retries"] == 0
                assert len(client._next_leaders) == 3
            else:
                leader = client._leader
                assert leader is not None and more[leader] == 200, (leader, more)
                assert sum(more.values()) == 200, more
                assert client.stats["widened"] == 0 and client.stats["retries"] == 0


@pytest.mark.parametrize("fault", ["silent", "stopped"])
async def test_a_leader_that_fails_is_left_before_the_retry(tmp_path: Path, fault: str) -> None:
    """The PBFT primary fails after the client learned it. *silent*: it keeps its client
    connections but sends nothing to its peers; requests it alone received go to every replica
    after ``leader_timeout``. *stopped*: its connection is gone; requests go to every replica
    at once (``leader_timeout`` here outlasts the test). Either way long before ``retry_after``:
    the backups' timers run out, a view change makes a new primary, and the client then sends
    to it."""
    init_cluster(tmp_path, protocol="pbft", n=4)
    leader_timeout = 1.0 if fault == "silent" else 60.0
    config = ClientConfig.from_cluster(
        tmp_path, timeout=40, retry_after=60, leader_timeout=leader_timeout
    )
    with trio.fail_after(90):
        async with running(tmp_path) as nodes, open_client(config) as client:
            await client.submit(b"before")
            assert client._leader == 0
            if fault == "silent":
                nodes.replicas[0].byzantine = "silent"
            else:
                await nodes.stop(0)
                while client._conns[0].framed is not None:
                    await trio.sleep(0.01)  # the client sees the connection close
            to_leader = client.stats["batches_to_leader"]
            began = trio.current_time()
            receipts = await client.submit_many([b"during %d" % i for i in range(20)])
            waited = trio.current_time() - began
            failed = [r for r in receipts if isinstance(r, ClientError)]
            assert not failed, failed[:3]
            assert waited < 30, waited
            assert client.stats["retries"] == 0
            if fault == "silent":
                assert client.stats["widened"] >= 20
            else:
                assert client.stats["widened"] == 0
                assert client.stats["batches_to_leader"] == to_leader
            assert client._leader not in (None, 0)
            after = await client.submit(b"after")
            assert after.header.proposer == client._leader


async def test_hotstuff_requests_commit_with_a_silent_leader_among_those_named(
    tmp_path: Path,
) -> None:
    """One of the leaders an answer names falls silent (it keeps its client connections but
    sends nothing to its peers). The others it was named with hold every request and propose
    it when they lead: all commit, without ``retry_after`` (which outlasts the test) and
    without being sent to the others at ``leader_timeout``."""
    init_cluster(tmp_path, protocol="hotstuff", n=4)
    config = ClientConfig.from_cluster(tmp_path, timeout=40, retry_after=60)
    with trio.fail_after(90):
        async with running(tmp_path) as nodes, open_client(config) as client:
            await client.submit_many([b"before %d" % i for i in range(10)])
            await client.submit(b"names the leaders")
            assert len(client._next_leaders) == 3
            silent = client._next_leaders[0]
            nodes.replicas[silent].byzantine = "silent"
            receipts = await client.submit_many([b"during %d" % i for i in range(40)])
            assert all(isinstance(r, Receipt) for r in receipts), receipts[:3]
            assert client.stats["retries"] == 0 and client.stats["widened"] == 0
            assert silent not in {r.header.proposer for r in receipts}  # type: ignore[union-attr]


@pytest.mark.parametrize("protocol", ["pbft", "raft"])
async def test_requests_sent_to_a_replaced_leader_are_relayed_to_the_new_one(
    tmp_path: Path, protocol: str
) -> None:
    """The leader changes while a client is idle (PBFT: a view change while the primary is
    silent; Raft: a leadership transfer), so the client still sends to the old leader alone.
    That replica relays the requests to the new leader: they commit without the client's
    ``leader_timeout`` or ``retry_after`` (both outlast the test), and the client then sends to
    the new leader."""
    init_cluster(tmp_path, protocol=protocol, n=3 if protocol == "raft" else 4)
    config = ClientConfig.from_cluster(tmp_path, timeout=40, retry_after=60, leader_timeout=60)
    with trio.fail_after(90):
        async with running(tmp_path) as nodes, open_client(config) as client:
            await client.submit(b"before")
            assert client._leader == 0
            old = nodes.replicas[0]
            if protocol == "pbft":
                old.byzantine = "silent"
                others = dataclasses.replace(config, leader_first=False)
                async with open_client(others) as other:
                    await other.submit(b"through a view change")
                old.byzantine = ""
            else:
                old._inbox.send_nowait(("transfer", 1))
            while old.core.status().leader in (None, 0):
                await trio.sleep(0.01)
            new = old.core.status().leader
            to_leader = client.stats["batches_to_leader"]
            began = trio.current_time()
            receipts = await client.submit_many([b"after %d" % i for i in range(20)])
            waited = trio.current_time() - began
            assert all(isinstance(r, Receipt) for r in receipts), receipts[:3]
            assert waited < 10, waited
            assert client.stats["widened"] == 0 and client.stats["retries"] == 0
            assert client.stats["batches_to_leader"] > to_leader
            assert old.core.status().extra["relayed"] >= 20
            assert nodes.replicas[new].core.status().extra["relayed_in"] >= 20
            assert {r.header.proposer for r in receipts} == {new}  # type: ignore[union-attr]
            assert client._leader == new


async def _forward(port: int, target: tuple[str, int], task_status: trio.TaskStatus[None]) -> None:
    """Listen on ``port`` and join each connection to ``target``, bytes both ways."""

    async def pump(source: trio.SocketStream, sink: trio.SocketStream) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            async for chunk in source:
                await sink.send_all(chunk)
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await sink.send_eof()

    async def join(accepted: trio.SocketStream) -> None:
        async with (
            accepted,
            await trio.open_tcp_stream(*target) as upstream,
            trio.open_nursery() as both,
        ):
            both.start_soon(pump, accepted, upstream)
            both.start_soon(pump, upstream, accepted)

    await trio.serve_tcp(join, port, host="127.0.0.1", task_status=task_status)


async def test_requests_sent_before_the_leaders_connection_was_up_reach_it_then(
    tmp_path: Path,
) -> None:
    """``open_client`` waits for a quorum only, so a client may send its first requests to every
    replica but the Raft leader (whose followers do not relay what a client sent to them all).
    When the connection to the leader comes up, the requests it lacks are sent to it: they
    commit without ``retry_after`` (which outlasts the test)."""
    init_cluster(tmp_path, protocol="raft", n=3)
    config = ClientConfig.from_cluster(tmp_path, timeout=15, retry_after=60, leader_timeout=60)
    with trio.fail_after(60):
        async with running(tmp_path) as nodes, trio.open_nursery() as nursery:
            while (leader := nodes.replicas[0].core.status().leader) is None:
                await trio.sleep(0.01)
            with socket.socket() as probe:  # a free port, nothing listening on it yet
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            late = dataclasses.replace(
                config, replicas={**config.replicas, leader: ("127.0.0.1", port)}
            )
            async with open_client(late, wait=2) as client:
                assert client._conns[leader].framed is None
                began = trio.current_time()
                async with trio.open_nursery() as submitting:
                    results: list[object] = []

                    async def submit() -> None:
                        results.extend(
                            await client.submit_many([b"early %d" % i for i in range(20)])
                        )

                    submitting.start_soon(submit)
                    followers = [r for i, r in nodes.replicas.items() if i != leader]
                    while any(r.stats["client_txs_received"] < 20 for r in followers):
                        await trio.sleep(0.01)  # sent to the two followers, which hold them
                    assert not results
                    await nursery.start(_forward, port, config.replicas[leader])
                waited = trio.current_time() - began
                assert all(isinstance(r, Receipt) for r in results), results[:3]
                assert waited < 10, waited
                assert client.stats["caught_up"] >= 20 and client.stats["retries"] == 0
                assert nodes.replicas[leader].stats["client_txs_received"] == 20
            nursery.cancel_scope.cancel()
