"""Where a replica's memory is: its resident set, Python's object allocator and C malloc.

A replica's resident set can grow for three different reasons, and an operator needs to tell
them apart: live Python objects (a table that is not bounded: a bug), memory Python's allocator
keeps for reuse after objects are freed, and memory C ``malloc`` keeps in its arenas after
buffers are freed (fragmentation, one arena per thread that allocated). :func:`snapshot` reads
all three cheaply enough for a status request or a metrics scrape: ``/proc/self/statm``,
``sys.getallocatedblocks()`` and glibc's ``mallinfo2()`` (through ctypes; absent on other C
libraries, where those fields are left out).

:meth:`Malloc.trim` asks glibc to hand the free pages of every arena back to the kernel
(``malloc_trim(0)``); the replica calls it now and then (``[memory] trim_every_s``) so that
memory freed after a burst does not stay resident.

:func:`tune_gc` makes Python's cyclic garbage collector run less often, in a replica and in a
load process alike (:func:`collecting_less_often` for a load run inside a longer process).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import os
import sys
from collections.abc import Iterator
from typing import Any

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
GC_THRESHOLDS = (20_000, 10, 10)
"""The cyclic garbage collector of a replica or load process: a young-generation collection after
20,000 net allocations (Python's default is 700), the older generations as usual after it."""


def tune_gc() -> None:
    """Collect cyclic garbage less often in this process (a replica, a load generator).

    Nearly everything such a process allocates (a request, its reply, a receipt, a task's wake-up)
    is freed by reference counting as soon as its block is done; with Python's default threshold
    a block of 500 transactions alone set off collections that found almost nothing (~700 objects
    in 200,000 transactions at a replica), and each full collection walked every live object
    (pauses up to 30-44 ms; 5 % of a replica's CPU at saturation, 8 % of a load process's). A
    collection still runs once 20,000 objects more than were freed are alive, and a replica also
    makes a full one every minute, so cyclic garbage does not live long. What exists when this is
    called (the imported modules, the configuration) is frozen out of the collector's walks.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


@contextlib.contextmanager
def collecting_less_often() -> Iterator[None]:
    """The thresholds of :func:`tune_gc` for the duration of a block (a load run inside a
    process that goes on to do other things), the earlier ones restored after it."""
    before = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*before)


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


class Malloc:
    """glibc's malloc statistics and trim, or nothing where they are not available."""

    def __init__(self) -> None:
        self._info: Any = None
        self._trim: Any = None
        name = ctypes.util.find_library("c")
        if not name:
            return
        try:
            libc = ctypes.CDLL(name)
        except OSError:
            return
        info = getattr(libc, "mallinfo2", None)
        if info is not None:
            info.restype = _MallInfo2
            info.argtypes = []
            self._info = info
        trim = getattr(libc, "malloc_trim", None)
        if trim is not None:
            trim.restype = ctypes.c_int
            trim.argtypes = [ctypes.c_size_t]
            self._trim = trim

    @property
    def can_trim(self) -> bool:
        return self._trim is not None

    def stats(self) -> dict[str, int] | None:
        """Bytes C malloc holds: ``in_use`` by live allocations (large ones mmapped on their
        own included), ``free`` kept in its arenas; None without glibc's ``mallinfo2``."""
        if self._info is None:
            return None
        info = self._info()
        return {"in_use": int(info.uordblks) + int(info.hblkhd), "free": int(info.fordblks)}

    def trim(self) -> bool:
        """Return free arena pages to the kernel; True when some were released."""
        if self._trim is None:
            return False
        return bool(self._trim(0))


def resident_bytes() -> int | None:
    """This process's resident set in bytes (Linux ``/proc/self/statm``), else None."""
    try:
        with open("/proc/self/statm", "rb") as f:
            fields = f.read().split()
    except OSError:
        return None
    if len(fields) < 2:
        return None
    return int(fields[1]) * PAGE


def snapshot(malloc: Malloc) -> dict[str, int]:
    """``rss``, ``python_blocks`` (objects allocated by Python's allocator) and, with glibc,
    ``malloc_in_use`` and ``malloc_free`` in bytes."""
    doc: dict[str, int] = {"python_blocks": sys.getallocatedblocks()}
    rss = resident_bytes()
    if rss is not None:
        doc["rss"] = rss
    stats = malloc.stats()
    if stats is not None:
        doc["malloc_in_use"] = stats["in_use"]
        doc["malloc_free"] = stats["free"]
    return doc
