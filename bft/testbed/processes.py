"""The replica processes of a local testbed: start them, signal them, find them again later.

Each replica runs as ``python -m bft.cli replica --config DIR/replica-<i>.toml`` in its own
session (so a Ctrl-C in the terminal that started it does not reach it, and so the testbed can
signal it alone), with standard output and error appended to ``DIR/data/replica-<i>.log`` and
its process id in ``DIR/data/replica-<i>.pid``. Any later ``bft testbed`` command finds the
process from the pid file, and before it signals a pid it checks that the process's command
line names this replica's configuration file: a stale pid file never gets an unrelated process
killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .layout import Cluster

RUNNING = "running"
PAUSED = "paused"
STOPPED = "stopped"


class TestbedError(Exception):
    """A testbed operation failed; the message says why, in one line."""

    __test__ = False  # not a pytest test class


@dataclass(frozen=True)
class ProcessState:
    replica: int
    pid: int | None
    state: str
    """``running``, ``paused`` (SIGSTOP) or ``stopped`` (no process)."""


def _proc_state(pid: int) -> str | None:
    """The kernel's one-letter state of ``pid``, or ``None`` if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        # No /proc (not Linux): fall back to whether a signal can be sent.
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return "R"
        return "R"
    # The command name is in parentheses and may hold spaces: the state follows the last ")".
    return stat.rpartition(")")[2].split()[0]


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline")
            .read_bytes()
            .replace(b"\0", b" ")
            .decode("utf-8", "replace")
        )
    except OSError:
        return ""


