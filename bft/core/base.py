"""What every core has in common: the Ready contract, rejections, verified catch-up, and relaying
client requests to the leader."""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence
from typing import Any

from crypto import Committee
from crypto.codec import Record
from ledger import Block, BlockError, CommitteeSchedule, verify_block

from .admission import AdmissionPolicy, VerifiedCache, check_transactions
from .errors import LocalMisuse, Rejections
from .interface import CoreContext, LedgerState
from .messages import MAX_RELAY_BYTES, MAX_RELAY_TXS, BlockResponse, Relay
from .ready import BROADCAST, Outbound, Ready, Reply
from .requests import ClientTable, Mempool, Request, RequestId, Status

STALE = "stale request: sequence number too far behind"
MAX_RELAY_PENDING = 4_096
"""Requests a replica gathers for the leader between two ``ready`` calls; more stay with it
alone (the client's own timeout then sends them to every replica)."""


class CoreBase:
    """Buffers a core's outputs and hands them out as one :class:`Ready` at a time."""

    def __init__(self, context: CoreContext) -> None:
        self.context = context
        self.committee: Committee = context.committee
        self.replica = context.replica
        self.signer = context.signer
        self.chain_id = context.committee.chain_id
        # Blocks below ``start_height`` (a chain that switched mode) were certified by earlier
        # committees; a protocol's config names them.
        earlier = tuple(getattr(context.config, "earlier_committees", ()) or ())
        start = getattr(context.config, "start_height", 1) or 1
        self.schedule = CommitteeSchedule(
            [*earlier, (start, self.committee)] if earlier else [(1, self.committee)]
        )
        self.rejections = Rejections()
        self.verified = VerifiedCache()
        """Transaction ids whose client signatures are known good; a runtime seeds it."""
        self._persist: list[Record] = []
        self._persist_replaces = False
        self._committed: list[Block] = []
        self._messages: list[Outbound] = []
        self._replies: list[Reply] = []
        self._outstanding: Ready | None = None
        self._relay: list[bytes] = []
        self.relayed = 0
        """Client requests this replica handed to a leader."""
        self.relayed_in = 0
        """Client requests this replica, leading, took from others' relays."""

    # -- outputs

    def send(self, to: int, message: Record) -> None:
        if to == self.replica:
            raise LocalMisuse("a core does not send to itself")
        self._messages.append(Outbound(to, message))

    def broadcast(self, message: Record) -> None:
        self._messages.append(Outbound(BROADCAST, message))

    def persist(self, record: Record) -> None:
        self._persist.append(record)

    def persist_snapshot(self, records: Sequence[Record]) -> None:
        """Replace the whole durable protocol log by ``records``."""
        self._persist = list(records)
        self._persist_replaces = True

    def emit_committed(self, block: Block) -> None:
        self._committed.append(block)

    def reply(self, reply: Reply) -> None:
        self._replies.append(reply)

    def reply_all(self, replies: list[Reply]) -> None:
        self._replies.extend(replies)

    def reject(self, sender: int, message: object, reason: str) -> None:
        self.rejections.record(sender, type(message).__name__, reason)

    # -- the Ready contract

    def has_ready(self) -> bool:
        return self._outstanding is None and bool(
            self._persist
            or self._persist_replaces
            or self._committed
            or self._messages
            or self._replies
        )

    def before_ready(self) -> None:
        """Work a core defers until the driver asks for output (cutting batches, say)."""

    def ready(self) -> Ready | None:
        if self._outstanding is None:
            self.before_ready()
            if self._relay:
                self._send_relay()
        if not self.has_ready():
            return None
        ready = Ready(
            persist=tuple(self._persist),
            persist_replaces=self._persist_replaces,
            committed=tuple(self._committed),
            messages=tuple(self._messages),
            replies=tuple(self._replies),
            send_first=bool(self._persist) and self.sends_before_persist(),
        )
        self._persist.clear()
        self._persist_replaces = False
        self._committed.clear()
        self._messages.clear()
        self._replies.clear()
        self._outstanding = ready
        return ready

    def sends_before_persist(self) -> bool:
        """Whether this ``Ready``'s messages may leave before its ``persist`` is durable (see
        :class:`Ready`); never, unless a protocol says why."""
        return False

    def advance(self, ready: Ready) -> None:
        if ready is not self._outstanding:
            raise LocalMisuse("advance() must be given the Ready that ready() returned")
        self._outstanding = None

    def transactions_to_verify(self, sender: int, message: Record) -> Sequence[bytes]:
        """Client transactions in ``message`` (from replica ``sender``) whose signatures the
        runtime may check ahead, off the event loop; the core checks any it then finds
        unchecked itself."""
        return ()

    clients: ClientTable
    """Each protocol's table of the requests its ledger settled (set by the subclass)."""

    @staticmethod
    def start_client_table(ledger: LedgerState, empty: ClientTable) -> ClientTable:
        """The client table to start with: the runtime's (rebuilt from the whole ledger, see
        :class:`LedgerState`), which must have ``empty``'s limits; else ``empty`` filled from
        ``ledger.recent``."""
        table = ledger.clients
        if table is None:
            empty.rebuild(ledger.recent)
            return empty
        if not table.same_limits(empty):
            raise LocalMisuse("the ledger's client table has other limits than the config's")
        if table.height > ledger.height:
            raise LocalMisuse(
                f"the ledger's client table holds height {table.height}, above the ledger's "
                f"{ledger.height}"
            )
        return table

    def answer_if_known(self, request: Request, clients: ClientTable, durable_height: int) -> bool:
        """Answer a request the ledger already settles; ``True`` when there is nothing more to do.

        Committed: its place (once its block is durable, ``<= durable_height``; a retry before
        then is answered with the others when the block is). Stale: a final refusal.
        """
        if clients.is_new(request.client, request.seq):
            return False  # nearly always: one cheap test
        status, where = clients.status(request.client, request.seq)
        if status is Status.COMMITTED:
            if where is not None and where[0] <= durable_height:
                self.reply(Reply(request.client, request.seq, where[0], where[1]))
            return True
        if status is Status.STALE:
            self.reply(Reply(request.client, request.seq, error=STALE))
            return True
        return False

    def next_leaders(self, count: int) -> tuple[int, ...]:
        """See :meth:`bft.core.interface.Core.next_leaders`: none by default."""
        return ()

    # -- relaying client requests to the leader (protocols with a stable leader)

    def relay_target(self) -> int | None:
        """The leader this replica hands client requests to; ``None`` while it leads itself or
        knows no leader (protocols whose leader changes every view never relay)."""
        return None

    def relay(self, raws: Iterable[bytes]) -> None:
        """Hand these requests to the leader with the next ``ready`` (up to
        ``MAX_RELAY_PENDING``; the rest stay here, as they would without a relay)."""
        for raw in raws:
            if len(self._relay) >= MAX_RELAY_PENDING:
                return
            self._relay.append(raw)

    def relay_pending(self, mempool: Mempool, skip: Container[RequestId] = ()) -> None:
        """A new leader: hand it what waits here for ordering (the client may have sent it to
        this replica alone, or to the old leader, which is this one), but ``skip``."""
        self.relay(r.raw for r in mempool.requests() if r.id not in skip)

    def _send_relay(self) -> None:
        raws, self._relay = self._relay, []
        to = self.relay_target()
        if to is None or to == self.replica:
            return  # when a leader comes, relay_pending hands it what still waits
        chunk: list[bytes] = []
        size = 0
        for raw in raws:
            if chunk and (len(chunk) >= MAX_RELAY_TXS or size + len(raw) > MAX_RELAY_BYTES):
                self.send(to, Relay(txs=tuple(chunk)))
                chunk, size = [], 0
            chunk.append(raw)
            size += len(raw)
        self.send(to, Relay(txs=tuple(chunk)))
        self.relayed += len(raws)

    def take_relay(self, sender: int, relay: Relay, limits: Any) -> None:
        """Propose the requests of ``relay`` that pass the admission a client's would (size,
        form, signatures; ``limits`` has the protocol config's ``max_tx_bytes`` and
        ``require_signatures``). A replica relays only what it admitted, so any other is
        recorded as refused."""
        policy = AdmissionPolicy(self.chain_id, limits.max_tx_bytes, limits.require_signatures)
        admitted, refused = check_transactions(relay.txs, policy, self.verified)
        for _, reason in refused:
            # One reason per kind of fault (a count per distinct text would grow without bound).
            kind = "oversized" if reason.startswith("transaction of") else reason.split(":")[0]
            self.reject(sender, relay, f"relayed transaction refused: {kind}")
        self.relayed_in += len(admitted)
        propose = self.propose  # type: ignore[attr-defined]
        for request in admitted:
            propose(request)

    def committee_for(self, height: int) -> Committee:
        """The committee that certified (or certifies) the block at ``height``."""
        return self.schedule.committee_for(height)

    def fetched_extension(
        self, sender: int, response: BlockResponse, height: int, last_hash: bytes
    ) -> list[Block]:
        """The blocks of ``response`` that extend a ledger of ``height`` ending in
        ``last_hash``, in order, each verified (link and certificate). The first block that
        does not verify is recorded as refused and ends the list."""
        out: list[Block] = []
        for block in response.blocks:
            h = block.height
            if h <= height:
                continue
            if h != height + 1:
                break
            reason = self.verify_fetched(block, h, last_hash)
            if reason:
                self.reject(sender, response, f"fetched block {h}: {reason}")
                break
            out.append(block)
            height, last_hash = h, block.hash()
        return out

    # -- catch-up verification shared by the protocols

    def verify_fetched(self, block: Block, height: int, prev_hash: bytes) -> str:
        """Check a block fetched from a peer: ``""`` when it may be committed, else why not."""
        try:
            verify_block(
                block,
                chain_id=self.chain_id,
                height=height,
                prev_hash=prev_hash,
                committee=self.schedule,
            )
        except BlockError as exc:
            return exc.reason
        return ""
