"""The output of a core, and the order in which the driver must act on it.

A driver loops: feed input (``step``, ``propose``, ``tick``), then while ``ready()`` returns a
:class:`Ready`, carry out all of it in field order and call ``advance(ready)``. The core hands out
no new ``Ready`` before ``advance``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from crypto.codec import Record
from ledger import Block

BROADCAST = -1
"""Destination meaning every other replica of the committee."""


@dataclass(frozen=True, slots=True)
class Outbound:
    """A message for one replica, or for all others when ``to`` is :data:`BROADCAST`."""

    to: int
    message: Record


class Reply(NamedTuple):
    """What a replica tells a client about one of its requests.

    ``height`` and ``position`` say where the transaction is in the ledger; the block is in this
    ``Ready``'s ``committed`` or already in the ledger. ``error`` is set (and the position is
    meaningless) when the request was refused: the request was not and will not be committed.
    A named tuple (one per committed transaction): built in a third of a frozen dataclass's time.
    """

    client: bytes
    seq: int
    height: int = 0
    position: int = 0
    error: str = ""


@dataclass(frozen=True, slots=True)
class Ready:
    """Work for the driver, in order of obligation. Do each field completely, in this order:

    1. ``persist``: records that must be **durable (fsynced) before any message or reply below
       is sent**: the view or term, votes cast, locks. Append them to the replica's protocol
       log, or, when ``persist_replaces`` is true, replace the whole log by them atomically
       (write, fsync, rename). A replica restarted from that log never signs a vote that
       conflicts with one it sent before.
    2. ``messages``: send to the peers. Order between different destinations does not matter;
       order to one destination should be kept. No message vouches for the blocks below: the
       votes rest on the protocol log, and a block is certified before it is handed over.
    3. ``committed``: blocks in height order, each with the certificate that proves it. Append
       them to the ledger and make them durable (one group commit) before sending ``replies``.
    4. ``replies``: send to clients, after the blocks they point at are durable.

    Then call ``advance(ready)``.

    With ``persist_replaces`` the new log may leave out what ``committed`` holds (a core
    compacts its log below the blocks it hands over), so the blocks are made durable first,
    then the log is replaced, then the messages go: a crash between any two steps leaves every
    block in the ledger or in the log.

    One exception to the order, which the core states: ``send_first`` means that ``persist``
    holds only the replica's own new log entries as a Raft leader, which no message in this
    ``Ready`` vouches for (Ongaro's dissertation, 10.2.1; etcd's leader does the same). The
    driver may then send ``messages`` before or while it makes the records durable. Everything
    that counts them as durable (the leader counting itself toward a majority on a follower's
    acknowledgement, a reply) still comes after, since no input is stepped before ``advance``.
    """

    persist: tuple[Record, ...] = ()
    persist_replaces: bool = False
    committed: tuple[Block, ...] = ()
    messages: tuple[Outbound, ...] = ()
    replies: tuple[Reply, ...] = ()
    send_first: bool = False

    def __bool__(self) -> bool:
        return bool(
            self.persist or self.persist_replaces or self.committed or self.messages or self.replies
        )
