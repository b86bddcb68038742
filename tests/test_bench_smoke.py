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
