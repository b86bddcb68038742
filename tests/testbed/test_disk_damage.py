"""A stopped replica's ledger truncated at a random offset or with a bit flipped (TESTING.md
scenario 16): on start the replica detects the damage by checksum and hash chain, drops what
cannot be trusted, fetches the rest again from its peers, and never holds or serves a corrupt
block: at the end its ledger verifies and equals the others'."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio

from bft.client import open_client
from bft.testbed import Testbed, init_cluster, verify_cluster
from ledger.store import SEGMENT_HEADER

from .helpers import describe

DAMAGED = 3


def segments(bed: Testbed, replica: int) -> list[Path]:
    return sorted((bed.cluster.data_dir(replica) / "ledger").glob("*.seg"))


def damage(bed: Testbed, how: str, rng: random.Random) -> str:
    """Damage replica DAMAGED's ledger (stopped) at a random place; say what was done."""
    segment = segments(bed, DAMAGED)[-1]
    data = bytearray(segment.read_bytes())
    offset = rng.randrange(SEGMENT_HEADER.size, len(data))
    if how == "truncate":
        segment.write_bytes(bytes(data[:offset]))
        return f"truncated {segment.name} at {offset} of {len(data)} bytes"
    bit = rng.randrange(8)
    data[offset] ^= 1 << bit
    segment.write_bytes(bytes(data))
    return f"flipped bit {bit} at {offset} of {len(data)} bytes in {segment.name}"


async def commit(bed: Testbed, label: bytes, count: int) -> list[bytes]:
    async with open_client(bed.client_config(timeout=60, batch_max=20)) as client:
        results = await client.submit_many([label + b" %d" % i for i in range(count)])
    assert all(not isinstance(r, Exception) for r in results), results[:3]
    return [r.txid for r in results]  # type: ignore[union-attr]


@pytest.mark.parametrize("how", ["truncate", "bitflip"])
async def test_a_damaged_ledger_is_detected_truncated_and_refetched(
    tmp_path: Path, how: str
) -> None:
    init_cluster(tmp_path, protocol="pbft", n=4)
    bed = Testbed(tmp_path)
    rng = random.Random(how)
    acknowledged: list[bytes] = []
    done: list[str] = []
    bed.start()
    try:
        with trio.fail_after(180):
            await bed.wait_ready()
            acknowledged += await commit(bed, b"first", 400)
            for round_ in range(3):
                await bed.wait_converged(60)
                await trio.to_thread.run_sync(bed.stop, [DAMAGED])
                done.append(damage(bed, how, rng))
                acknowledged += await commit(bed, b"while down %d" % round_, 100)
                bed.start([DAMAGED])
                await bed.wait_ready([DAMAGED], timeout=60)
                acknowledged += await commit(bed, b"after %d" % round_, 100)
                await bed.wait_converged(60)
                # The files, read cold while it runs, verify and match the others.
                report = verify_cluster(bed.cluster, acknowledged)
                assert report.ok, (done, report.problems)
                assert report.identical, (done, report.heights)
    except trio.TooSlowError:
        pytest.fail(f"stuck after {done}; statuses: {await describe(bed)}")
    finally:
        outcome = await trio.to_thread.run_sync(bed.stop)
    assert set(outcome.values()) == {"exited"}, (outcome, bed.processes.log_tail(DAMAGED, 8))
    log = bed.processes.log_file(DAMAGED).read_text()
    assert "internal error" not in log
    if how == "bitflip":
        # A flip in the last record looks like a torn write; any other is damage in the middle.
        found = log.count("ledger damaged at height") + log.count("truncating a torn tail")
        assert found == len(done), log[-2000:]
