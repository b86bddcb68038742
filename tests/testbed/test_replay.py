"""Replayed signed messages against real replica processes (TESTING.md scenario 4 on the wire):
an insider (replica 3's TLS identity and signing key) sends genuinely signed PBFT messages under
another height, another chain and another view. Each is refused, counted by reason in the
replica's status and logged with that reason (from replica 3); the cluster keeps committing."""

from __future__ import annotations

from pathlib import Path

import trio

from bft.client import open_client
from bft.pbft.messages import Checkpoint, Commit, Prepare, Statements
from bft.testbed import LoadResult, Testbed, ask_statuses, drive, init_cluster, load_cluster
from crypto.codec import encode_value
from crypto.keyfiles import load_committee, load_secret_key
from ledger.block import commit_domain
from network import Endpoint, Hello, NetworkConfig, dial
from network.framing import FramedStream
from network.tls import client_context, replica_files

INSIDER = 3


async def commit(bed: Testbed, count: int) -> LoadResult:
    result = LoadResult(count)
    async with open_client(bed.client_config(timeout=30)) as client:
        await drive(client, count=count, window=count, result=result)
    return result


async def rejected(bed: Testbed, replica: int) -> dict[str, int]:
    async with open_client(bed.client_config(admin=True), wait=0) as client:
        statuses = await ask_statuses(client, bed.n, timeout=2.0, verbose=True)
    status = statuses[replica]
    if status is None:
        raise AssertionError(f"replica {replica} does not answer")
    return status["rejected"]


async def insider_link(directory: Path, target: int) -> FramedStream:
    cluster = load_cluster(directory)
    endpoint = Endpoint(
        load_committee(cluster.committee_file),
        "pbft",
        None,
        client_context(replica_files(cluster.tls_dir, INSIDER)),
        NetworkConfig(handshake_timeout=5.0),
    )
    hello = Hello(kind="replica", id=INSIDER, chain_id=cluster.chain_id, protocol="pbft")
    host, port = cluster.peers[target]
    return await dial(endpoint, host, port, hello, expect_replica=target)


async def wait_for(bed: Testbed, replica: int, reasons: list[str]) -> dict[str, int]:
    """Wait until ``replica`` counts each reason and has logged it; return its counts."""
    with trio.fail_after(10):
        while True:
            counts = await rejected(bed, replica)
            log = bed.processes.log_file(replica).read_text()
            if all(
                counts.get(r, 0) >= 1 and f"from replica {INSIDER}: {r}" in log for r in reasons
            ):
                return counts
            await trio.sleep(0.2)


async def test_replayed_messages_from_another_height_chain_or_view_are_refused(
    tmp_path: Path,
) -> None:
    init_cluster(tmp_path, protocol="pbft", n=4)
    cluster = load_cluster(tmp_path)
    key = load_secret_key(tmp_path / "keys" / f"replica-{INSIDER}.key").key
    here, elsewhere = Statements(cluster.chain_id), Statements("another-chain")
    bed = Testbed(tmp_path)
    bed.start()
    try:
        with trio.fail_after(150):
            await bed.wait_ready()
            assert (await commit(bed, 20)).committed == 20
            height = await bed.wait_converged()

            # Replica 0, in view 0.
            link = await insider_link(tmp_path, 0)
            block_hash = bytes(range(32))
            statement = commit_domain(cluster.chain_id).digest(
                encode_value(["pbft", 0, height, block_hash])
            )
            genuine = key.sign_digest(statement)  # a checkpoint for `height`...
            in_view_0 = key.sign_digest(here.prepare_digest(0, height + 1, bytes(32)))
            frames = [
                # ... replayed for the next height
                Checkpoint(height=height + 1, view=0, block_hash=block_hash, signature=genuine),
                # a prepare signed on another chain
                Prepare(
                    view=0,
                    seq=height + 1,
                    digest=bytes(32),
                    signature=key.sign_digest(elsewhere.prepare_digest(0, height + 1, bytes(32))),
                ),
                # a prepare of view 0 presented as one of view 2
                Prepare(view=2, seq=height + 1, digest=bytes(32), signature=in_view_0),
            ]
            await link.send([f.encode() for f in frames])
            reasons_0 = [
                "bad checkpoint signature",
                "bad prepare signature",
                "bad signature on a message from a later view",
            ]
            counts_0 = await wait_for(bed, 0, reasons_0)
            await link.aclose()

            # The primary crashes; the others move to view 1 and commit there. A genuine commit
            # of view 0, sent now, is one from an earlier view.
            bed.processes.kill(0)
            assert (await commit(bed, 5)).committed == 5
            link = await insider_link(tmp_path, 1)
            late = Commit(
                view=0,
                seq=height + 1,
                digest=bytes(32),
                signature=key.sign_digest(here.commit_digest(0, height + 1, bytes(32))),
            )
            await link.send([late.encode()])
            counts_1 = await wait_for(bed, 1, ["message from an earlier view"])
            await link.aclose()
            bed.start([0])
            assert (await commit(bed, 5)).committed == 5
            await bed.wait_converged(60)
    finally:
        await trio.to_thread.run_sync(bed.stop)
    print(f"replica 0 refused {counts_0}; replica 1 refused {counts_1}")
