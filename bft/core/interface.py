"""The core interface every protocol implements, and what a core is built from.

Theory of operation
-------------------
A core is a synchronous state machine with no I/O and no clock (after etcd/raft's ``RawNode`` and
h11). Inputs: ``step(sender, message)`` for a decoded message from an authenticated peer (not yet
trusted), ``propose(request)`` for a client request that passed admission, and ``tick()`` for one
unit of logical time. Output: ``ready()`` returns a :class:`~bft.core.ready.Ready` holding, in
order of obligation, state to make durable, messages, committed blocks and client replies; the
driver carries it out and calls ``advance(ready)``.

A core is built from a :class:`CoreContext`: the committee, its replica id, its signer (the only
thing that signs), the ledger's tip and recent blocks (committed state, already durable), and the
records it asked to persist before (``persisted``), so a restart resumes exactly where the durable
state says, never from memory.

Block catch-up is shared: a core that is behind sends :class:`~bft.core.messages.BlockRequest`;
the *driver* of the peer answers it from its ledger (see :func:`serve_block_request`), and the
core verifies what comes back before committing it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from crypto import Committee, PublicKey
from crypto.codec import Record, RecordUnion
from ledger import Block, genesis_hash

from .messages import MAX_BLOCKS_PER_RESPONSE, SHARED_MESSAGES, BlockRequest, BlockResponse
from .ready import Ready
from .requests import ClientTable, Request


class Signer(Protocol):
    """The one object that signs for a replica."""

    public_key: PublicKey

    def sign_digest(self, digest: bytes) -> bytes: ...


@dataclass(frozen=True, slots=True)
class LedgerState:
    """The committed ledger as a core sees it at start: the tip, the most recent blocks, and
    the client table (request deduplication) of the whole ledger.

    ``clients``, when given, must hold every block up to ``height`` (a runtime keeps it on disk
    and replays the blocks above its snapshot). Without it the core rebuilds the table from
    ``recent``, which must then be the whole ledger: a table rebuilt from the last blocks
    only would take an older transaction, replayed, for a new one.
    """

    chain_id: str
    height: int = 0
    last_hash: bytes = b""
    recent: tuple[Block, ...] = ()
    clients: ClientTable | None = None

    def __post_init__(self) -> None:
        if not self.last_hash:
            if self.height:
                raise ValueError("a non-empty ledger needs its last hash")
            object.__setattr__(self, "last_hash", genesis_hash(self.chain_id))

    @classmethod
    def of_blocks(cls, chain_id: str, blocks: Sequence[Block]) -> LedgerState:
        """A ledger held in memory, whole (the client table is rebuilt from all of it)."""
        if not blocks:
            return cls(chain_id)
        return cls(chain_id, blocks[-1].height, blocks[-1].hash(), tuple(blocks))


@dataclass(frozen=True, slots=True)
class CoreContext:
    committee: Committee
    replica: int
    signer: Signer
    ledger: LedgerState
    persisted: tuple[Record, ...] = ()
    config: Any = None

    def __post_init__(self) -> None:
        if not 0 <= self.replica < self.committee.n:
            raise ValueError(f"replica {self.replica} is outside a committee of {self.committee.n}")
        if self.ledger.chain_id != self.committee.chain_id:
            raise ValueError("ledger and committee are of different chains")


@dataclass(frozen=True, slots=True)
class CoreStatus:
    """What a replica reports about itself (``bft status``, the simulator's summary)."""

    protocol: str
    replica: int
    role: str
    view: int
    leader: int | None
    height: int
    pending: int
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Core(Protocol):
    replica: int

    def step(self, sender: int, message: Record) -> None:
        """Take a message from authenticated peer ``sender``. Never raises on bad input."""

    def propose(self, request: Request, *, alone: bool = False) -> str:
        """Take a client request that passed admission. Returns ``""``, or why the request was
        dropped (the pending pool is full, or holds as many of this client's as it may): it is
        not pending here, and the client's retry is what brings it back. ``alone``: the client
        sent it to this replica alone, taking it for the leader (a core with a stable leader
        that does not lead relays it to the one that does)."""

    def tick(self) -> None:
        """Advance logical time by one tick."""

    def ready(self) -> Ready | None:
        """Work for the driver, or ``None``. No new one before ``advance``."""

    def advance(self, ready: Ready) -> None:
        """The driver has carried out ``ready`` completely."""

    def status(self) -> CoreStatus: ...

    def next_leaders(self, count: int) -> tuple[int, ...]:
        """Where clients should send new requests, as this replica sees it: up to ``count``
        distinct replicas that lead its current view and the next ones, the earliest first.
        Empty where the leader stays until it fails: clients learn it from the blocks it
        proposes, which prove it."""

    def transactions_to_verify(self, message: Record) -> Sequence[bytes]:
        """Client transactions carried by ``message`` whose signatures the core will check; a
        runtime may verify them off the event loop first (and seed the core's cache)."""


@dataclass(frozen=True)
class ProtocolSpec:
    """How drivers (simulator, replica runtime) use a protocol without knowing it."""

    name: str
    make: Callable[[CoreContext], Core]
    messages: RecordUnion
    byzantine: bool
    round_of: Callable[[Record], int | None]
    config_type: type
    durable: RecordUnion | None = None
    """The records a core persists, for reading its protocol log back (default: ``messages``)."""
    equivocate: Callable[[Record, Signer, Committee], Record | None] | None = None
    """Testbed only: a conflicting, validly signed variant of a leader's proposal, for a replica
    told to equivocate; ``None`` for messages it cannot equivocate on."""
    evidence: Callable[[Record, Record, Committee, int], str] | None = None
    """Checks a pair of messages as evidence of equivocation (see :mod:`bft.core.evidence`);
    ``None`` for a protocol without signed messages."""

    @property
    def log_records(self) -> RecordUnion:
        return self.durable if self.durable is not None else self.messages

    def min_replicas(self, faults: int) -> int:
        return 3 * faults + 1 if self.byzantine else 2 * faults + 1

    def faults(self, n: int) -> int:
        return (n - 1) // 3 if self.byzantine else (n - 1) // 2


def message_union(*protocol_messages: type[Record]) -> RecordUnion:
    """All messages of a protocol plus the shared ones."""
    return RecordUnion([*SHARED_MESSAGES, *protocol_messages])


def serve_block_request(
    request: BlockRequest, height: int, get_block: Callable[[int], Block], max_bytes: int = 4 << 20
) -> BlockResponse:
    """What a driver answers to a :class:`BlockRequest`, from its ledger of ``height`` blocks."""
    blocks: list[Block] = []
    size = 0
    stop = min(height, request.start + min(request.count, MAX_BLOCKS_PER_RESPONSE) - 1)
    for h in range(request.start, stop + 1):
        block = get_block(h)
        blocks.append(block)
        size += sum(len(t) for t in block.txs) + 512
        if size >= max_bytes:
            break
    return BlockResponse(start=request.start, height=height, blocks=tuple(blocks))
