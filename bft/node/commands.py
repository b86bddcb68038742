"""The operator's commands about one replica's files: ``bft config check`` and
``bft evidence list`` / ``bft evidence verify``.

``config check`` loads each file exactly as ``bft replica`` would (keys, committee, TLS material,
protocol options) without opening sockets or the ledger, and when given several files, checks
they describe one cluster: one chain and committee, distinct replica ids, and every replica
listening where the others will dial it. Exit status 0 when all is well, 1 when a file is
wrong (each problem on one line, naming the file and the key).

``evidence list`` shows the evidence a replica saved and checks each against the committee;
``evidence verify`` checks files someone handed you. Exit status 1 if any does not verify.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bft.cli import EXIT_INVALID, CliError


def _problem(text: str) -> None:
    print(f"bft: {text}", file=sys.stderr)


def cmd_config_check(args: argparse.Namespace) -> int:
    from bft.node import ConfigError, Replica, ReplicaError, load_replica_config
    from crypto import CryptoError

    loaded: list[Any] = []
    failed = 0
    for name in args.files:
        try:
            config = load_replica_config(name)
            Replica(config)  # keys, committee, TLS contexts and protocol options, as at start
        except (ConfigError, ReplicaError, CryptoError) as exc:
            _problem(f"error: {exc}")
            failed += 1
            continue
        loaded.append(config)
        if not args.quiet:
            metrics = (
                f"metrics on {config.metrics_listen[0]}:{config.metrics_listen[1]}"
                if config.metrics_listen
                else "no metrics endpoint"
            )
            data = config.data_dir
            state = "holds a ledger" if (data / "ledger").exists() else "new"
            print(
                f"ok: {config.path}: replica {config.replica} ({config.protocol}), peers on "
                f"{_addr(config.listen)}, clients on {_addr(config.client_listen)}, "
                f"{'PLAINTEXT' if config.plaintext else 'TLS'}, {metrics}, "
                f"log {config.log_format}/{config.log_level}, data {data} ({state})"
            )
            if config.plaintext:
                print(f"warning: {config.path}: [network.plaintext] is on: no TLS between peers")
            if config.byzantine:
                print(f"warning: {config.path}: [replica.byzantine] = {config.byzantine!r}")
    failed += _cross_check(loaded)
    return EXIT_INVALID if failed else 0


def _addr(address: tuple[str, int]) -> str:
    return f"{address[0]}:{address[1]}"


def _cross_check(configs: list[Any]) -> int:
    """Problems between files meant for one cluster (printed; their count returned)."""
    if len(configs) < 2:
        return 0
    from crypto.keyfiles import load_committee

    problems = 0
    by_id: dict[int, Any] = {}
    committees = {}
    for config in configs:
        if config.replica in by_id:
            _problem(
                f"error: {config.path}: [replica.id] {config.replica} is also the id in "
                f"{by_id[config.replica].path}"
            )
            problems += 1
            continue
        by_id[config.replica] = config
        committee = load_committee(config.committee_file)
        committees[config.path] = (committee.chain_id, tuple(k.hex() for k in committee.members))
        if config.protocol != configs[0].protocol:
            _problem(
                f"error: {config.path}: [replica.protocol] {config.protocol!r}, but "
                f"{configs[0].path} runs {configs[0].protocol!r}"
            )
            problems += 1
    first = configs[0]
    for config in configs[1:]:
        if committees.get(config.path) != committees.get(first.path):
            _problem(
                f"error: {config.path}: [replica.committee] is not the committee of {first.path}"
            )
            problems += 1
    for config in configs:
        for other in configs:
            if other is config:
                continue
            said = other.peers.get(config.replica)
            if said is not None and said[1] != config.listen[1]:
                _problem(
                    f"error: {other.path}: [peers.{config.replica}] is {_addr(said)}, but "
                    f"replica {config.replica} listens on {_addr(config.listen)} "
                    f"({config.path})"
                )
                problems += 1
    if not problems:
        print(f"ok: the {len(configs)} files describe one cluster")
    return problems


def _evidence_sources(args: argparse.Namespace) -> tuple[Path, Any]:
    from bft.node import ConfigError, load_replica_config
    from crypto.keyfiles import load_committee

    if args.config:
        try:
            config = load_replica_config(args.config)
        except ConfigError as exc:
            raise CliError(str(exc)) from None
        committee = load_committee(
            Path(args.committee) if args.committee else config.committee_file
        )
        return config.data_dir / "evidence", committee
    if not args.dir or not args.committee:
        raise CliError("give --config FILE, or --dir DATA_DIR with --committee FILE")
    return Path(args.dir) / "evidence", load_committee(Path(args.committee))


def _check_items(items: list[Any], committee: Any) -> list[dict[str, Any]]:
    from bft.core.evidence import EvidenceError, verify_evidence
    from bft.protocols import spec

    rows = []
    for item in items:
        row: dict[str, Any] = {"file": str(item.path)}
        if item.evidence is None:
            row.update(valid=False, detail=item.error)
            rows.append(row)
            continue
        ev = item.evidence
        row.update(protocol=ev.protocol, signer=ev.signer, observer=ev.observer)
        try:
            protocol = spec(ev.protocol)
            row.update(
                valid=True,
                detail=verify_evidence(ev, committee, protocol.messages, protocol.evidence),
            )
        except (EvidenceError, ValueError) as exc:
            row.update(valid=False, detail=str(exc))
        rows.append(row)
    return rows


def _show(rows: list[dict[str, Any]], as_json: bool, empty: str) -> int:
    if as_json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(empty)
    else:
        for row in rows:
            verdict = "VERIFIED" if row["valid"] else "INVALID"
            print(f"{verdict}  {row['file']}\n    {row['detail']}")
        good = sum(1 for r in rows if r["valid"])
        print(f"{good} of {len(rows)} verified")
    return 0 if all(r["valid"] for r in rows) else EXIT_INVALID


def cmd_evidence_list(args: argparse.Namespace) -> int:
    from .evidence import list_evidence

    directory, committee = _evidence_sources(args)
    rows = _check_items(list_evidence(directory), committee)
    return _show(rows, args.json, f"no evidence in {directory}")


def cmd_evidence_verify(args: argparse.Namespace) -> int:
    from crypto.keyfiles import load_committee

    from .evidence import read_evidence_file

    committee = load_committee(Path(args.committee))
    rows = _check_items([read_evidence_file(Path(f)) for f in args.files], committee)
    return _show(rows, args.json, "no files given")


def add_parsers(sub: Any) -> None:
    """Add ``config`` and ``evidence`` to the ``bft`` command's parser."""
    config = sub.add_parser("config", help="check replica configuration files")
    csub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    p = csub.add_parser(
        "check",
        help="load configs as a replica would (keys, committee, TLS); several: check they agree",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="replica TOML files")
    p.add_argument("-q", "--quiet", action="store_true", help="print problems only")
    p.set_defaults(func=cmd_config_check)

    evidence = sub.add_parser(
        "evidence", help="equivocation evidence a replica saved: list and verify"
    )
    esub = evidence.add_subparsers(dest="evidence_command", metavar="ACTION", required=True)
    p = esub.add_parser("list", help="a replica's saved evidence, each checked")
    p.add_argument("--config", help="the replica's config (finds data dir and committee)")
    p.add_argument("--dir", help="the replica's data directory (instead of --config)")
    p.add_argument("--committee", help="committee file to verify against")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evidence_list)
    p = esub.add_parser("verify", help="check evidence files against a committee file")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--committee", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evidence_verify)
