"""A short chaos run per protocol, through the command a user types: real replica processes under
a seeded mix of kill -9, pauses, partitions, one-way and slow or lossy links and (BFT modes)
Byzantine replicas, then healed; the verdict checks the client history against the ledgers.
The long runs are the same command with a larger ``--duration`` (docs/reliability.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bft.cli import main
from bft.protocols import available

SEEDS = {"pbft": 11, "hotstuff": 12, "raft": 13}


@pytest.mark.parametrize("protocol", available())
def test_a_short_chaos_run_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], protocol: str
) -> None:
    argv = ["testbed", "chaos", "--protocol", protocol, "--duration", "10"]
    argv += ["--seed", str(SEEDS[protocol]), "--dir", str(tmp_path / "run"), "-v"]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert f"chaos {protocol} seed {SEEDS[protocol]}: PASS" in out
    assert "nemesis" in out  # faults did happen
    assert (tmp_path / "run" / "history.jsonl").stat().st_size > 0


def test_chaos_arguments_are_checked_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["testbed", "chaos", "--faults", "kill,meteor", "--dir", str(tmp_path / "x")])
    _, err = capsys.readouterr()
    assert code != 0
    assert err.strip().count("\n") == 0 and "meteor" in err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    code = main(["testbed", "chaos", "--dir", str(tmp_path / "busy")])
    _, err = capsys.readouterr()
    assert code != 0 and "not empty" in err
