"""Negative controls for the Raft property checker: each breaks one rule of the protocol (or the
state directly) and shows that the checker reports it. A checker that can never fail proves
nothing (../shared/TESTING.md 2)."""

from __future__ import annotations

import pytest

from bft.raft import RaftConfig, RaftCore
from bft.raft.log import LogEntry

from .harness import Cluster, log_of, request
from .properties import PropertyViolation
from .test_paper import figure_8

MANUAL = RaftConfig(check_quorum=False)


def test_the_checker_accepts_a_correct_run() -> None:
    c = Cluster(5)
    c.run(40)
    for seq in range(1, 10):
        c.propose(request(1, seq))
        c.run(2)
    assert c.checker.steps > 100 and c.checker.committed_max >= 9


def test_election_safety_two_leaders_in_one_term() -> None:
    c = Cluster(5, RaftConfig(pre_vote=False, check_quorum=False))
    for i in range(5):
        c.core(i).majority = 2  # a broken quorum: two disjoint "majorities" of 5
    c.cut(0, 3)
    c.cut(0, 4)
    c.cut(1, 2)
    c.campaign(0)
    c.campaign(1)
    with pytest.raises(PropertyViolation, match="election safety"):
        c.deliver()


def test_a_vote_forgotten_across_a_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    c = Cluster(3, RaftConfig(pre_vote=False, check_quorum=False))
    monkeypatch.setattr(RaftCore, "persist_term", lambda self: None)
    c.campaign(0)
    c.deliver(keep=lambda s, d, m: d != 0)  # replica 1 votes for 0 (not durably)
    c.crash(1)
    with pytest.raises(PropertyViolation, match="term went back"):
        c.restart(1)  # back at term 0


def test_leader_append_only() -> None:
    c = Cluster(3, MANUAL)
    c.elect(0)
    c.propose(request(1, 1))
    c.deliver()
    c.core(0).log.truncate_from(1)
    with pytest.raises(PropertyViolation, match="leader append-only"):
        c.tick(only=[0])


def test_log_matching() -> None:
    """Two logs with different entries of one index and term."""
    with pytest.raises(PropertyViolation, match="log matching"):
        Cluster(3, MANUAL, logs={0: (2, log_of([1, 2])), 1: (2, log_of([1, 2], tag="x"))})


def test_a_log_that_is_not_a_hash_chain() -> None:
    c = Cluster(3, MANUAL, logs={0: (1, log_of([1, 1]))})
    core = c.core(0)
    second = core.log.entries[1]
    forged = log_of([1, 1], tag="other")[1]
    core.log.entries[1] = LogEntry.of(forged)
    del second
    with pytest.raises(PropertyViolation, match="hash chain"):
        c.checker.check_nodes(c.nodes)


def test_leader_completeness_without_the_election_restriction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    c = figure_8()
    c.run(3)  # S1's term-4 entry commits, with index 2 under it
    assert c.core(0).commit == 3
    monkeypatch.setattr(RaftCore, "log_up_to_date", lambda self, last_term, last_index: True)
    c.crash(0)
    c.restart(4)
    with pytest.raises(PropertyViolation, match="leader completeness"):
        for _ in range(3):
            c.campaign(4)
            c.deliver()


def test_state_machine_safety_when_acknowledged_entries_are_not_durable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    c = Cluster(3, MANUAL)
    c.elect(0)
    c.crash(2)
    original = RaftCore.add_entry

    def forgetful(self: RaftCore, entry: LogEntry, *, persist: bool = True) -> None:
        original(self, entry, persist=persist and self.replica == 0)

    monkeypatch.setattr(RaftCore, "add_entry", forgetful)
    c.propose(request(1, 1))
    c.deliver()
    assert c.core(0).commit == 1  # 0 and 1 "stored" it
    c.crash(1)
    c.restart(1)  # lost it
    c.crash(0)
    c.restart(2)
    c.propose(request(2, 1), to=[1, 2])
    with pytest.raises(PropertyViolation):
        c.elect(1)
        c.run(5)


def test_a_violation_names_the_seed() -> None:
    c = Cluster(3, MANUAL)
    c.checker.seed = 7
    c.elect(0)
    c.propose(request(1, 1))
    c.core(0).log.truncate_from(1)
    with pytest.raises(PropertyViolation, match="seed 7, step"):
        c.tick(only=[0])


def test_the_simulation_checks_every_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """In the simulator too: without the election restriction, a seeded random run elects a
    leader that lacks a committed entry, and the failure names the seed."""
    from bft.protocols import spec
    from bft.sim.scenarios import random_scenario

    from .properties import check_run

    monkeypatch.setattr(RaftCore, "log_up_to_date", lambda self, last_term, last_index: True)
    with pytest.raises(PropertyViolation, match=r"seed 38, .*leader completeness"):
        check_run(random_scenario(spec("raft"), 3, 38))
