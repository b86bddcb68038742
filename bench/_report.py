"""Helpers shared by the benchmark programs: timing, tables, the machine line, JSON output.

Timing follows one rule: every figure is the **median of several rounds**, each round timed with
:func:`time.perf_counter`. A micro benchmark (:func:`per_call`) first calibrates how many calls
fill one round, then reports the median per-call time; a benchmark whose every run needs fresh
state (a new ledger directory) uses :func:`per_run`, which times one run per round after an
untimed setup.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.table import Table

KEY_PACKAGES = ("PyNaCl", "cryptography", "cbor2", "rich")

S = TypeVar("S")


# --------------------------------------------------------------------------------------------
# Timing


@dataclass(frozen=True, slots=True)
class Timing:
    """The median of several rounds, in seconds per call (or per run)."""

    seconds: float
    rounds: tuple[float, ...]
    number: int
    """Calls per round."""

    @property
    def per_second(self) -> float:
        return 1.0 / self.seconds if self.seconds > 0 else float("inf")

    @property
    def us(self) -> float:
        return self.seconds * 1e6

    @property
    def ms(self) -> float:
        return self.seconds * 1e3

    @property
    def spread(self) -> float:
        """(slowest - fastest) / median over the rounds: how noisy the figure is."""
        return (max(self.rounds) - min(self.rounds)) / self.seconds if self.seconds else 0.0


def _run(fn: Callable[[], object], number: int) -> float:
    started = time.perf_counter()
    for _ in range(number):
        fn()
    return time.perf_counter() - started


def calibrate(fn: Callable[[], object], min_round: float) -> int:
    """How many calls of ``fn`` take about ``min_round`` seconds (at least one call)."""
    number = 1
    while True:
        elapsed = _run(fn, number)
        if elapsed >= min_round:
            return number
        if elapsed >= min_round / 20:  # long enough to extrapolate from
            return max(number, round(number * min_round / elapsed))
        number *= 10


def per_call(
    fn: Callable[[], object], *, rounds: int = 5, min_round: float = 0.1, number: int | None = None
) -> Timing:
    """Median seconds per call of ``fn`` over ``rounds`` rounds of ``number`` calls.

    The garbage collector is off inside a round, as in :mod:`timeit`.
    """
    if number is None:
        number = calibrate(fn, min_round)
    results = []
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(rounds):
            results.append(_run(fn, number) / number)
    finally:
        if enabled:
            gc.enable()
    return Timing(statistics.median(results), tuple(results), number)


def per_run(
    run: Callable[[S], object],
    *,
    rounds: int,
    setup: Callable[[], S],
    teardown: Callable[[S], object] | None = None,
) -> Timing:
    """Median seconds of ``run(state)`` over ``rounds`` rounds; ``setup`` and ``teardown``
    (untimed) give each round fresh state."""
    results = []
    for _ in range(rounds):
        state = setup()
        try:
            started = time.perf_counter()
            run(state)
            results.append(time.perf_counter() - started)
        finally:
            if teardown is not None:
                teardown(state)
    return Timing(statistics.median(results), tuple(results), 1)


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def settle_allocator() -> None:
    """Put glibc's malloc in the state a long-running process is in before timing anything.

    glibc serves allocations above its *dynamic* mmap threshold (128 KiB at start) with mmap and
    trims the heap top eagerly; freeing one large mmapped buffer raises both thresholds for the
    rest of the process. Until then, every buffer the size of a 500-transaction block (~140 KB)
    pays fresh page faults, which makes ``cbor2.dumps`` of a block about 3x slower. A replica
    crosses that line with its first large frame, so the benchmarks cross it up front.
    """
    buffer = bytearray(8 << 20)
    del buffer


# --------------------------------------------------------------------------------------------
# Formatting


def si(value: float, unit: str = "") -> str:
    """``si(61234.5, " tx/s")`` -> ``"61.2 k tx/s"``: three significant figures, SI prefix."""
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}".rstrip()
    if unit.startswith(" "):
        return f"{value:.3g}{unit}"
    return f"{value:.3g} {unit}".rstrip()


def duration(seconds: float) -> str:
    """A duration with a readable unit: ``"23.4 us"``, ``"1.25 ms"``, ``"2.10 s"``."""
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} us"


def ratio(value: float) -> str:
    return f"{value:.2f}x"


# --------------------------------------------------------------------------------------------
# The machine line


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import ssl

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": cores(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "hashlib_openssl": ssl.OPENSSL_VERSION,
        "packages": {name: package_version(name) for name in KEY_PACKAGES},
    }
    try:
        from cryptography.hazmat.backends.openssl import backend

        info["cryptography_openssl"] = backend.openssl_version_text()
    except Exception:  # pragma: no cover - the backend moved
        info["cryptography_openssl"] = "unknown"
    return info


def machine_line(info: dict[str, Any] | None = None) -> str:
    info = info or machine()
    packages = ", ".join(f"{k} {v}" for k, v in info["packages"].items())
    return (
        f"{info['cpu']}, {info['cores']} cores, {info['os']}, Python {info['python']}, {packages}"
    )


# --------------------------------------------------------------------------------------------
# Reports


def console() -> Console:
    """A console that prints to the current ``sys.stdout`` (tables 120 columns wide when it
    is not a terminal, so that captured output is the same everywhere)."""
    width = None if sys.stdout.isatty() else 120
    return Console(width=width, highlight=False, soft_wrap=False)


@dataclass
class Report:
    """The figures of one benchmark program, printed as tables and optionally saved as JSON."""

    benchmark: str
    quick: bool
    out: Console = field(default_factory=console)
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=machine)

    def header(self, title: str) -> None:
        mode = "quick (smoke-test sizes, figures are not meaningful)" if self.quick else "full"
        self.out.print(f"[bold]{title}[/bold] - {mode}")
        self.out.print(f"machine: {machine_line(self.info)}", soft_wrap=True)

    def figure(self, key: str, value: float | int | bool | str, unit: str = "") -> None:
        """Record one figure for the JSON output (``key`` like ``"sign.pynacl_per_s"``)."""
        if isinstance(value, float):
            value = float(f"{value:.6g}")
        self.figures[key] = {"value": value, "unit": unit}

    def table(
        self,
        title: str,
        columns: Sequence[str],
        rows: Iterable[Sequence[object]],
        *,
        caption: str | None = None,
    ) -> None:
        table = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
        for i, name in enumerate(columns):
            table.add_column(name, justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(*(str(cell) for cell in row))
        self.out.print(table)

    def note(self, text: str) -> None:
        self.out.print(text, soft_wrap=True)

    def write_json(self, path: str | os.PathLike[str]) -> None:
        doc = {
            "benchmark": self.benchmark,
            "quick": self.quick,
            "machine": self.info,
            "machine_line": machine_line(self.info),
            "figures": self.figures,
        }
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", "utf-8")
        self.out.print(f"figures written to {target}")


def parser(doc: str | None) -> argparse.ArgumentParser:
    """The command line every benchmark program accepts; the description is the first paragraph
    of the program's docstring ``doc``."""
    description = " ".join((doc or "").split("\n\n")[0].split())
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--quick", action="store_true", help="tiny sizes: a smoke test that finishes in seconds"
    )
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    return p
