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
    # The closed loop tried both windows of the quick ramp and reports runs at one of them.
    assert [w for w, _ in summary["window_ramp"]] == [300, 600]
    assert summary["sat_window"] == point["sat_window"] in (300, 600)
    assert summary["committed_tps"] > 0
    assert summary["light_latency_ms"]["p50"] > 0
    assert summary["replica_cpu_per_1000"] > 0
    assert summary["bytes_per_tx"] > 0
    assert summary["peak_memory_mb"] > 0
    assert doc["ed25519"]["verify_per_s"] > 0
    # The machine's speed before the point and at the end, beside the one at the start.
    assert point["ed25519_before"] > 0 and doc["ed25519_end"]["verify_per_s"] > 0
    report = (out / "report.md").read_text("utf-8")
    assert "## Headline" in report and "## Checks" in report
    assert "Ed25519/s before" in report
    assert (out / "throughput_latency.png").stat().st_size > 0
    if protocol == "raft":
        assert doc["baselines"]["pysyncobj"]["throughput"]["succeeded"] > 0
        assert "etcd" in report
    # The cluster directories are removed afterwards; no replica is left running.
    assert not list(tmp_path.glob("bft-cluster-bench-*"))


class _ScriptedRun:
    """Stands in for a point's cluster: each closed-loop phase acknowledges at the rate the
    test gives its window (the ramp's decisions, without a cluster to make them slow)."""

    def __init__(self, rates: dict[int, float]) -> None:
        from bench import cluster_bench

        self.rates = rates
        self.point = cluster_bench.Point("scaling", "hotstuff", 10)
        self.results: dict[str, object] = {"phases": {}}
        self.windows: list[int] = []

    def tag(self, kind: str) -> str:
        return kind

    def run_phase(self, phase: object) -> dict[str, object]:
        window = phase.window  # type: ignore[attr-defined]
        self.windows.append(window)
        return {"acked_total": self.rates[window] * 5.0, "last_ack_s": 5.0, "duration": 5.0}


@pytest.mark.parametrize(
    ("rates", "tried", "kept"),
    [
        # Each doubling pays until 4,000 (+5 %): 2,000 is kept, and run twice more.
        ({1000: 6000, 2000: 7600, 4000: 7980}, [1000, 2000, 4000], 2000),
        # The first doubling does not pay: the profile's window is kept.
        ({1000: 20000, 2000: 21000}, [1000, 2000], 1000),
        # A larger window that commits less stops the ramp too.
        ({1000: 20000, 2000: 15000}, [1000, 2000], 1000),
        # Every doubling pays: the ramp stops at the profile's largest window.
        ({1000: 5000, 2000: 8000, 4000: 12000, 8000: 16000}, [1000, 2000, 4000, 8000], 8000),
    ],
)
def test_closed_loop_window_ramp(rates: dict[int, float], tried: list[int], kept: int) -> None:
    from bench import cluster_bench

    profile = cluster_bench.PROFILES["default"]
    run = _ScriptedRun(rates)
    skips: list[int] = []
    window, runs = cluster_bench.saturate(
        run,  # type: ignore[arg-type]
        profile,
        lambda text, skipped=0: skips.append(skipped),
    )
    assert window == kept == run.results["sat_window"]
    assert run.windows == tried + [kept] * (profile.repeats - 1)
    assert runs == [rates[kept]] * profile.repeats
    assert sum(skips) == len(cluster_bench.ramp_windows(profile)) - len(tried)
