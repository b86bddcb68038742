"""The long Twins run (``bft twins``): counts, failures with their seeds, resuming, state files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bft.cli import main
from bft.protocols import spec
from bft.sim import run
from bft.sim.scenarios import twins_config
from bft.sim.twins import has_quorum, twins_scenario
from bft.twins_soak import SoakParams, SoakState, soak

# PBFT, n=4 with two twins (more than f): some scenarios fork, and the run must say which.
UNSAFE = SoakParams("pbft", "all", n=4, twins=2, seed=0, count=60, chunk=20)
SAFE = SoakParams("hotstuff", "both", n=4, twins=1, seed=100, count=60, chunk=20)


def test_scenarios_are_a_function_of_the_seed_and_the_space() -> None:
    a = twins_scenario("pbft", 7, space="all")
    assert a == twins_scenario("pbft", 7, space="all")
    assert a != twins_scenario("pbft", 8, space="all")
    assert len(a.partitions) == len(a.leaders) == 6
    assert len(twins_scenario("hotstuff", 7).partitions) == 7
    # "both" alternates the spaces by seed parity.
    assert twins_scenario("pbft", 4, space="both") == twins_scenario("pbft", 4, space="all")
    assert twins_scenario("pbft", 5, space="both") == twins_scenario("pbft", 5, space="quorum")


def test_the_quorum_space_leaves_a_quorum_in_every_round() -> None:
    rounds = [
        groups
        for seed in range(200)
        for groups in twins_scenario("hotstuff", seed, space="quorum").partitions
    ]
    assert all(has_quorum(groups, 4, 3) for groups in rounds)
    # ... which the unrestricted space does not (else the restriction is vacuous).
    rounds = [g for s in range(200) for g in twins_scenario("hotstuff", s, space="all").partitions]
    assert not all(has_quorum(groups, 4, 3) for groups in rounds)


def test_round_r_is_view_r_with_its_leader_and_partition() -> None:
    for name, first in (("pbft", 0), ("hotstuff", 1)):
        scenario, config = twins_config(spec(name), 3, space="all")
        assert config.core_config.leaders == {
            first + r: who for r, who in enumerate(scenario.leaders)
        }
        assert config.network.round_partitions == {
            first + r: g for r, g in enumerate(scenario.partitions)
        }
        assert config.twins == 1 and not config.check_liveness


def test_unknown_protocol_or_space_is_refused() -> None:
    with pytest.raises(ValueError, match="not raft"):
        twins_scenario("raft", 1)
    with pytest.raises(ValueError, match="unknown scenario space"):
        twins_scenario("pbft", 1, space="some")


def test_a_safe_run_counts_every_scenario() -> None:
    state = soak(SoakState(params=SAFE), workers=1)
    assert state.finished and state.scenarios == 60 and state.failed == 0
    assert state.heights > 0 and state.without_commit < 60


def test_a_fork_is_reported_with_its_seed_and_replays() -> None:
    """The negative control: with more than f twins the run must find forks, and each reported
    seed must fail again on its own."""
    state = soak(SoakState(params=UNSAFE), workers=2)
    assert state.scenarios == 60 and state.failed >= 3
    assert len(state.failures) == state.failed
    for failure in state.failures:
        assert "VIOLATION" in failure.report and "round 0: leader" in failure.scenario
        _, config = twins_config(spec("pbft"), failure.seed, twins=2, space="all")
        assert not run(config).ok


def test_a_stopped_run_resumes_to_the_same_result(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state = SoakState.load(path, UNSAFE)

    def stop_after_two(s: SoakState, _: object) -> None:
        if len(s.done) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        soak(state, workers=1, save=lambda s: s.save(path), on_chunk=stop_after_two)
    saved = SoakState.load(path, UNSAFE)
    assert saved.done == {0, 1} and saved.scenarios == 40
    resumed = soak(saved, workers=1, save=lambda s: s.save(path))
    whole = soak(SoakState(params=UNSAFE), workers=1)
    assert resumed.scenarios == whole.scenarios == 60
    assert (resumed.failed, resumed.heights) == (whole.failed, whole.heights)
    assert sorted(f.seed for f in resumed.failures) == sorted(f.seed for f in whole.failures)
    assert SoakState.load(path, UNSAFE).finished


def test_a_state_file_of_another_run_or_corrupt_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    soak(SoakState(params=SAFE), workers=1, save=lambda s: s.save(path))
    with pytest.raises(ValueError, match="belongs to another run"):
        SoakState.load(path, UNSAFE)
    data = json.loads(path.read_text())
    data["done"] = [99]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="chunks outside the run"):
        SoakState.load(path, SAFE)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not a Twins run's state"):
        SoakState.load(path, SAFE)


def test_cli_reports_forks_and_exits_nonzero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["twins", "--protocol", "pbft", "--twins", "2", "--space", "all", "--count", "60"]
    code = main([*args, "--chunk", "20", "--workers", "1", "--json"])
    out, err = capsys.readouterr()
    assert code == 1
    figures = json.loads(out)
    assert figures["scenarios"] == 60 and figures["failed"] >= 3
    assert "seed " in err and "VIOLATION" in err
    # One seed replays on its own.
    seed = int(err.split("seed ", 1)[1].split(":", 1)[0])
    assert main([*args[:-2], "--seed", str(seed)]) == 1


def test_cli_resumes_from_its_state_and_refuses_a_mismatch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "hs.json"
    args = ["twins", "--protocol", "hotstuff", "--count", "40", "--chunk", "20", "--workers", "1"]
    assert main([*args, "--state", str(state), "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["scenarios"] == 40 and first["failed"] == 0
    assert main([*args, "--state", str(state), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == first and "resuming" in err and "40 scenarios already run" in err
    other = ["twins", "--protocol", "hotstuff", "--count", "80", "--chunk", "20"]
    assert main([*other, "--state", str(state)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bft: error: the state file") and "belongs to another run" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("how", ["SIGINT, ignored by the starting shell", "SIGTERM"])
def test_a_background_run_stops_on_a_signal_and_keeps_its_state(tmp_path: Path, how: str) -> None:
    """A run started in the background (where a non-interactive shell makes SIGINT ignored)
    still stops on ``kill -INT`` or ``kill -TERM``: with the resume message, the state of the
    chunks done, and no worker left behind."""
    import signal
    import subprocess
    import sys
    import time

    state = tmp_path / "hs.json"
    ignore_int = how.startswith("SIGINT")
    child = subprocess.Popen(
        [sys.executable, "-m", "bft.cli", "twins", "--protocol", "hotstuff", "--count", "100000",
         "--chunk", "10", "--workers", "2", "--state", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_int else None,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not state.exists():
            if time.monotonic() > deadline or child.poll() is not None:
                raise AssertionError(f"no state written: {child.communicate()}")
            time.sleep(0.1)
        child.send_signal(signal.SIGINT if ignore_int else signal.SIGTERM)
        _, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    assert child.returncode == 130, err
    assert "stopped after" in err and "run the same command to resume" in err
    assert json.loads(state.read_text())["scenarios"] > 0
    # The workers were in the run's session: none is left.
    left = subprocess.run(["pgrep", "-s", str(child.pid)], capture_output=True, text=True)
    assert left.stdout.strip() == ""
