"""What an operator relies on: the metrics endpoint (present, and moving under load), log lines
that carry replica, view and height and do not storm, and configuration files that are checked
key by key (``bft config check``)."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from bft.client import ClientConfig, open_client
from bft.node import ConfigError, load_replica_config
from bft.node.logs import JsonFormatter, RateLimit, ReplicaContext, TextFormatter
from bft.node.metrics import Histogram, vouched_height
from bft.testbed import init_cluster
from tests.testbed.helpers import run_bft as bft

from .harness import running

# ------------------------------------------------------------------------------------- logs


def record(msg: str, *args: object, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord("bft.replica", level, __file__, 1, msg, args, None)


def test_rate_limit_is_per_reason_and_reports_what_it_dropped() -> None:
    now = [0.0]
    limit = RateLimit(burst=3, window=10.0, clock=lambda: now[0])
    passed = [limit.filter(record("bad frame from %s", f"peer {i}")) for i in range(50)]
    assert passed == [True] * 3 + [False] * 47  # arguments differ, the reason is one
    assert limit.filter(record("another reason %d", 1))  # other reasons are not held back
    now[0] = 10.5
    nxt = record("bad frame from %s", "peer 99")
    assert limit.filter(nxt)
    assert nxt.suppressed == 47  # type: ignore[attr-defined]
    assert limit.dropped_total == 47
    assert "(47 more like this suppressed)" in fmt(TextFormatter(), nxt)


def fmt(formatter: logging.Formatter, rec: logging.LogRecord) -> str:
    ReplicaContext(2, lambda: (7, 1234)).filter(rec)
    return formatter.format(rec)


def test_every_line_names_replica_view_and_height_in_either_format() -> None:
    rec = record("view %d -> %d", 6, 7)
    rec.event = "view"  # type: ignore[attr-defined]
    doc = json.loads(fmt(JsonFormatter(), rec))
    assert (doc["replica"], doc["view"], doc["height"]) == (2, 7, 1234)
    assert doc["msg"] == "view 6 -> 7" and doc["event"] == "view" and doc["level"] == "WARNING"
    assert " r2 v7 h1234 bft.replica: view 6 -> 7" in fmt(
        TextFormatter(), record("view %d -> %d", 6, 7)
    )


def test_configure_replaces_handlers_and_survives_a_broken_probe() -> None:
    from bft.node.logs import configure

    out = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:

        def probe() -> tuple[int, int]:
            raise AttributeError("no core yet")

        configure(5, fmt="json", level="info", probe=probe, stream=out)
        logging.getLogger("network").info("peer %d up", 3)
        logging.getLogger("network").debug("not shown")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["replica"] == 5 and json.loads(lines[0])["view"] == 0


def test_histogram_buckets_are_cumulative() -> None:
    h = Histogram((0.01, 0.1, 1.0))
    for v in (0.005, 0.05, 0.05, 0.5, 5.0):
        h.observe(v)
    assert h.buckets() == [("0.01", 1), ("0.1", 3), ("1.0", 4), ("+Inf", 5)]
    assert h.count == 5 and h.sum == pytest.approx(5.605)


# ------------------------------------------------------------------------------------ config


@pytest.fixture(scope="module")
def cluster_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("ops")
    init_cluster(directory, protocol="pbft", n=4)
    return directory


def variant(cluster_dir: Path, name: str, extra: str, replica: int = 0) -> Path:
    path = cluster_dir / f"{name}.toml"
    path.write_text((cluster_dir / f"replica-{replica}.toml").read_text() + extra)
    return path


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ("\n[evidence]\nmax_keep = 5\n", ["[evidence.max_keep]", "unknown key", "max_kept"]),
        ("\n[logging]\nformat = 'json'\n", ["[logging]", "unknown table"]),
        ("\n[log]\nformat = 'xml'\n", ["[log.format]", '"text" or "json"']),
        ("\n[log]\nlevel = 'loud'\n", ["[log.level]", "debug, info"]),
        ("\n[metrics]\nlisten = 'localhost'\n", ["[metrics.listen]", "HOST:PORT"]),
        ("\n[evidence]\nmax_kept = 0\n", ["[evidence.max_kept]", "1..1000000"]),
    ],
)
def test_config_errors_name_the_file_and_the_key(
    cluster_dir: Path, extra: str, words: list[str]
) -> None:
    path = variant(cluster_dir, "broken", extra)
    with pytest.raises(ConfigError) as info:
        load_replica_config(path)
    text = str(info.value)
    assert str(path) in text and "\n" not in text
    for word in words:
        assert word in text


def test_defaults_are_documented_values(cluster_dir: Path) -> None:
    config = load_replica_config(cluster_dir / "replica-0.toml")
    assert (config.log_format, config.log_level, config.log_burst) == ("text", "info", 20)
    assert config.metrics_listen is None and config.evidence_kept == 1000


def test_config_check_accepts_a_cluster_and_finds_what_disagrees(cluster_dir: Path) -> None:
    files = [str(cluster_dir / f"replica-{i}.toml") for i in range(4)]
    good = bft("config", "check", *files)
    assert good.returncode == 0, good.stderr
    assert good.stdout.count("ok: ") == 5 and "describe one cluster" in good.stdout

    # Replica 1's file says replica 0 listens elsewhere; a key file of another replica; a typo.
    text = (cluster_dir / "replica-1.toml").read_text()
    port = load_replica_config(files[0]).listen[1]
    moved = cluster_dir / "moved.toml"
    moved.write_text(text.replace(f':{port}"', f':{port + 1}"'))
    wrong_key = cluster_dir / "wrong-key.toml"
    wrong_key.write_text(
        (cluster_dir / "replica-2.toml").read_text().replace("replica-2.key", "replica-3.key")
    )
    typo = variant(cluster_dir, "typo", "\n[metrics]\nlisten_on = ':9100'\n", replica=3)
    bad = bft("config", "check", files[0], str(moved), str(wrong_key), str(typo))
    assert bad.returncode == 1
    assert "Traceback" not in bad.stderr
    errors = bad.stderr.strip().splitlines()
    assert any(str(moved) in e and "[peers.0]" in e for e in errors), errors
    assert any(
        str(wrong_key) in e and "[replica.key]" in e and "not replica 2" in e for e in errors
    ), errors
    assert any(str(typo) in e and "[metrics.listen_on]" in e for e in errors), errors


# ----------------------------------------------------------------------------------- metrics


def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_the_vouched_height_is_one_that_enough_peers_reach() -> None:
    assert vouched_height([], 2) == 0
    assert vouched_height([10**9], 2) == 0  # a lone claim, maybe a lie
    assert vouched_height([7, 10**9, 5], 2) == 7
    assert vouched_height([7, 10**9, 5], 1) == 10**9  # trusted peers (Raft)
    assert vouched_height([7, 5], 3) == 0


async def test_metrics_are_served_and_move_under_load(tmp_path: Path) -> None:
    init_cluster(tmp_path, protocol="pbft", n=4)
    for i in range(4):
        path = tmp_path / f"replica-{i}.toml"
        path.write_text(path.read_text() + '\n[metrics]\nlisten = "127.0.0.1:0"\n')
    with trio.fail_after(90):
        async with running(tmp_path) as nodes:
            port = nodes.replicas[1].metrics_port
            assert port
            code, before = await trio.to_thread.run_sync(scrape, port)
            assert code == 200
            async with open_client(ClientConfig.from_cluster(tmp_path)) as client:
                await client.submit_many([b"m%d" % i for i in range(400)])
            # Replica 1 hears of the last block a moment after the client's quorum.
            while nodes.replicas[1].stats["txs_committed"] < 400:
                await trio.sleep(0.05)
            code, after = await trio.to_thread.run_sync(scrape, port)
            first, then = samples(before), samples(after)
            key = ("bft_transactions_committed_total", ())
            assert then[key] >= 400 > first.get(key, 0)
            assert then[("bft_ledger_height", ())] >= 1
            assert then[("bft_fsync_seconds_count", (("file", "ledger"),))] >= 1
            assert then[("bft_peer_connected", (("peer", "0"),))] == 1
            assert then[("bft_peer_messages_total", (("direction", "received"), ("peer", "0")))] > 0
            assert then[("bft_peer_bytes_total", (("direction", "sent"), ("peer", "2")))] > 0
            assert (
                then[
                    ("bft_info", (("chain_id", "testbed"), ("protocol", "pbft"), ("replica", "1")))
                ]
                == 1
            )
            assert ("bft_view", ()) in then and ("bft_leader", ()) in then
            assert ("bft_queue_depth", (("queue", "inbox"),)) in then
            assert then[("bft_evidence_dropped_total", ())] == 0
            assert then[("bft_client_throttled_total", ())] == 0
            assert ("bft_gc_pause_seconds_count", (("generation", "2"),)) in then
            assert then[("bft_memory_bytes", (("kind", "rss"),))] > 10 << 20
            assert then[("bft_python_blocks", ())] > 0
            assert then[("bft_client_table_places", ())] == 400  # one client, 400 committed
            assert then[("bft_client_table_forgotten_total", ())] == 0
            relayed = "bft_client_transactions_relayed_total"  # replica 1 never took one alone
            assert then[(relayed, (("direction", "sent"),))] == 0
            assert then[(relayed, (("direction", "received"),))] == 0
            # Latency is measured where the client's request was admitted: some replica has it.
            latencies = []
            for replica in nodes.replicas.values():
                _, text = await trio.to_thread.run_sync(scrape, replica.metrics_port)
                latencies.append(samples(text)[("bft_commit_latency_seconds_count", ())])
            assert sum(latencies) >= 400
            assert (await trio.to_thread.run_sync(scrape, port, "/nothing"))[0] == 404
            # One peer (f = 1) claiming a ledger far ahead does not make replica 1 look behind;
            # a second one does (one of two is correct).
            lag = ("bft_catchup_lag_blocks", ())
            nodes.replicas[1].peer_heights.update({0: 10**9})
            assert samples((await trio.to_thread.run_sync(scrape, port))[1])[lag] == 0
            nodes.replicas[1].peer_heights.update({2: 10**6})
            assert samples((await trio.to_thread.run_sync(scrape, port))[1])[lag] > 10**6 - 10**4


async def test_the_transaction_index_is_written_in_the_background(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Syncs leave the index to the replica's index writer, which commits it in batches; lookups
    by transaction id work before and after."""
    from bft.node import replica as replica_module
    from ledger import txid_of

    monkeypatch.setattr(replica_module, "INDEX_EVERY_S", 0.3)
    init_cluster(tmp_path, protocol="pbft", n=4)
    with trio.fail_after(60):
        async with running(tmp_path) as nodes:
            async with open_client(ClientConfig.from_cluster(tmp_path)) as client:
                receipts = await client.submit_many([b"ix%d" % i for i in range(120)])
            replica = nodes.replicas[2]
            store = replica.store
            assert store is not None and store.background_index
            while not replica.stats["index_rows_written"] or store.index_lag:
                await trio.sleep(0.05)
            assert replica.queue_depths()["index_lag"] == 0
            for receipt in receipts[::17]:
                where = store.find_transaction(txid_of(receipt.tx))
                assert where == (receipt.header.height, receipt.index)


