"""Operations against real replica processes: a replica started as a *twin* (it sends two
validly signed, conflicting proposals to every peer, as two processes sharing one identity
would) is caught: the honest replicas save evidence that ``bft evidence list`` verifies against
the committee file, while the cluster keeps committing; logs are JSON lines naming replica,
view and height, with one ``evidence`` line; the Prometheus endpoint of a real process moves."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path

import pytest
import trio

from bft.client import open_client
from bft.core.evidence import Evidence
from bft.protocols import spec as protocol_spec
from bft.testbed import LoadResult, Testbed, drive, init_cluster, verify_cluster

from .helpers import describe, wait_until
from .helpers import run_bft as bft


def metric(port: int, name: str) -> float:
    import socket

    from prometheus_client.parser import text_string_to_metric_families

    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    body = data.partition(b"\r\n\r\n")[2].decode()
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == name and not sample.labels:
                return float(sample.value)
    raise KeyError(name)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("protocol", ["pbft", "hotstuff"])
async def test_a_twin_leaves_verifiable_evidence_and_the_cluster_goes_on(
    tmp_path: Path, protocol: str
) -> None:
    directory = tmp_path / "cluster"
    init_cluster(directory, protocol=protocol, n=4)
    twin = 0 if protocol == "pbft" else 1  # the first leader: pbft view 0, hotstuff view 1
    metrics_port = free_port()
    for i in range(4):
        path = directory / f"replica-{i}.toml"
        text = path.read_text() + '\n[log]\nformat = "json"\n'
        if i == 2:
            text += f'\n[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n'
        if i == twin:
            text = text.replace("[replica]\n", '[replica]\nbyzantine = "twin"\n', 1)
        path.write_text(text)
    bed = Testbed(directory)
    bed.start()
    count = 600
    result = LoadResult(count)
    honest = [i for i in range(4) if i != twin]
    try:
        with trio.fail_after(120):
            await bed.wait_ready()
            before = await trio.to_thread.run_sync(
                metric, metrics_port, "bft_transactions_committed_total"
            )
            async with open_client(bed.client_config(timeout=60)) as client:
                await drive(client, count=count, window=50, keep_receipts=True, result=result)
            assert result.committed == count, result.summary()
            evidence_dirs = [directory / "data" / f"replica-{i}" / "evidence" for i in honest]
            await wait_until(
                lambda: (
                    all(any(d.glob("*.evidence")) for d in evidence_dirs if d.exists())
                    and any(d.exists() for d in evidence_dirs)
                ),
                "evidence saved by the honest replicas",
            )
            # Replica 2 may hear of the last blocks a moment after the client's quorum.
            while (
                await trio.to_thread.run_sync(
                    metric, metrics_port, "bft_transactions_committed_total"
                )
                < before + count
            ):
                await trio.sleep(0.1)
            assert await trio.to_thread.run_sync(metric, metrics_port, "bft_evidence_total") >= 1
    except trio.TooSlowError:
        pytest.fail(f"stuck; statuses: {await describe(bed)}; load: {result.summary()}")
    finally:
        await trio.to_thread.run_sync(bed.stop)

    witness = (
        honest[0]
        if any((directory / "data" / f"replica-{honest[0]}" / "evidence").glob("*"))
        else honest[1]
    )
    listed = bft("evidence", "list", "--config", str(directory / f"replica-{witness}.toml"))
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "VERIFIED" in listed.stdout and f"replica {twin} signed two" in listed.stdout
    as_json = json.loads(
        bft(
            "evidence", "list", "--config", str(directory / f"replica-{witness}.toml"), "--json"
        ).stdout
    )
    assert as_json and all(r["valid"] and r["signer"] == twin for r in as_json)

    # Anyone with the committee file can check a file; a doctored one is refused.
    files = sorted((directory / "data" / f"replica-{witness}" / "evidence").glob("*.evidence"))
    committee = str(directory / "keys" / "committee.toml")
    assert bft("evidence", "verify", str(files[0]), "--committee", committee).returncode == 0
    doctored = tmp_path / "doctored.evidence"
    evidence = Evidence.decode(files[0].read_bytes())
    messages = protocol_spec(protocol).messages
    second = messages.decode(evidence.second)
    bad = bytes([second.signature[0] ^ 1]) + second.signature[1:]  # type: ignore[attr-defined]
    forged = dataclasses.replace(second, signature=bad)  # type: ignore[type-var]
    doctored.write_bytes(dataclasses.replace(evidence, second=forged.encode()).encode())
    refused = bft("evidence", "verify", str(doctored), "--committee", committee)
    assert refused.returncode == 1 and "INVALID" in refused.stdout, refused.stdout

    # The ledgers are still one history, and hold every acknowledged transaction once.
    report = verify_cluster(bed.cluster, [r.txid for r in result.receipts])  # type: ignore[union-attr]
    assert report.ok, report.problems

    # JSON logs: every line of an honest replica parses and names replica, view and height.
    lines = (directory / "data" / f"replica-{witness}.log").read_text().splitlines()
    docs = [json.loads(line) for line in lines if line.startswith("{")]
    assert docs and all({"replica", "view", "height", "msg"} <= set(d) for d in docs)
    assert all(d["replica"] == witness for d in docs)
    events = {d.get("event") for d in docs}
    assert {"recovered", "serving", "evidence", "shutdown"} <= events, events


async def test_a_flood_of_bad_connections_does_not_flood_the_log(tmp_path: Path) -> None:
    """Hostile input is counted, and logged at most ``burst`` lines per reason and window."""
    directory = tmp_path / "cluster"
    init_cluster(directory, protocol="pbft", n=4, plaintext=True)
    path = directory / "replica-0.toml"
    path.write_text(path.read_text() + "\n[log]\nburst = 5\nwindow_s = 1.0\n")
    bed = Testbed(directory)
    bed.start([0])  # alone: it cannot commit, but it serves its ports
    port = bed.cluster.clients[0][1]

    async def garbage() -> None:
        with trio.move_on_after(5):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(b"\x00\x00\x00\x08not-a-hello-at-all")
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await stream.receive_some(1024)

    try:
        with trio.fail_after(60):
            await bed.wait_ready([0])
            for _ in range(4):
                async with trio.open_nursery() as nursery:
                    for _ in range(50):
                        nursery.start_soon(garbage)
            await trio.sleep(1.2)
            await garbage()  # the first line of a new window says what was dropped
            statuses = await bed.statuses(timeout=5.0)
    finally:
        await trio.to_thread.run_sync(bed.stop)
    log = (directory / "data" / "replica-0.log").read_text()
    refused = [line for line in log.splitlines() if "client connection closed" in line]
    assert 6 <= len(refused) <= 15, len(refused)  # 200 bad connections, a handful of lines
    assert "more like this suppressed" in log
    assert statuses[0] is not None  # and it still answers
