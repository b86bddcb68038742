"""``bft testbed init --hosts``: the material of a cluster deployed on several machines, with
real addresses, an optional metrics port, and one-line errors for inconsistent flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from bft.cli import main
from bft.node import load_replica_config


def test_hosts_give_each_replica_its_machine_and_shared_hosts_consecutive_ports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hosts = "10.0.0.11,10.0.0.12,10.0.0.12,10.0.0.14"
    code = main(
        [
            "testbed",
            "init",
            "--dir",
            str(tmp_path / "c"),
            "--hosts",
            hosts,
            "--metrics-port",
            "9100",
        ]
    )
    assert code == 0
    assert "copy each replica's files" in capsys.readouterr().out
    configs = [load_replica_config(tmp_path / "c" / f"replica-{i}.toml") for i in range(4)]
    assert [c.listen for c in configs] == [
        ("10.0.0.11", 7000),
        ("10.0.0.12", 7000),
        ("10.0.0.12", 7001),
        ("10.0.0.14", 7000),
    ]
    assert configs[2].client_listen == ("10.0.0.12", 8001)
    assert [c.metrics_listen for c in configs] == [
        ("10.0.0.11", 9100),
        ("10.0.0.12", 9100),
        ("10.0.0.12", 9101),
        ("10.0.0.14", 9100),
    ]
    assert all(c.peers == configs[0].peers for c in configs)
    assert main(["config", "check", "-q", *(str(c.path) for c in configs)]) == 0


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--hosts", "a,b,c"], "--hosts names 3 hosts for 4 replicas"),
        (["--peer-port", "7000"], "--peer-port and --client-port go with --hosts"),
        (["--hosts", "a,b,c,d", "--peer-port", "8000", "--client-port", "8000"], "overlap"),
    ],
)
def test_inconsistent_flags_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    assert main(["testbed", "init", "--dir", str(tmp_path / "c"), *flags]) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
