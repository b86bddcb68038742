"""The testbed and cluster commands, as a user types them: `bft testbed init/up/status/load/fault/
down`, `bft submit`, `bft tail`, `bft status`, and `bft testbed demo` (the README's command)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from bft.cli import main
from bft.testbed import Testbed, verify_cluster


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def status(capsys: pytest.CaptureFixture[str], directory: Path) -> dict:  # type: ignore[type-arg]
    _, out, _ = run(capsys, "status", "--dir", str(directory), "--json")
    return json.loads(out)  # type: ignore[no-any-return]


@pytest.fixture
def testbed_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Path]:
    directory = tmp_path / "bed"
    code, out, err = run(capsys, "testbed", "init", "--dir", str(directory))
    assert code == 0, err
    assert "pbft cluster of 4 replicas (tolerates f=1)" in out
    yield directory
    Testbed(directory).stop(timeout=5)  # whatever the test left running


def test_a_detached_testbed_through_the_cli(
    testbed_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    d = str(testbed_dir)
    code, out, err = run(capsys, "testbed", "up", "--dir", d, "--detach")
    assert code == 0, err
    assert "runs in the background" in out and "healthy" in out
    doc = status(capsys, testbed_dir)
    # Replica 0 leads a fresh cluster, unless a saturated machine made the others time out.
    assert doc["verdict"] == "healthy" and doc["leader"] in range(4) and doc["leader_votes"] >= 3
    assert all(r["process"] == "running" and r["pid"] for r in doc["replicas"])

    # submit: arguments, in order; then lines on stdin, as JSON receipts.
    code, out, err = run(capsys, "submit", "--dir", d, "alpha", "beta", "gamma")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("height ") for line in lines)
    heights = [int(line.split()[1]) for line in lines]
    assert heights == sorted(heights)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"one\ntwo\n\nthree\n")))
    code, out, err = run(capsys, "submit", "--dir", d, "--json")
    assert code == 0, err
    receipts = [json.loads(line) for line in out.strip().splitlines()]
    assert len(receipts) == 3 and all(len(r["txid"]) == 64 for r in receipts)

    # tail: verified blocks from height 1, one line each (requests sent together may share a
    # block, so the ledger's height is read from the receipts).
    last = max(heights + [r["height"] for r in receipts])
    code, out, err = run(capsys, "tail", "--dir", d, "--from", "1", "--count", str(last))
    assert code == 0, err
    assert [line.split()[1] for line in out.strip().splitlines()] == [
        str(h) for h in range(1, last + 1)
    ]
    code, out, _ = run(capsys, "tail", "--dir", d, "--from", str(last), "--count", "1", "--json")
    assert json.loads(out)["height"] == last and json.loads(out)["signers"]

    # load: closed loop and open loop, with a summary.
    code, out, err = run(capsys, "testbed", "load", "--dir", d, "--count", "400", "--json")
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["committed"] == 400 and summary["indeterminate"] == 0
    assert summary["tx_per_s"] > 0 and summary["p50_ms"] <= summary["p99_ms"]
    code, out, err = run(
        capsys, "testbed", "load", "--dir", d, "--count", "200", "--rate", "400", "--size", "64"
    )
    assert code == 0, err
    assert "committed" in out and "latency p99" in out

    # link faults, told to every replica.
    code, out, err = run(capsys, "testbed", "fault", "--dir", d, "partition", "0,1,2/3")
    assert code == 0, err
    assert out.count("partition ok") == 4
    assert status(capsys, testbed_dir)["replicas"][3]["status"]["faults"]["cut_to"] == [0, 1, 2]
    for argv in (["slow", "1", "--delay", "5"], ["drop", "2", "--probability", "0.01"], ["heal"]):
        code, out, err = run(capsys, "testbed", "fault", "--dir", d, *argv)
        assert code == 0, err
    assert all(not r["status"]["faults"] for r in status(capsys, testbed_dir)["replicas"])
    code, out, err = run(capsys, "testbed", "fault", "kill", "1", "--dir", d)  # --dir anywhere
    assert code == 0, err

    # Byzantine modes: at most f unless forced.
    code, out, err = run(capsys, "testbed", "fault", "--dir", d, "byzantine", "3", "silent")
    assert code == 0, err
    code, out, err = run(capsys, "testbed", "fault", "--dir", d, "byzantine", "2", "silent")
    assert code == 2 and "more than f=1" in err
    code, out, err = run(capsys, "testbed", "fault", "--dir", d, "byzantine", "3", "honest")
    assert code == 0, err

    # process faults: the killed one is down, restart brings it back; pause/resume.
    replicas = status(capsys, testbed_dir)["replicas"]
    assert replicas[1]["health"] == "down"
    code, out, err = run(capsys, "testbed", "fault", "--dir", d, "restart", "1")
    assert code == 0 and "restarted" in out, err
    code, out, err = run(capsys, "testbed", "fault", "--dir", d, "pause", "2")
    assert code == 0, err
    assert status(capsys, testbed_dir)["replicas"][2]["health"] == "paused"
    code, out, err = run(capsys, "testbed", "fault", "--dir", d, "resume", "2")
    assert code == 0, err
    code, out, err = run(capsys, "submit", "--dir", d, "after the faults")
    assert code == 0, err

    # the table, and down.
    code, out, err = run(capsys, "testbed", "status", "--dir", d)
    assert "leader: replica" in out and "height" in out
    code, out, err = run(capsys, "testbed", "down", "--dir", d)
    assert code == 0, err
    assert out.count("exited") == 4
    code, out, _ = run(capsys, "testbed", "down", "--dir", d)
    assert "no replica was running" in out
    report = verify_cluster(Testbed(testbed_dir).cluster)
    assert report.ok, report.problems


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["status", "--dir", "{missing}"], "no such file"),
        (["submit", "--dir", "{missing}", "x"], "no such file"),
        (["testbed", "up", "--dir", "{missing}"], "no such file"),
        (["testbed", "init", "--dir", "{bed}"], "already holds a cluster"),
        (["testbed", "fault", "--dir", "{bed}", "kill", "7"], "no replica 7"),
        (["testbed", "fault", "--dir", "{bed}", "kill", "2"], "replica 2 is not running"),
        (["testbed", "fault", "--dir", "{bed}", "partition", "0,1"], "at least two groups"),
        (["testbed", "fault", "--dir", "{bed}", "partition", "0/0,1"], "in two groups"),
        (["testbed", "fault", "--dir", "{bed}", "drop", "1", "--probability", "2"], "between 0"),
        (["testbed", "fault", "kill", "1"], "give the cluster directory"),
        (["testbed", "load", "--dir", "{bed}", "--count", "0"], "--count"),
        (["testbed", "demo", "--dir", "{full}"], "not empty"),
        (["testbed", "demo", "--dir", "{bed}", "--protocol", "raft"], "not raft"),
    ],
)
def test_errors_are_one_line(
    testbed_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    words: str,
) -> None:
    full = tmp_path / "full"
    full.mkdir()
    (full / "something").write_text("x")
    paths = {"missing": str(tmp_path / "nowhere"), "bed": str(testbed_dir), "full": str(full)}
    code, out, err = run(capsys, *(a.format(**paths) for a in argv))
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bft: error: ") and words in lines[0], err


def test_the_readme_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "testbed-demo"
    code, out, err = run(capsys, "testbed", "demo", "--dir", str(directory), "--count", "600")
    assert code == 0, out + err
    assert "OK: 600 transactions committed" in out
    assert "4 ledgers of height" in out and "identical and verified" in out
    assert out.count("valid") >= 4 and out.count("exited") == 4
    # Run again: it reuses the cluster (and its ledgers) and still verifies.
    code, out, err = run(capsys, "testbed", "demo", "--dir", str(directory), "--count", "100")
    assert code == 0, out + err
    assert "reusing the pbft cluster" in out
    report = verify_cluster(Testbed(directory).cluster)
    assert report.identical and report.ledgers[0].transactions == 700
