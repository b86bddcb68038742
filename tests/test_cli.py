"""The bft command: keygen, ledger tools, receipts, demo; errors as one readable line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bft.cli import main
from crypto.keyfiles import load_committee, load_secret_key
from ledger.store import LedgerStore
from tests.ledger.chain import CHAIN, build_chain

BLOCKS = build_chain(8, txs_per_block=(1, 5))


@pytest.fixture
def ledger_dir(tmp_path: Path) -> Path:
    path = tmp_path / "ledger"
    with LedgerStore.open(path, chain_id=CHAIN) as store:
        store.extend(BLOCKS)
    return path


@pytest.fixture
def committee_file(tmp_path: Path) -> Path:
    from crypto.keyfiles import write_committee
    from tests.ledger.chain import COMMITTEE

    path = tmp_path / "committee.toml"
    write_committee(path, COMMITTEE)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_keygen_replicas_and_client(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "keys"
    code, out, _ = run(capsys, "keygen", "--chain-id", "alpha", "-n", "7", "--out", str(out_dir))
    assert code == 0 and "7 replica keys" in out
    committee = load_committee(out_dir / "committee.toml")
    assert committee.n == 7 and committee.quorum == 5
    for i in range(7):
        key = load_secret_key(out_dir / f"replica-{i}.key")
        assert key.key.public_key == committee.members[i]
    code, _, err = run(capsys, "keygen", "--chain-id", "alpha", "--out", str(out_dir))
    assert code == 2 and "refusing to overwrite" in err
    code, out, _ = run(
        capsys, "keygen", "--chain-id", "alpha", "--client", "ann", "--out", str(out_dir)
    )
    assert code == 0 and load_secret_key(out_dir / "client-ann.key").role == "client"


def test_verify_good_ledger(
    ledger_dir: Path, committee_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys,
        "ledger",
        "verify",
        str(ledger_dir),
        "--committee",
        str(committee_file),
        "--transactions",
    )
    assert code == 0
    assert "height 8" in out and "certificates" in out


def test_verify_reports_first_bad_height(
    ledger_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    segment = next(ledger_dir.glob("*.seg"))
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0x40
    segment.write_bytes(bytes(data))
    code, _, err = run(capsys, "ledger", "verify", str(ledger_dir))
    assert code == 1
    assert "invalid at height" in err and err.count("\n") == 1


def test_verify_with_wrong_committee(
    ledger_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "keygen", "--chain-id", CHAIN, "-n", "4", "--out", str(tmp_path / "k"))
    code, _, err = run(
        capsys,
        "ledger",
        "verify",
        str(ledger_dir),
        "--committee",
        str(tmp_path / "k" / "committee.toml"),
    )
    assert code == 1 and "invalid at height 1: certificate: invalid signature" in err


def test_show_and_export(ledger_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "ledger", "show", str(ledger_dir), "--json")
    doc = json.loads(out)
    assert code == 0 and doc["height"] == 8 and doc["last_hash"] == BLOCKS[-1].hash().hex()
    code, out, _ = run(
        capsys, "ledger", "show", str(ledger_dir), "--height", "3", "--json", "--txs"
    )
    doc = json.loads(out)
    assert doc["hash"] == BLOCKS[2].hash().hex() and len(doc["txs"]) == len(BLOCKS[2].txs)
    code, out, _ = run(capsys, "ledger", "show", str(ledger_dir), "--height", "3")
    assert code == 0 and BLOCKS[2].hash().hex() in out
    code, out, _ = run(
        capsys, "ledger", "export", str(ledger_dir), "--jsonl", "--from", "2", "--to", "4"
    )
    lines = [json.loads(line) for line in out.splitlines()]
    assert [d["height"] for d in lines] == [2, 3, 4]
    assert lines[0]["header"]["prev_hash"] == BLOCKS[0].hash().hex()
    code, _, err = run(capsys, "ledger", "show", str(ledger_dir), "--height", "99")
    assert code == 2 and "no block at height 99" in err


def test_proof_and_receipt_verify(
    ledger_dir: Path, committee_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ledger import txid_of

    block = next(b for b in BLOCKS if len(b.txs) > 1)
    txid = txid_of(block.txs[0]).hex()
    receipt_file = tmp_path / "r.cbor"
    code, out, _ = run(capsys, "ledger", "proof", str(ledger_dir), txid, "--out", str(receipt_file))
    assert code == 0 and json.loads(out)["height"] == block.height
    code, out, _ = run(
        capsys, "receipt", "verify", str(receipt_file), "--committee", str(committee_file)
    )
    assert code == 0 and out.startswith(f"OK transaction {txid}")
    # The JSON printed by `ledger proof` is accepted as it is.
    code, out, _ = run(capsys, "ledger", "proof", str(ledger_dir), txid)
    json_file = tmp_path / "r.json"
    json_file.write_text(out)
    assert (
        run(capsys, "receipt", "verify", str(json_file), "--committee", str(committee_file))[0] == 0
    )
    import dataclasses

    from ledger import Receipt

    receipt = Receipt.decode(receipt_file.read_bytes())
    assert receipt.path, "pick a block with more than one transaction"
    forged = dataclasses.replace(receipt, path=(bytes(32), *receipt.path[1:]))
    receipt_file.write_bytes(forged.encode())
    code, _, err = run(
        capsys, "receipt", "verify", str(receipt_file), "--committee", str(committee_file)
    )
    assert code == 1 and "receipt is invalid: the Merkle path" in err
    receipt_file.write_bytes(b"\x00not cbor")
    code, _, err = run(
        capsys, "receipt", "verify", str(receipt_file), "--committee", str(committee_file)
    )
    assert code == 2 and "not a receipt" in err
    code, _, err = run(capsys, "ledger", "proof", str(ledger_dir), "00" * 32)
    assert code == 1 and "no transaction" in err
    code, _, err = run(capsys, "ledger", "proof", str(ledger_dir), "xyz")
    assert code == 2 and "not hex" in err


def test_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "demo", "--dir", str(tmp_path / "d"), "--blocks", "6", "--txs-per-block", "20"
    )
    assert code == 0
    assert "OK" in out and "receipt" in out
    code, _, err = run(capsys, "demo", "--dir", str(tmp_path / "d"))
    assert code == 2 and "not empty" in err


def _bft(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bft.cli", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    "argv,words",
    [
        (["ledger", "verify", "/nonexistent/ledger"], "not a ledger"),
        (["receipt", "verify", "/nonexistent/r", "--committee", "/nonexistent/c"], "no such file"),
        (["keygen", "--chain-id", "bad chain", "--out", "{tmp}"], "invalid chain id"),
    ],
)
def test_errors_are_one_line_without_traceback(tmp_path: Path, argv: list[str], words: str) -> None:
    argv = [a.replace("{tmp}", str(tmp_path / "k")) for a in argv]
    result = _bft(*argv)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr and words in result.stderr


def test_world_readable_secret_is_a_one_line_error(tmp_path: Path) -> None:
    from crypto import SigningKey
    from crypto.keyfiles import load_secret_key, write_secret_key

    path = tmp_path / "replica-0.key"
    write_secret_key(path, SigningKey.generate(), chain_id="a", role="replica", id=0)
    os.chmod(path, 0o644)
    code = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from crypto.keyfiles import load_secret_key as l; l(sys.argv[1])",
            str(path),
        ],
        capture_output=True,
        text=True,
    )
    assert code.returncode != 0 and "chmod 600" in code.stderr
    with pytest.raises(Exception, match="chmod 600"):
        load_secret_key(path)


def test_verify_a_mixed_ledger_with_one_committee_per_range(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from crypto.keyfiles import write_committee
    from tests.ledger.chain import COMMITTEE, RAFT_COMMITTEE

    first = build_chain(3, protocol="pbft")
    then = build_chain(2, protocol="raft", start_height=4, prev_hash=first[-1].hash(), seed=2)
    path = tmp_path / "mixed"
    with LedgerStore.open(path, chain_id=CHAIN) as store:
        store.extend(first + then)
    write_committee(tmp_path / "pbft.toml", COMMITTEE)
    write_committee(tmp_path / "raft.toml", RAFT_COMMITTEE)
    code, out, _ = run(
        capsys,
        "ledger",
        "verify",
        str(path),
        "--committee",
        f"{tmp_path}/pbft.toml@1",
        "--committee",
        f"{tmp_path}/raft.toml@4",
    )
    assert code == 0 and "raft from height 4" in out
    code, _, err = run(
        capsys, "ledger", "verify", str(path), "--committee", f"{tmp_path}/pbft.toml"
    )
    assert code == 1 and "height 4" in err
    code, _, err = run(
        capsys, "ledger", "verify", str(path), "--committee", f"{tmp_path}/pbft.toml@x"
    )
    assert code == 2 and "FILE@HEIGHT" in err
