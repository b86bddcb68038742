"""Smoke test of the benchmark programs: each runs in-process with --quick, exits 0, prints its
tables and writes its figures as JSON. (bench/ lives in the checkout, not in the wheel.)"""

from __future__ import annotations

import ast
import importlib
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # bench/ is not installed: import it from the checkout
    sys.path.insert(0, str(ROOT))

CASES = [
    ("bench.crypto_bench", ["Ed25519", "PyNaCl/cryptography", "Quorum certificate", "Merkle"]),
    ("bench.codec_bench", ["Strict codec vs plain cbor2", "Block", "strict/plain"]),
    ("bench.ledger_bench", ["Append, fresh ledger", "raw write, no fsync", "Read and recovery"]),
]


@pytest.mark.parametrize(("module", "expected"), CASES)
def test_benchmark_runs_quick(
    module: str,
    expected: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    main = importlib.import_module(module).main
    out_json = tmp_path / "figures.json"
    argv = ["--quick", "--json", str(out_json)]
    if module == "bench.ledger_bench":
        argv += ["--dir", str(tmp_path)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "machine:" in printed
    for text in expected:
        assert text in printed
    doc = json.loads(out_json.read_text("utf-8"))
    assert doc["quick"] is True
    assert doc["figures"]
    assert all(isinstance(f["value"], int | float | bool) for f in doc["figures"].values())
    if module == "bench.ledger_bench":  # the temporary ledgers are cleaned up
        assert [p.name for p in tmp_path.iterdir()] == ["figures.json"]


def test_library_never_imports_bench() -> None:
    for package in ("crypto", "ledger", "network", "bft"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text("utf-8"))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    names = [node.module or ""]
                else:
                    continue
                assert not any(n == "bench" or n.startswith("bench.") for n in names), path


@pytest.mark.parametrize("protocol", ["pbft", "hotstuff", "raft"])
def test_cluster_benchmark_quick(protocol: str, tmp_path: Path) -> None:
    """A few seconds of the cluster benchmark per protocol, on real replica processes: the
    figures are not meaningful, but every phase ran, the ledgers account for every
    acknowledged transaction, and the report (JSON, Markdown, PNG) builds."""
    from bench import cluster_bench

    sections = "protocols,baselines" if protocol == "raft" else "protocols"
    out = tmp_path / "out"
    argv = ["--quick", "--protocols", protocol, "--sections", sections, "--out", str(out)]
    assert cluster_bench.main([*argv, "--workdir", str(tmp_path)]) == 0
    doc = json.loads((out / "results.json").read_text("utf-8"))
    [point] = doc["points"]
    assert point["point"]["protocol"] == protocol
    assert "error" not in point
    assert point["verify"]["ok"]
    assert {p["kind"] for p in point["phases"].values()} == {"light", "sat", "open"}
    summary = point["summary"]
    assert summary["ledger_ok"]
    assert summary["committed_tps"] > 0
    assert summary["light_latency_ms"]["p50"] > 0
    assert summary["replica_cpu_per_1000"] > 0
    assert summary["bytes_per_tx"] > 0
    assert summary["peak_memory_mb"] > 0
    assert doc["ed25519"]["verify_per_s"] > 0
    report = (out / "report.md").read_text("utf-8")
    assert "## Headline" in report and "## Checks" in report
    assert (out / "throughput_latency.png").stat().st_size > 0
    if protocol == "raft":
        assert doc["baselines"]["pysyncobj"]["throughput"]["succeeded"] > 0
        assert "etcd" in report
    # The cluster directories are removed afterwards; no replica is left running.
    assert not list(tmp_path.glob("bft-cluster-bench-*"))
