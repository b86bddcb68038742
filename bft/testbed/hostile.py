"""A faulty client for a testbed: floods every replica's client port with requests that must not
commit and must not cost the honest clients more than a share of the cluster.

Kinds of flood (``python -m bft.testbed.hostile --dir DIR --kind KIND --seconds S``):

* ``bad-signatures``: well-formed transactions under fresh client keys, with random signatures
  (a cluster that requires client signatures verifies and refuses each);
* ``oversized``: transactions larger than the replicas' ``max_tx_bytes``;
* ``duplicates``: one validly signed transaction sent again and again.

The flood runs in its own process, so it competes with the honest clients for the replicas'
CPU, not for the honest client's. It prints one JSON line: frames and transactions sent, and
reconnections (a replica drops a connection that sends garbage).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import trio

from bft.client.protocol import Submit
from crypto import SigningKey
from crypto.keyfiles import load_committee
from ledger import Transaction
from network import Endpoint, Hello, NetworkConfig, dial
from network.tls import client_context, client_files

from .layout import CLIENT, load_cluster

KINDS = ("bad-signatures", "oversized", "duplicates")


def make_batch(kind: str, chain_id: str, counter: int, size: int, key: SigningKey) -> list[bytes]:
    """``size`` transactions of the given kind (numbered from ``counter``)."""
    if kind == "bad-signatures":
        return [
            Transaction(
                client=os.urandom(32),
                seq=counter + i,
                payload=b"forged %d" % (counter + i),
                signature=os.urandom(64),
            ).encode()
            for i in range(size)
        ]
    if kind == "oversized":
        return [
            Transaction(
                client=key.public_key.raw,
                seq=counter + i,
                payload=b"x" * (96 * 1024),
                signature=b"",
            ).encode()
            for i in range(max(1, size // 20))
        ]
    if kind == "duplicates":
        return [Transaction.signed(key, chain_id, 1, b"the same again").encode()] * size
    raise ValueError(f"unknown flood kind {kind!r}; choose from {', '.join(KINDS)}")


async def flood(directory: Path, kind: str, seconds: float, batch: int = 100) -> dict[str, int]:
    """Flood every replica's client port for ``seconds``; return what was sent."""
    cluster = load_cluster(directory)
    committee = load_committee(cluster.committee_file)
    tls = None if cluster.plaintext else client_context(client_files(cluster.tls_dir, CLIENT))
    endpoint = Endpoint(
        committee, cluster.protocol, None, tls, NetworkConfig(handshake_timeout=2.0)
    )
    key = SigningKey.generate()
    sent = {"frames": 0, "transactions": 0, "connections": 0}
    make_batch(kind, cluster.chain_id, 0, 1, key)  # an unknown kind fails here, at once

    async def one(replica: int) -> None:
        host, port = cluster.clients[replica]
        counter = 1
        while True:
            try:
                hello = Hello(
                    kind="client", id=0, chain_id=cluster.chain_id, protocol=cluster.protocol
                )
                framed = await dial(endpoint, host, port, hello, expect_replica=replica)
                sent["connections"] += 1
                while True:
                    txs = make_batch(kind, cluster.chain_id, counter, batch, key)
                    counter += len(txs)
                    await framed.send([Submit(txs=tuple(txs)).encode()])
                    sent["frames"] += 1
                    sent["transactions"] += len(txs)
            except Exception:
                await trio.sleep(0.05)  # dropped (as it should be): come back

    with trio.move_on_after(seconds):
        async with trio.open_nursery() as nursery:
            for replica in range(cluster.n):
                nursery.start_soon(one, replica)
    return sent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bft.testbed.hostile", description=__doc__)
    parser.add_argument("--dir", required=True, help="the cluster directory")
    parser.add_argument("--kind", choices=KINDS, required=True)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=100, help="transactions per frame")
    args = parser.parse_args(argv)
    try:
        sent = trio.run(flood, Path(args.dir), args.kind, args.seconds, args.batch)
    except Exception as exc:  # a CLI error is one line
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"kind": args.kind, **sent}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
