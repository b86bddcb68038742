"""A long Twins run: many seeded scenarios over worker processes, resumable from a state file.

Seeds are split into chunks; each worker runs a chunk of scenarios in the simulator
(:func:`bft.sim.scenarios.twins_config`) and returns its counts and, for a scenario that broke
an invariant, its seed, the scenario and the report. The parent merges the counts and, after
every chunk, rewrites the state file durably, so a run stopped at any point (Ctrl-C, a reboot)
resumes with the chunks it had not finished. Memory stays bounded however long the run: the
parent keeps counts, the finished chunks' indices and at most :data:`KEEP_FAILURES` failures.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ledger.durable import replace_durably

if TYPE_CHECKING:  # pragma: no cover
    from bft.sim import Report
    from bft.sim.twins import TwinsScenario

CHUNK = 250
"""Scenarios per unit of work (and per state-file write)."""

KEEP_FAILURES = 20
"""Failures kept with their scenario and report; further ones are counted."""

STATE_VERSION = 1


@dataclass(frozen=True)
class SoakParams:
    protocol: str
    space: str
    n: int
    twins: int
    seed: int
    count: int
    rounds: int = 0
    chunk: int = CHUNK

    def chunks(self) -> int:
        return -(-self.count // self.chunk)

    def seeds(self, chunk: int) -> range:
        start = self.seed + chunk * self.chunk
        return range(start, min(start + self.chunk, self.seed + self.count))


@dataclass
class Failure:
    seed: int
    scenario: str
    report: str


@dataclass
class Tally:
    """Counts over scenarios: one chunk's, or a whole run's."""

    scenarios: int = 0
    heights: int = 0
    """Sum over scenarios of the highest honest ledger."""
    without_commit: int = 0
    view_changes: int = 0
    failed: int = 0
    failures: list[Failure] = field(default_factory=list)
    """The first :data:`KEEP_FAILURES` failures; ``failed`` counts them all."""
    cpu_s: float = 0.0

    def count(self, seed: int, scenario: TwinsScenario, report: Report) -> None:
        height = report.stats.get("height", 0)
        self.scenarios += 1
        self.heights += height
        self.without_commit += height == 0
        self.view_changes += report.stats.get("view_changes", 0)
        if not report.ok:
            self.failed += 1
            if len(self.failures) < KEEP_FAILURES:
                self.failures.append(Failure(seed, scenario.describe(), report.describe()))

    def add(self, other: Tally) -> None:
        self.scenarios += other.scenarios
        self.heights += other.heights
        self.without_commit += other.without_commit
        self.view_changes += other.view_changes
        self.failed += other.failed
        room = KEEP_FAILURES - len(self.failures)
        self.failures.extend(other.failures[: max(room, 0)])
        self.cpu_s += other.cpu_s


@dataclass(kw_only=True)
class ChunkResult(Tally):
    chunk: int


def run_chunk(params: SoakParams, chunk: int) -> ChunkResult:
    """Run one chunk of scenarios (in a worker process)."""
    from bft.protocols import spec
    from bft.sim import run
    from bft.sim.scenarios import twins_config

    protocol = spec(params.protocol)
    result = ChunkResult(chunk=chunk)
    started = time.process_time()
    for seed in params.seeds(chunk):
        scenario, config = twins_config(
            protocol,
            seed,
            n=params.n,
            twins=params.twins,
            rounds=params.rounds,
            space=params.space,
        )
        result.count(seed, scenario, run(config))
    result.cpu_s = time.process_time() - started
    return result


@dataclass(kw_only=True)
class SoakState(Tally):
    params: SoakParams
    done: set[int] = field(default_factory=set)
    wall_s: float = 0.0

    def add(self, other: Tally) -> None:
        super().add(other)
        if isinstance(other, ChunkResult):
            self.done.add(other.chunk)

    @property
    def finished(self) -> bool:
        return len(self.done) == self.params.chunks()

    def to_json(self) -> bytes:
        data = asdict(self)
        data["done"] = sorted(self.done)
        data["version"] = STATE_VERSION
        return json.dumps(data, indent=1).encode() + b"\n"

    def save(self, path: Path) -> None:
        replace_durably(path, self.to_json())

    @classmethod
    def load(cls, path: Path, params: SoakParams) -> SoakState:
        """The state in ``path`` (a fresh one if it does not exist); ``ValueError`` if it is
        unreadable or belongs to a run with other parameters."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return cls(params=params)
        except OSError as exc:
            raise ValueError(f"cannot read the state file {path}: {exc.strerror}") from None
        try:
            data = json.loads(raw)
            if data.get("version") != STATE_VERSION:
                raise ValueError(f"version {data.get('version')!r}, expected {STATE_VERSION}")
            stored = SoakParams(**data["params"])
            state = cls(
                params=stored,
                done={int(c) for c in data["done"]},
                failures=[Failure(**f) for f in data["failures"]],
                **{
                    k: data[k]
                    for k in (
                        "scenarios",
                        "heights",
                        "without_commit",
                        "view_changes",
                        "failed",
                        "cpu_s",
                        "wall_s",
                    )
                },
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"the state file {path} is not a Twins run's state ({exc})") from None
        if stored != params:
            raise ValueError(
                f"the state file {path} belongs to another run ({_describe(stored)}); "
                f"this one is {_describe(params)}: use another --state"
            )
        if any(not 0 <= c < params.chunks() for c in state.done):
            raise ValueError(f"the state file {path} lists chunks outside the run")
        return state