class Processes:
    """Start, signal and find the replica processes of one cluster directory."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.directory = cluster.directory.resolve()
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self.launcher: Callable[[int], Sequence[str]] | None = None
        """A command prefix per replica that must exec the replica in the same process (such as
        ``ip netns exec NAME``, see :mod:`bft.testbed.netns`), or ``None``."""

    # ------------------------------------------------------------------------------ files

    def config_file(self, replica: int) -> Path:
        return self.directory / f"replica-{replica}.toml"

    def pid_file(self, replica: int) -> Path:
        return self.directory / "data" / f"replica-{replica}.pid"

    def log_file(self, replica: int) -> Path:
        return self.directory / "data" / f"replica-{replica}.log"

    def _check(self, replica: int) -> None:
        if not 0 <= replica < self.cluster.n:
            raise TestbedError(
                f"no replica {replica}: the cluster in {self.directory} has replicas "
                f"0..{self.cluster.n - 1}"
            )

    # ------------------------------------------------------------------------------ finding

    def _reap(self, pid: int) -> None:
        """Collect an exited child of ours, so it does not linger as a zombie."""
        for child in self._children.values():
            if child.pid == pid:
                child.poll()
                return
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)

    def pid(self, replica: int) -> int | None:
        """The pid of the live process of ``replica``, or ``None``."""
        try:
            pid = int(self.pid_file(replica).read_text().strip())
        except (OSError, ValueError):
            return None
        child = self._children.get(replica)
        if child is not None and child.pid == pid:
            # Our own child: alive until reaped, whatever /proc shows in the instant after it
            # was started.
            return pid if child.poll() is None else None
        self._reap(pid)
        state = _proc_state(pid)
        if state is None or state in ("Z", "X"):
            return None
        if str(self.config_file(replica)) not in _cmdline(pid) and Path("/proc").is_dir():
            return None  # the pid was reused by another process
        return pid

    def state(self, replica: int) -> ProcessState:
        pid = self.pid(replica)
        if pid is None:
            return ProcessState(replica, None, STOPPED)
        paused = _proc_state(pid) in ("T", "t")
        return ProcessState(replica, pid, PAUSED if paused else RUNNING)

    def states(self) -> list[ProcessState]:
        return [self.state(i) for i in range(self.cluster.n)]

    def exit_code(self, replica: int) -> int | None:
        """The exit status of a replica this object started and that has exited."""
        child = self._children.get(replica)
        return None if child is None else child.poll()

    def log_tail(self, replica: int, lines: int = 3) -> str:
        try:
            text = self.log_file(replica).read_text("utf-8", "replace")
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])

    # ------------------------------------------------------------------------------ acting

    def start(self, replica: int) -> int:
        """Start ``replica``'s process; return its pid."""
        self._check(replica)
        if self.pid(replica) is not None:
            raise TestbedError(f"replica {replica} is already running")
        config = self.config_file(replica)
        if not config.is_file():
            raise TestbedError(f"{config}: no such file")
        log_path = self.log_file(replica)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            log.write(f"--- starting replica {replica} at {time.ctime()}\n".encode())
            log.flush()
            child = subprocess.Popen(
                [
                    *(self.launcher(replica) if self.launcher is not None else ()),
                    sys.executable,
                    "-m",
                    "bft.cli",
                    "replica",
                    "--config",
                    str(config),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.directory,
            )
        self._children[replica] = child
        tmp = self.pid_file(replica).with_suffix(".pid.tmp")
        tmp.write_text(f"{child.pid}\n")
        tmp.replace(self.pid_file(replica))
        return child.pid

    def signal(self, replica: int, signum: int) -> int:
        """Send ``signum`` to ``replica``'s process; return its pid."""
        self._check(replica)
        pid = self.pid(replica)
        if pid is None:
            raise TestbedError(f"replica {replica} is not running")
        os.kill(pid, signum)
        return pid

    def wait_exit(self, replica: int, pid: int, timeout: float) -> bool:
        """Wait until ``pid`` has exited; ``False`` if it is still there after ``timeout``."""
        deadline = time.monotonic() + timeout
        child = self._children.get(replica)
        while True:
            if child is not None and child.pid == pid:
                # Our own child: gone once reaped (a "Z" leader thread may still have threads).
                if child.poll() is not None:
                    return True
            else:
                state = _proc_state(pid)
                if state is None or state in ("Z", "X"):
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def kill(self, replica: int) -> int:
        """``kill -9`` the replica and wait until it is gone; return the pid it had."""
        pid = self.signal(replica, signal.SIGKILL)
        self.wait_exit(replica, pid, 10.0)
        with contextlib.suppress(FileNotFoundError):
            self.pid_file(replica).unlink()
        return pid

    def pause(self, replica: int) -> int:
        """SIGSTOP the replica; return once the kernel shows it stopped."""
        pid = self.signal(replica, signal.SIGSTOP)
        self._wait_state(replica, PAUSED)
        return pid

    def resume(self, replica: int) -> int:
        """SIGCONT the replica; return once it runs again."""
        pid = self.signal(replica, signal.SIGCONT)
        self._wait_state(replica, RUNNING)
        return pid

    def _wait_state(self, replica: int, state: str, timeout: float = 2.0) -> None:
        deadline = time.monotonic() + timeout
        while self.state(replica).state != state and time.monotonic() < deadline:
            time.sleep(0.005)

    def stop(self, replicas: list[int] | None = None, timeout: float = 10.0) -> dict[int, str]:
        """SIGTERM the replicas (all by default), wait, SIGKILL stragglers.

        Returns, per replica that was running, ``"exited"``, ``"exited with status N"`` (for
        processes this object started) or ``"killed"``.
        """
        targets = list(range(self.cluster.n)) if replicas is None else replicas
        pids: dict[int, int] = {}
        for replica in targets:
            pid = self.pid(replica)
            if pid is None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
                os.kill(pid, signal.SIGCONT)  # a paused replica must run to handle SIGTERM
            pids[replica] = pid
        outcome: dict[int, str] = {}
        deadline = time.monotonic() + timeout
        for replica, pid in pids.items():
            child = self._children.get(replica)
            if self.wait_exit(replica, pid, max(0.0, deadline - time.monotonic())):
                code = child.returncode if child is not None and child.pid == pid else None
                outcome[replica] = "exited" if code in (None, 0) else f"exited with status {code}"
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self.wait_exit(replica, pid, 5.0)
                outcome[replica] = "killed"
            with contextlib.suppress(FileNotFoundError):
                self.pid_file(replica).unlink()
        return outcome