async def test_reply_routes_are_forgotten_when_answered_or_old(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica remembers where to send each admitted request's reply until it is answered:
    also when the client has gone away meanwhile (its routes are dropped at the reply, not
    kept until a million have piled up), and a route nobody answers ages out."""
    from bft.node import replica as replica_module

    init_cluster(tmp_path, protocol="pbft", n=4)
    with trio.fail_after(60):
        async with running(tmp_path) as nodes:
            async with open_client(ClientConfig.from_cluster(tmp_path)) as client:
                await client.submit_many([b"r%d" % i for i in range(50)])
            # A client that leaves with its requests in flight.
            async with open_client(ClientConfig.from_cluster(tmp_path)) as client:
                with trio.move_on_after(0.05):
                    await client.submit_many([b"gone%d" % i for i in range(400)])
            while any(r.queue_depths()["routes"] for r in nodes.replicas.values()):
                await trio.sleep(0.05)
            # A route left unanswered is dropped at the next admission once it is too old.
            replica = nodes.replicas[1]
            replica._routes[(b"nobody", 1)] = ((0,), -1e9, False)
            monkeypatch.setattr(replica_module, "ROUTE_TTL_S", 60.0)
            async with open_client(ClientConfig.from_cluster(tmp_path)) as client:
                await client.submit_many([b"after"])
            assert (b"nobody", 1) not in replica._routes


def test_a_reply_goes_to_the_first_and_the_latest_connections_of_a_request() -> None:
    """A request admitted from several connections (a reconnecting client; anyone submitting a
    copy) is answered on the first, and on the latest, up to ROUTE_FANOUT of them."""
    from bft.node.replica import ROUTE_FANOUT, merge_routes

    route = ((1,), 0.0, False)
    route = merge_routes(route, ((1,), 1.0, False))
    assert route == ((1,), 1.0, False)
    for number in range(2, 10):
        route = merge_routes(route, ((number,), float(number), number == 5))
        assert route[0][0] == 1 and route[0][-1] == number and len(route[0]) <= ROUTE_FANOUT
    assert route == ((1, 2, 3, 9), 9.0, True)  # sent to this replica alone once: it answers
    assert merge_routes(route, ((2,), 10.0, False)) == ((1, 2, 3, 9), 10.0, True)


def test_garbage_collector_pauses_are_measured_per_generation() -> None:
    import gc

    from bft.node.metrics import GcWatch

    watch = GcWatch()
    gc.collect()
    assert watch.collections == [0, 0, 0]  # not started: no callback registered
    watch.start()
    watch.start()  # idempotent
    try:
        gc.collect(0)
        gc.collect()
        assert watch.collections[0] >= 1 and watch.collections[2] >= 1
        assert watch.histograms[2].count == watch.collections[2]
        status = watch.status()
        assert status["collections"] == watch.collections
        assert status["max_pause_ms"][2] > 0
    finally:
        watch.close()
    before = list(watch.collections)
    gc.collect()
    assert watch.collections == before
    watch.close()  # twice is harmless


def test_a_connection_whose_requests_are_refused_is_read_more_slowly() -> None:
    from bft.node.replica import Allowance

    refusals = Allowance(200.0, max_pause=2.0)
    assert refusals.take(150, now=10.0) == 0.0  # within a second's allowance
    assert refusals.take(100, now=10.0) == pytest.approx(0.25)  # 50 over: 50/200 s
    assert refusals.take(0, now=10.5) == 0.0  # half a second refills 100
    assert refusals.take(10_000, now=11.0) == 2.0  # a pause is capped
    rate = Allowance(100.0)  # a transaction rate: the pause is what the overdraft takes
    assert rate.take(300, now=5.0) == pytest.approx(2.0)
    assert rate.take(10**9, now=5.0) > 1e6
    assert Allowance(0).take(10**9, now=0.0) == 0.0  # 0: no limit


def test_network_timeouts_and_client_limits_are_configurable(cluster_dir: Path) -> None:
    path = cluster_dir / "timeouts.toml"
    text = (cluster_dir / "replica-0.toml").read_text()
    text = text.replace(
        "[network]\n", "[network]\nhandshake_timeout_s = 2.5\nidle_timeout_s = 60\n"
    )
    text = text.replace(
        "[limits]\n",
        "[limits]\nclient_refusals_per_s = 0\nclient_txs_per_s = 500\n"
        "client_bytes_per_s = 1_000_000\nmax_client_connections = 64\n",
    )
    path.write_text(text)
    config = load_replica_config(path)
    assert (config.handshake_timeout_s, config.idle_timeout_s) == (2.5, 60.0)
    assert config.client_refusals_per_s == 0
    assert (config.client_txs_per_s, config.client_bytes_per_s) == (500, 1_000_000)
    assert config.max_client_connections == 64
    path.write_text(text.replace("max_client_connections = 64", "max_client_connections = 0"))
    with pytest.raises(ConfigError, match=r"\[limits.max_client_connections\]"):
        load_replica_config(path)
    path.write_text(text.replace("idle_timeout_s = 60", "idle_timeout_s = 0"))
    with pytest.raises(ConfigError, match=r"\[network.idle_timeout_s\]"):
        load_replica_config(path)


async def test_a_busy_metrics_port_is_a_one_line_error(tmp_path: Path) -> None:
    import socket

    from bft.node import Replica, ReplicaError
    from bft.node.replica import _only_exception

    init_cluster(tmp_path, protocol="pbft", n=4)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = tmp_path / "replica-0.toml"
        path.write_text(path.read_text() + f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n')
        replica = Replica(load_replica_config(path))
        with trio.fail_after(30), pytest.raises(BaseException) as info:
            await replica.run()
    error = _only_exception(info.value)  # what ``serve`` reports, out of the nursery's group
    assert isinstance(error, ReplicaError)
    assert f"[metrics.listen] cannot listen on 127.0.0.1:{port}" in str(error)
    assert "\n" not in str(error)


@pytest.mark.parametrize("protocol", ["pbft", "raft"])
async def test_transfer_is_refused_where_it_cannot_be_done(tmp_path: Path, protocol: str) -> None:
    """Only a Raft leader takes a leadership transfer; anyone else says why, and nothing moves."""
    n = 3 if protocol == "raft" else 4
    init_cluster(tmp_path, protocol=protocol, n=n)
    with trio.fail_after(60):
        async with running(tmp_path) as nodes:
            admin = ClientConfig.from_cluster(tmp_path, client="admin")
            async with open_client(admin) as client:
                await client.submit(b"x")  # a leader is in place
                leader = nodes.replicas[0].core.status().leader
                follower = (leader + 1) % n
                reply = await client.control(follower, "transfer", {"to": leader})
                assert reply is not None and not reply.ok
                if protocol == "raft":
                    assert f"replica {follower} does not lead (leader: {leader})" in reply.detail
                else:
                    assert "pbft has no leadership transfer" in reply.detail
                reply = await client.control(leader, "transfer", {"to": n + 5})
                assert reply is not None and not reply.ok
                assert (
                    "no leadership transfer" in reply.detail
                    or f"no replica {n + 5}" in reply.detail
                )
            async with open_client(ClientConfig.from_cluster(tmp_path), wait=0) as plain:
                refused = await plain.control(leader, "transfer", {"to": follower})
                assert refused is not None and refused.detail == "not an admin client"
            assert nodes.replicas[0].core.status().leader == leader