def _describe(p: SoakParams) -> str:
    return (
        f"{p.protocol} n={p.n} twins={p.twins} space={p.space} seeds {p.seed}.."
        f"{p.seed + p.count - 1}"
        + (f" rounds={p.rounds}" if p.rounds else "")
        + f" chunk={p.chunk}"
    )


def soak(
    state: SoakState,
    workers: int,
    *,
    save: Callable[[SoakState], None] | None = None,
    on_chunk: Callable[[SoakState, ChunkResult], None] | None = None,
) -> SoakState:
    """Run every chunk of ``state`` not yet done, ``workers`` at a time; ``save`` after each.

    At most ``2 * workers`` chunks are submitted at once, so the queue of work is bounded.
    """
    todo: Iterator[int] = (c for c in range(state.params.chunks()) if c not in state.done)
    started = time.perf_counter()
    wall_before = state.wall_s
    if workers <= 1:
        for chunk in todo:
            _finish(state, run_chunk(state.params, chunk), started, wall_before, save, on_chunk)
        return state
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending: set[Future[ChunkResult]] = set()
        try:
            while True:
                for chunk in todo:
                    pending.add(pool.submit(run_chunk, state.params, chunk))
                    if len(pending) >= 2 * workers:
                        break
                if not pending:
                    break
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    _finish(state, future.result(), started, wall_before, save, on_chunk)
        finally:
            for future in pending:
                future.cancel()
    return state


def _finish(
    state: SoakState,
    result: ChunkResult,
    started: float,
    wall_before: float,
    save: Callable[[SoakState], None] | None,
    on_chunk: Callable[[SoakState, ChunkResult], None] | None,
) -> None:
    state.add(result)
    state.wall_s = wall_before + time.perf_counter() - started
    if save is not None:
        save(state)
    if on_chunk is not None:
        on_chunk(state, result)


def summary(state: SoakState) -> dict[str, Any]:
    """The figures a report shows."""
    s = state.scenarios
    return {
        "scenarios": s,
        "failed": state.failed,
        "mean_height": round(state.heights / s, 2) if s else 0.0,
        "without_commit": state.without_commit,
        "mean_view_changes": round(state.view_changes / s, 2) if s else 0.0,
        "cpu_s": round(state.cpu_s, 1),
        "wall_s": round(state.wall_s, 1),
        "per_cpu_minute": round(s / state.cpu_s * 60) if state.cpu_s else 0,
    }
