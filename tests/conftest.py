"""Shared test plumbing: simulation figures printed at the end of the run.

A simulation test calls ``sim_figures(suite, scenarios, seconds)``; the figures travel with the
test report (also from xdist workers) and are printed in the terminal summary, so every run shows
how many seeded scenarios it checked and how fast.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest


def seeds(default: int) -> int:
    """How many seeds a bulk simulation test runs: ``BFT_SIM_SCALE`` multiplies the default."""
    scale = float(os.environ.get("BFT_SIM_SCALE", "1"))
    return max(1, int(default * scale))


@pytest.fixture
def sim_figures(request: pytest.FixtureRequest) -> Callable[[str, int, float], None]:
    def record(suite: str, scenarios: int, seconds: float) -> None:
        request.node.user_properties.append(("sim_figures", (suite, scenarios, seconds)))

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    rows = []
    for reports in terminalreporter.stats.values():
        for report in reports:
            for key, value in getattr(report, "user_properties", ()):
                if key == "sim_figures" and getattr(report, "when", "call") == "call":
                    rows.append(value)
    if not rows:
        return
    terminalreporter.section("simulation figures")
    total = 0
    for suite, scenarios, seconds in sorted(rows):
        total += scenarios
        rate = scenarios / seconds * 60 if seconds else 0.0
        terminalreporter.write_line(
            f"{suite:<48} {scenarios:>6} seeded scenarios  {rate:>8.0f}/min"
        )
    terminalreporter.write_line(f"{'total':<48} {total:>6} seeded scenarios")
