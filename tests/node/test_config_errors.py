"""`bft replica --config` with broken files: exit status 2, one line naming the file and the key,
never a traceback (run as a real subprocess, as an operator would)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bft.node import ConfigError, load_replica_config
from bft.testbed import init_cluster


@pytest.fixture(scope="module")
def cluster_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("cluster")
    init_cluster(directory, protocol="pbft", n=4)
    return directory


def run_replica(config: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BFT_DEBUG"}
    return subprocess.run(
        [sys.executable, "-m", "bft.cli", "replica", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def broken(cluster_dir: Path, name: str, edit: str | None, replace: tuple[str, str] | None) -> Path:
    text = (cluster_dir / "replica-0.toml").read_text()
    if replace is not None:
        old, new = replace
        assert re.search(old, text, flags=re.M), old
        text = re.sub(old, new, text, count=1, flags=re.M)
    if edit is not None:
        text += edit
    path = cluster_dir / f"{name}.toml"  # beside the real one, so relative paths still resolve
    path.write_text(text)
    return path


CASES = [
    ("bad-toml", "\n[replica\n", None, ["not valid TOML"]),
    ("no-protocol", None, (r"^protocol = .*$", ""), ["[replica.protocol]", "missing"]),
    ("bad-protocol", None, (r"^protocol = .*$", 'protocol = "paxos"'), ["[replica.protocol]"]),
    ("id-not-int", None, (r"^id = 0$", 'id = "zero"'), ["[replica.id]", "integer"]),
    ("bad-listen", None, (r"^listen = .*$", 'listen = "nowhere"'), ["[network.listen]"]),
    ("no-tls-cert", None, (r"^tls_cert = .*$", ""), ["[network.tls_cert]", "missing"]),
    ("bad-tick", None, (r"^tick_ms = .*$", "tick_ms = -1"), ["[timing.tick_ms]"]),
    ("unknown-option", "\n[pbft]\nbogus = 1\n", None, ["[pbft.bogus]", "unknown option"]),
    ("bad-trim", "\n[memory]\ntrim_every_s = -5\n", None, ["[memory.trim_every_s]", "0..86400"]),
    ("bad-disk", "\n[disk]\ninline_below_ms = -1\n", None, ["[disk.inline_below_ms]", "0..1000"]),
    (
        "bad-verify-thread",
        None,
        (r"^verify_on_thread = .*$", 'verify_on_thread = "no"'),
        ["[crypto.verify_on_thread]", "true or false"],
    ),
    ("bad-admin", None, (r"^keys = .*$", 'keys = ["abc"]'), ["[admin.keys[0]]"]),
    (
        "missing-key-file",
        None,
        (r"^key = .*$", 'key = "keys/nope.key"'),
        ["nope.key"],
    ),
    (
        "wrong-key",
        None,
        (r"^key = .*$", 'key = "keys/replica-1.key"'),
        ["replica-1.key", "replica 1"],
    ),
]


@pytest.mark.parametrize(("name", "edit", "replace", "words"), CASES, ids=[c[0] for c in CASES])
def test_a_broken_config_is_one_line_naming_file_and_key(
    cluster_dir: Path,
    name: str,
    edit: str | None,
    replace: tuple[str, str] | None,
    words: list[str],
) -> None:
    path = broken(cluster_dir, name, edit, replace)
    done = run_replica(path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    line = lines[0]
    assert line.startswith("bft: error: ")
    for word in words:
        assert word in line, line
    if name not in ("missing-key-file", "wrong-key"):
        assert str(path) in line, line


def test_a_missing_config_file(tmp_path: Path) -> None:
    done = run_replica(tmp_path / "nothing.toml")
    assert done.returncode == 2
    assert done.stderr.strip() == f"bft: error: {tmp_path / 'nothing.toml'}: no such file"


def test_a_port_in_use_is_one_line(cluster_dir: Path) -> None:
    config = load_replica_config(cluster_dir / "replica-0.toml")
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(config.listen)
        taken.listen()
        done = run_replica(cluster_dir / "replica-0.toml")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "cannot listen" in lines[-1] and str(config.listen[1]) in lines[-1], done.stderr


def test_config_error_carries_file_and_key(cluster_dir: Path) -> None:
    path = broken(cluster_dir, "inproc", None, (r"^id = 0$", "id = 5000"))
    with pytest.raises(ConfigError) as info:
        load_replica_config(path)
    assert info.value.key == "replica.id" and info.value.path == str(path)
