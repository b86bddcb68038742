"""A replica's log: every line names the replica, its view (or term) and its ledger height.

Two formats, chosen by ``[log] format``:

* ``text``: ``2026-11-22 10:00:00,123 WARNING r1 v4 h1200 bft.replica: view 4, leader 0``
* ``json``: one object per line, for log shippers::

    {"ts": "2026-11-22T10:00:00.123+00:00", "level": "WARNING", "logger": "bft.replica",
     "replica": 1, "view": 4, "height": 1200, "msg": "view 4, leader 0", "event": "view"}

  ``event`` (when present) names the kind of happening, so alerts need not parse messages:
  ``recovered``, ``serving``, ``view``, ``leader``, ``peer-up``, ``peer-down``, ``catch-up``,
  ``evidence``, ``rejected``, ``control``, ``shutdown``, ``suppressed``.

No log storm: a peer or client that sends garbage as fast as it can must not fill the disk. Lines
are rate-limited per *reason* (the logger and the message's format string, not its arguments):
``burst`` lines per ``window_s`` seconds, then the rest of the window is counted and dropped, and
the first line of the next window says how many were dropped.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

MAX_REASONS = 4096
"""Reasons tracked by the rate limiter (the least recently seen are forgotten first)."""

Probe = Callable[[], tuple[int, int]]
"""Returns ``(view, height)`` now; must be cheap (it runs for every line)."""


class ReplicaContext(logging.Filter):
    """Adds ``replica``, ``view`` and ``height`` to every record."""

    def __init__(self, replica: int, probe: Probe | None = None) -> None:
        super().__init__()
        self.replica = replica
        self.probe = probe

    def filter(self, record: logging.LogRecord) -> bool:
        record.replica = self.replica
        view, height = (0, 0)
        if self.probe is not None:
            try:
                view, height = self.probe()
            except Exception:  # a half-started replica: no core or ledger yet
                view, height = (0, 0)
        record.view = view
        record.height = height
        return True


class RateLimit(logging.Filter):
    """At most ``burst`` records per reason per ``window`` seconds; reports what it dropped."""

    def __init__(
        self, burst: int = 20, window: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.burst = burst
        self.window = window
        self.clock = clock
        # reason -> [window start, lines passed in it, lines dropped in it]
        self._reasons: OrderedDict[tuple[str, str], list[float]] = OrderedDict()
        self.dropped_total = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.CRITICAL:
            return True
        key = (record.name, str(record.msg))
        now = self.clock()
        entry = self._reasons.get(key)
        if entry is None:
            entry = self._reasons[key] = [now, 0, 0]
            if len(self._reasons) > MAX_REASONS:
                self._reasons.popitem(last=False)
        else:
            self._reasons.move_to_end(key)
        if now - entry[0] >= self.window:
            dropped = int(entry[2])
            entry[0], entry[1], entry[2] = now, 0, 0
            if dropped:
                record.suppressed = dropped
        if entry[1] >= self.burst:
            entry[2] += 1
            self.dropped_total += 1
            return False
        entry[1] += 1
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s r%(replica)s v%(view)s h%(height)s %(name)s: %(message)s"
        )

    def format(self, record: logging.LogRecord) -> str:
        for name in ("replica", "view", "height"):
            if not hasattr(record, name):
                setattr(record, name, "-")
        line = super().format(record)
        suppressed = getattr(record, "suppressed", 0)
        if suppressed:
            line += f" ({suppressed} more like this suppressed)"
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "replica": getattr(record, "replica", None),
            "view": getattr(record, "view", None),
            "height": getattr(record, "height", None),
            "msg": record.getMessage(),
        }
        event = getattr(record, "event", None)
        if event:
            doc["event"] = event
        suppressed = getattr(record, "suppressed", 0)
        if suppressed:
            doc["suppressed"] = suppressed
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure(
    replica: int,
    *,
    fmt: str = "text",
    level: str = "info",
    burst: int = 20,
    window: float = 10.0,
    probe: Probe | None = None,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send every log record of this process to ``stream`` (stderr) in the replica's format,
    replacing whatever handlers the root logger had. Returns the handler (its filters hold the
    context and the rate limiter)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(ReplicaContext(replica, probe))
    handler.addFilter(RateLimit(burst, window))
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    return handler


def event(name: str) -> dict[str, Any]:
    """``log.info(..., extra=event("view"))``: tag a line with the kind of happening."""
    return {"event": name}
