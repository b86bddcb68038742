"""Seeded random fault scenarios, and the parser for the ``--faults`` option of ``bft sim``.

A random scenario mixes, within the fault model of the protocol: message loss and duplication,
delay jitter, partitions over time windows (two groups), one-way link cuts, crashes with restarts,
up to ``f`` twins (BFT) and silent replicas. Liveness is checked when the scenario stays within
the model: at most ``f`` faulty identities, and every crashed replica restarts.
"""

from __future__ import annotations

import random
from dataclasses import replace

from bft.core.interface import ProtocolSpec

from .network import DelayModel, NetworkModel, OneWayCut, PartitionWindow, groups_of
from .simulator import CrashAt, SimConfig
from .twins import TwinsScenario, twins_scenario
from .workload import WorkloadConfig

MS = 1_000


def random_scenario(
    spec: ProtocolSpec,
    n: int,
    seed: int,
    *,
    duration: int = 1_500 * MS,
    byzantine: bool = True,
    core_config: object = None,
    real_crypto: bool = False,
) -> SimConfig:
    """A reproducible random mix of faults for ``spec`` on ``n`` replicas."""
    rng = random.Random(f"scenario/{spec.name}/{n}/{seed}")
    f = spec.faults(n)
    nodes = n
    twins = 0
    silent: frozenset[int] = frozenset()
    if byzantine and spec.byzantine and f and rng.random() < 0.35:
        if rng.random() < 0.6:
            twins = rng.randint(1, f)
            nodes += twins
        else:
            silent = frozenset(rng.sample(range(n), rng.randint(1, f)))
    network = NetworkModel(
        delay=DelayModel(
            base=rng.choice([200, 500, 1_000]), jitter=rng.choice([0, 200, 1_000, 5_000])
        ),
        drop=rng.choice([0.0, 0.0, 0.02, 0.1]),
        duplicate=rng.choice([0.0, 0.0, 0.05]),
        lossy_until=duration,
    )
    for _ in range(rng.choice([0, 0, 1, 2])):
        start = rng.randrange(0, duration - 100 * MS)
        end = min(duration, start + rng.randrange(50 * MS, 800 * MS))
        members = list(range(nodes))
        rng.shuffle(members)
        cut = rng.randint(1, nodes - 1)
        network.windows.append(
            PartitionWindow(start, end, groups_of([members[:cut], members[cut:]]))
        )
    if rng.random() < 0.2:
        a, b = rng.sample(range(nodes), 2)
        start = rng.randrange(0, duration // 2)
        network.cuts.append(OneWayCut(a, b, start, start + rng.randrange(100 * MS, duration // 2)))
    crashes = []
    if rng.random() < 0.5:
        for node in rng.sample(range(n), rng.randint(1, max(1, f))):
            at = rng.randrange(50 * MS, duration - 200 * MS)
            crashes.append(CrashAt(node, at, at + rng.randrange(50 * MS, 600 * MS)))
    workload = WorkloadConfig(
        clients=rng.randint(1, 4),
        requests_per_client=rng.randint(5, 25),
        max_inflight=rng.randint(1, 6),
        submit_every=rng.choice([5 * MS, 30 * MS, 80 * MS]),
    )
    if spec.name in ("pbft", "raft"):
        # Their clients send to the leader they know alone (drawn last: the faults of a seed
        # stay what they were).
        workload = replace(workload, alone=rng.choice([0.0, 0.5, 1.0]))
    return SimConfig(
        spec=spec,
        n=n,
        seed=seed,
        duration=duration,
        network=network,
        crashes=crashes,
        silent=silent,
        twins=twins,
        workload=workload,
        core_config=core_config,
        real_crypto=real_crypto,
        check_liveness=len(silent) + twins <= f,
    )


def parse_faults(text: str, config: SimConfig) -> SimConfig:
    """Apply a ``--faults`` string such as ``drop=0.1,crash=2@300:900,partition=0.1|2.3@200:800``.

    Items (times in milliseconds of virtual time):

    * ``drop=P``, ``dup=P``: loss and duplication probability until the end of ``--rounds``;
    * ``delay=BASE:JITTER``: delay in microseconds;
    * ``crash=R@T[:T2]``: crash replica ``R`` at ``T``, restart it at ``T2``;
    * ``partition=A.B|C.D@T:T2``: groups of replicas (dot-separated) from ``T`` to ``T2``;
    * ``cut=A>B@T:T2``: drop messages from ``A`` to ``B`` only;
    * ``silent=R``: replica ``R`` never sends (Byzantine, mute);
    * ``twins=K``: the first ``K`` replicas get a twin (Byzantine, equivocating).
    """
    network = replace(
        config.network, windows=list(config.network.windows), cuts=list(config.network.cuts)
    )
    crashes = list(config.crashes)
    silent = set(config.silent)
    twins = config.twins
    forms = {
        "drop": "drop=P",
        "dup": "dup=P",
        "delay": "delay=BASE_US:JITTER_US",
        "crash": "crash=R@MS[:MS]",
        "partition": "partition=A.B|C.D@MS:MS",
        "cut": "cut=A>B@MS[:MS]",
        "silent": "silent=R",
        "twins": "twins=K",
    }
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = item.partition("=")
        if key not in forms:
            raise ValueError(f"unknown fault {item!r}; known: {', '.join(forms.values())}")
        try:
            if key == "drop":
                network.drop = float(value)
                network.lossy_until = config.duration
            elif key == "dup":
                network.duplicate = float(value)
                network.lossy_until = config.duration
            elif key == "delay":
                base, _, jitter = value.partition(":")
                network.delay = DelayModel(base=int(base), jitter=int(jitter or 0))
            elif key == "crash":
                who, _, when = value.partition("@")
                start, _, end = when.partition(":")
                crashes.append(CrashAt(int(who), int(start) * MS, int(end) * MS if end else None))
            elif key == "partition":
                groups, _, when = value.partition("@")
                start, _, end = when.partition(":")
                parts = [[int(x) for x in g.split(".") if x] for g in groups.split("|")]
                network.windows.append(
                    PartitionWindow(int(start) * MS, int(end) * MS, groups_of(parts))
                )
            elif key == "cut":
                link, _, when = value.partition("@")
                src, _, dst = link.partition(">")
                start, _, end = when.partition(":")
                network.cuts.append(
                    OneWayCut(
                        int(src), int(dst), int(start or 0) * MS, int(end) * MS if end else 2**62
                    )
                )
            elif key == "silent":
                silent.add(int(value))
            elif key == "twins":
                twins = int(value)
        except ValueError:
            raise ValueError(f"bad fault {item!r}: expected {forms[key]}") from None
    f = config.spec.faults(config.n)
    return replace(
        config,
        network=network,
        crashes=crashes,
        silent=frozenset(silent),
        twins=twins,
        check_liveness=config.check_liveness and len(silent) + twins <= f,
    )


def twins_config(
    protocol: ProtocolSpec,
    seed: int,
    *,
    n: int = 4,
    twins: int = 1,
    rounds: int = 0,
    space: str = "all",
    real_crypto: bool = False,
    **core: object,
) -> tuple[TwinsScenario, SimConfig]:
    """The Twins scenario of ``seed`` in ``space`` (see :func:`twins_scenario`) and the
    simulation that runs it (see :func:`twins_sim_config`)."""
    scenario = twins_scenario(protocol.name, seed, n=n, twins=twins, rounds=rounds, space=space)
    config = twins_sim_config(
        protocol, scenario, seed, n=n, twins=twins, real_crypto=real_crypto, **core
    )
    return scenario, config


def twins_sim_config(
    protocol: ProtocolSpec,
    scenario: TwinsScenario,
    seed: int,
    *,
    n: int = 4,
    twins: int = 1,
    real_crypto: bool = False,
    **core: object,
) -> SimConfig:
    """The simulation of a Twins scenario (Bano et al.).

    The first ``twins`` replicas get a twin sharing their key. Round ``r`` of the scenario is one
    view of the protocol (PBFT's views start at 0, HotStuff's at 1: view 0 is its genesis QC):
    its partition applies to every message of that view and its leader leads it. Views after
    the schedule are fully connected with the protocol's own leaders, so the scenario can still
    commit afterwards. Liveness is not checked (a scenario may keep every round leaderless);
    every safety invariant is. ``core`` overrides fields of the protocol's config.
    """
    first = 0 if protocol.name == "pbft" else 1
    leaders = {first + r: leader for r, leader in enumerate(scenario.leaders)}
    partitions = {first + r: groups for r, groups in enumerate(scenario.partitions)}
    if protocol.name == "pbft":
        timers: dict[str, object] = {"request_timeout": 30, "view_change_timeout": 20}
        duration, settle = 600 * MS, 400 * MS
        workload = WorkloadConfig(clients=2, requests_per_client=8, submit_every=20 * MS)
    else:
        timers = {"view_timeout": 3, "retransmit_interval": 2, "status_interval": 6}
        duration, settle = 100 * MS, 250 * MS
        workload = WorkloadConfig(
            clients=1, requests_per_client=3, max_inflight=2, submit_every=15 * MS
        )
    return SimConfig(
        spec=protocol,
        n=n,
        seed=seed,
        twins=twins,
        network=NetworkModel(round_partitions=partitions),
        core_config=protocol.config_type(leaders=leaders, **{**timers, **core}),
        duration=duration,
        settle=settle,
        workload=workload,
        check_liveness=False,
        real_crypto=real_crypto,
    )
