"""Link and Byzantine faults for a running testbed, told to the replicas by the admin client.

A fault becomes a *plan*: for each replica, the ``Control`` commands it must receive. A replica
applies link faults where it sends (drop, delay, cut towards a peer) and where it receives (cut
from a peer), so a fault on one replica's links is told to that replica *and* to its peers:

* ``partition 0,1/2,3``: every replica cuts, both ways, every peer outside its own group (a
  replica named in no group is cut off from all);
* ``slow R --delay MS``: R delays what it sends to everyone, everyone delays what it sends to R;
* ``drop R --probability P``: the same with random loss;
* ``cut A B``: A stops sending to B (one direction only: an asymmetric fault);
* ``byzantine R MODE``: R turns ``silent``, ``equivocate`` (conflicting proposals when it leads),
  ``bad-signatures``, ``bad-replies`` (receipts that do not verify, to its clients), or back
  to ``honest``;
* ``heal``: every replica clears its link faults (not Byzantine modes).

Faults add up until ``heal``. A replica that is down when a fault is told does not learn it.
"""

from __future__ import annotations

from dataclasses import dataclass

import trio

from bft.client import ClientConfig, open_client

from .processes import TestbedError

Plan = dict[int, list[tuple[str, dict[str, object]]]]

BYZANTINE_MODES = {
    "honest": "",
    "silent": "silent",
    "equivocate": "equivocate",
    "twin": "twin",
    "bad-signatures": "bad-signatures",
    "bad-replies": "bad-replies",
}


def parse_groups(text: str, n: int) -> list[list[int]]:
    """``"0,1/2,3"`` -> ``[[0, 1], [2, 3]]``, every id in range and in one group at most."""
    groups: list[list[int]] = []
    seen: set[int] = set()
    for part in text.split("/"):
        group = []
        for item in part.split(","):
            item = item.strip()
            if not item:
                continue
            try:
                replica = int(item)
            except ValueError:
                raise TestbedError(f"partition {text!r}: {item!r} is not a replica id") from None
            if not 0 <= replica < n:
                raise TestbedError(f"partition {text!r}: no replica {replica} (0..{n - 1})")
            if replica in seen:
                raise TestbedError(f"partition {text!r}: replica {replica} is in two groups")
            seen.add(replica)
            group.append(replica)
        if group:
            groups.append(group)
    if len(groups) < 2:
        raise TestbedError(f"partition {text!r}: give at least two groups, like 0,1/2,3")
    return groups


def check_replica(replica: int, n: int) -> int:
    """``replica`` if the cluster of ``n`` has it, else :class:`TestbedError`."""
    if not 0 <= replica < n:
        raise TestbedError(f"no replica {replica}: the cluster has replicas 0..{n - 1}")
    return replica


def plan_partition(groups: list[list[int]], n: int) -> Plan:
    return {i: [("partition", {"groups": groups})] for i in range(n)}


def plan_link(kind: str, replica: int, n: int, value: float) -> Plan:
    """``slow`` (value: seconds) or ``drop`` (value: probability) on ``replica``'s links."""
    check_replica(replica, n)
    command, key = {"slow": ("delay", "seconds"), "drop": ("drop", "probability")}[kind]
    plan: Plan = {replica: [(command, {key: value})]}
    for other in range(n):
        if other != replica:
            plan[other] = [(command, {key: value, "peers": [replica]})]
    return plan


def plan_cut(sender: int, receiver: int, n: int) -> Plan:
    check_replica(sender, n)
    check_replica(receiver, n)
    if sender == receiver:
        raise TestbedError("a replica cannot be cut from itself")
    return {sender: [("cut", {"peers": [receiver], "outbound": True, "inbound": False})]}


def plan_heal(n: int) -> Plan:
    return {i: [("heal", {})] for i in range(n)}


def plan_byzantine(replica: int, mode: str, n: int) -> Plan:
    check_replica(replica, n)
    if mode not in BYZANTINE_MODES:
        raise TestbedError(
            f"unknown Byzantine mode {mode!r}; choose from {', '.join(BYZANTINE_MODES)}"
        )
    return {replica: [("byzantine", {"mode": BYZANTINE_MODES[mode]})]}


@dataclass
class Told:
    replica: int
    ok: bool
    detail: str


async def apply(config: ClientConfig, plan: Plan, *, timeout: float = 5.0) -> list[Told]:
    """Send each replica its commands with the admin client; report, per replica, how it went."""
    results: list[Told] = []
    async with open_client(config, wait=0) as client:

        async def tell(replica: int) -> None:
            detail = "ok"
            for command, args in plan[replica]:
                reply = await client.control(replica, command, args, timeout=timeout / 2)
                if reply is None:
                    results.append(Told(replica, False, "did not answer (down or paused?)"))
                    return
                if not reply.ok:
                    results.append(Told(replica, False, reply.detail))
                    return
                detail = reply.detail
            results.append(Told(replica, True, detail))

        async with trio.open_nursery() as nursery:
            for replica in plan:
                nursery.start_soon(tell, replica)
    return sorted(results, key=lambda t: t.replica)
