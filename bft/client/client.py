"""The client library: submit transactions, get receipts, read the ordered stream of blocks.

Theory of operation
-------------------
A :class:`Client` keeps one authenticated connection to every replica (reconnecting as needed).
``submit`` gives a payload the next sequence number of this client, signs it if the client has a
key, and queues it; a batcher sends queued transactions in one ``Submit`` frame once
``batch_max`` are waiting or ``linger`` has passed (as a Kafka producer does; with nothing else
in flight, at once). In PBFT and Raft the frame goes to the leader alone once the client knows
it (the proposer of the newest certified block it verified; ``leader_first``), as PBFT's
clients do: the other replicas learn each request from the leader's proposal instead of
admitting it twice. The frame says it went to that replica alone: a replica that no longer
leads (the client has not yet seen a block of the new leader) relays it to the one that does.
HotStuff's leader changes every view: there a replica's answer names the f+1 (at least three)
replicas that lead its current view and the next ones (``Committed.leaders``), and the frame
goes to those: one of the first proposes it, and they, not the block's answerers, answer it.
At n = 10 that spares six replicas in ten the admission of each request, and the client six
frames in ten.
A request the leader (or those leaders) has not answered after ``leader_timeout``, or that it
alone refuses or places where another transaction is, goes to every replica at once, so a
faulty leader cannot silently drop it: the backups' timers then run, and a new leader proposes
it. Before the first verified block and with the leaders not connected, frames go to every
connected replica; a replica whose connection comes up later (``open_client`` waits for a
quorum only), or again, is then sent the unanswered requests it should hold. At most
``max_inflight`` requests are outstanding, and a new one is numbered less than
``client_window`` above the oldest unfinished one (the replicas refuse as stale a request a
window behind the client's newest committed one); more ``submit`` calls wait (backpressure, not
unbounded memory). A process that submits thousands per second allocates a few short-lived
objects per transaction; Python's default collector thresholds then cost it ~8 % of its CPU,
and ``bft.node.memory.collecting_less_often`` (what ``bft testbed load`` uses) saves that.

``send(payload, on_done)`` queues a transaction the same way but returns at once with its sequence
number, and calls ``on_done`` with its receipt or error when it settles: a producer that keeps
many transactions open needs no task, and no task switch, per transaction.

A transaction is committed for the client when a replica reports its place in the ledger and
the receipt built from the report verifies against the committee file (the certificate, a
Byzantine quorum's signatures in the BFT modes, is checked once per block): that is proof on its
own. A replica that once sent evidence that does not verify is suspect: its reports count only
when ``ack_quorum`` replicas (f+1 in the BFT modes, so at least one honest) make the same one,
so it cannot make the client check certificates over and over. Then ``submit`` returns the
:class:`~ledger.Receipt`. Requests not committed after
``retry_after`` are sent to every replica again with the same sequence number (the replicas
deduplicate); after ``timeout`` the client gives up with :class:`NotCommitted`: the outcome is
*indeterminate*, the request may still commit, but never twice. A request refused by
``ack_quorum`` replicas raises :class:`Rejected` with the reason (a refusal carries no proof).

The replicas deduplicate by ``(client, seq)``. An unsigned client is a new identity with every
client object and numbers from 1; a signing client's identity is its key, which outlives the
process, so it numbers from the wall clock in microseconds (``first_seq`` overrides): a restart
does not reuse the numbers of the process before it. If a quorum places one of its numbers at a
position that holds another transaction anyway (two processes with one key), ``submit`` raises
:class:`Rejected` at once, saying so.

``blocks(from_height)`` streams committed blocks in order, each verified (hash link and
certificate) before it is yielded; a replica that sends an invalid block is left for another.
"""

from __future__ import annotations

import json
import logging
import os
import random
import ssl
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from crypto import Committee, MerkleTree, SigningKey, leaf_hash
from crypto.codec import CodecError
from crypto.hashing import DIGEST_SIZE
from crypto.keyfiles import load_committee, load_secret_key
from crypto.keys import PUBLIC_KEY_SIZE
from ledger import Block, BlockError, BlockHeader, Receipt, ReceiptError, verify_block
from ledger.tx import encode_signed, encode_transaction
from ledger.verify import verify_certificate
from network import Endpoint, FramedStream, FrameError, HandshakeError, Hello, NetworkConfig, dial
from network.outbox import Outbox
from network.tls import TlsFiles, client_context

from .protocol import (
    TO_CLIENT,
    Blocks,
    Committed,
    Control,
    ControlReply,
    Refused,
    StatusReply,
    StatusRequest,
    Submit,
    Subscribe,
    leader_count,
)


class ClientError(Exception):
    """Base of the client library's errors."""


class NotCommitted(ClientError, TimeoutError):
    """Not committed in time. Indeterminate: the request may still commit, but never twice."""

    def __init__(self, seq: int, waited: float) -> None:
        self.seq = seq
        super().__init__(
            f"request {seq} not committed within {waited:.1f} s; it may still commit (never twice)"
        )


class Rejected(ClientError):
    """The replicas refused the request; it was not and will not be committed."""

    def __init__(self, seq: int, reason: str) -> None:
        self.seq = seq
        self.reason = reason
        super().__init__(f"request {seq} rejected: {reason}")


class ClusterUnreachable(ClientError):
    """No replica could be reached."""


@dataclass
class ClientConfig:
    committee: Committee
    replicas: dict[int, tuple[str, int]]
    tls: TlsFiles | None
    protocol: str
    signing_key: SigningKey | None = None
    sign: bool = False
    batch_max: int = 500
    linger: float = 0.002
    max_inflight: int = 1_000
    """Requests outstanding at once. Keep it below the replicas' per-client window (1024 by
    default): a request more than a window behind the client's newest committed one is refused
    as stale."""
    client_window: int = 1024
    """The replicas' per-client window (``client_window`` of the protocol's config). A new
    request is numbered less than this above the oldest unfinished one, or waits: however many
    are in flight, one stuck behind the others is never refused as stale."""
    retry_after: float = 3.0
    leader_first: bool = True
    """In the modes with a stable leader (PBFT's primary, Raft's leader), send a new request to
    the replica that proposed the newest block this client verified, as PBFT's clients do; in
    HotStuff (whose leader changes every view), to the f+1 (at least three) leaders of the next
    views that the newest answer names. The others receive it when that answer is not enough
    (a refusal, evidence that does not verify), after ``leader_timeout``, or when none is
    connected. Every other replica is then spared the admission of each request. ``False``,
    and before the first verified block: to every replica at once."""
    leader_timeout: float = 1.0
    """How long a request sent to the leader alone waits for its receipt before it is sent to
    every replica (a leader that lost it, or that was replaced: the others then start their
    timers, and a new leader proposes it)."""
    timeout: float = 30.0
    connect_timeout: float = 5.0
    network: NetworkConfig = field(default_factory=NetworkConfig)
    client_id: bytes | None = None
    """An unsigned client's identity (1-31 bytes), for an application that keeps one across
    restarts; ``None``: a new random one for each client object. A signing client's identity
    is its key (32 bytes; replicas refuse unsigned transactions under an id of that size)."""
    first_seq: int | None = None
    """The sequence number of the first transaction. ``None``: 1 for a new random identity; for
    an identity that outlives the process (a signing key, or ``client_id``), the wall clock in
    microseconds, so that it numbers above every transaction an earlier process with that
    identity sent (unless that one averaged more than a million a second, or the clock went
    back). Set it to continue a sequence the application keeps itself."""

    @property
    def ack_quorum(self) -> int:
        return self.committee.f + 1 if self.committee.is_bft else 1

    @classmethod
    def from_cluster(
        cls, directory: Path | str, *, client: str = "default", sign: bool = False, **options: Any
    ) -> ClientConfig:
        """A configuration for a cluster made by ``bft testbed init``."""
        from bft.testbed.layout import load_cluster

        cluster = load_cluster(Path(directory))
        committee = load_committee(cluster.committee_file)
        key = load_secret_key(cluster.client_key(client)).key
        tls = None
        if not cluster.plaintext:
            tls = TlsFiles(
                cluster.tls_dir / "ca.crt",
                cluster.tls_dir / f"client-{client}.crt",
                cluster.tls_dir / f"client-{client}.tls.key",
            )
        return cls(
            committee,
            dict(cluster.clients),
            tls,
            cluster.protocol,
            signing_key=key,
            sign=sign,
            **options,
        )


Outcome = Receipt | ClientError
"""What a request came to: its receipt, or :class:`Rejected` / :class:`NotCommitted`."""


@dataclass
class _Pending:
    seq: int
    raw: bytes
    done: trio.Event | None
    """What ``submit`` waits on; ``None`` for a request sent with a callback (``send``)."""
    deadline: float
    first_sent: float = 0.0
    last_sent: float = 0.0
    attempts: int = 0
    narrow: bool = False
    """Sent to the leader alone, or to the leaders of the next views (so far)."""
    votes: dict[tuple[int, int, bytes] | str, set[int]] = field(default_factory=dict)
    voted: dict[int, tuple[int, int, bytes] | str] = field(default_factory=dict)
    receipt: Receipt | None = None
    error: ClientError | None = None
    finished: bool = False
    on_done: Callable[[Outcome], object] | None = None

    def vote(self, replica: int, report: tuple[int, int, bytes] | str) -> int:
        """Count ``replica``'s report (a place, a refusal, a bad path); return how many replicas
        make it. A replica's newest report replaces its earlier one, so a faulty replica cannot
        fill memory with reports of places that do not exist."""
        earlier = self.voted.get(replica)
        if earlier is not None and earlier != report:
            others = self.votes[earlier]
            others.discard(replica)
            if not others:
                del self.votes[earlier]
        self.voted[replica] = report
        voters = self.votes.setdefault(report, set())
        voters.add(replica)
        return len(voters)


log = logging.getLogger(__name__)

STABLE_LEADER = frozenset({"pbft", "raft"})
"""The modes whose leader stays until it fails (HotStuff's changes every view)."""

STREAM_STALL_S = 5.0
"""``blocks()`` moves to the next replica after this long without a new block from the one it
reads."""

OUTBOX_BYTES = 16 << 20
"""Frames queued for one replica at most (bytes); beyond, the oldest are dropped (what they
carried is sent again by the retrier)."""


class _Connection:
    def __init__(self, replica: int) -> None:
        self.replica = replica
        self.framed: FramedStream | None = None
        self.connected = trio.Event()
        self.failures = 0
        self.outbox = Outbox(max_bytes=OUTBOX_BYTES)


class Client:
    def __init__(self, config: ClientConfig, nursery: trio.Nursery) -> None:
        self.config = config
        self.nursery = nursery
        self.committee = config.committee
        self.chain_id = config.committee.chain_id
        if config.sign:
            if config.signing_key is None:
                raise ClientError("signing requests needs the client's key")
            self.client_id = config.signing_key.public_key.raw
        elif config.client_id is not None:
            if not 1 <= len(config.client_id) < PUBLIC_KEY_SIZE:
                # 32 bytes is a signing client's id (its public key): replicas refuse unsigned
                # transactions under one.
                raise ClientError(
                    f"client_id must be 1..{PUBLIC_KEY_SIZE - 1} bytes (an unsigned client's id)"
                )
            self.client_id = config.client_id
        else:
            self.client_id = os.urandom(16)
        first = config.first_seq
        if first is None:
            lasting = config.sign or config.client_id is not None
            first = time.time_ns() // 1000 if lasting else 1
        if first < 1:
            raise ClientError(f"first_seq must be positive, not {first}")
        self._seq = first - 1
        self._oldest = first
        """No unfinished request has a lower number (see ``_wait_for_window``)."""
        self._pending: dict[int, _Pending] = {}
        self._outbox: list[_Pending] = []
        self._outbox_ready = trio.Event()
        self._slots = trio.Semaphore(config.max_inflight)
        self._window_moved = trio.Event()
        self._conns = {r: _Connection(r) for r in config.replicas}
        self._verified_blocks: set[tuple[int, bytes]] = set()
        self._trees: OrderedDict[tuple[int, bytes], MerkleTree] = OrderedDict()
        self._status_waiters: dict[int, trio.MemorySendChannel[Any]] = {}
        self._block_streams: list[tuple[int, trio.MemorySendChannel[Block]]] = []
        self.stats: Counter[str] = Counter()
        tls = client_context(config.tls) if config.tls is not None else None
        self._endpoint = Endpoint(self.committee, config.protocol, None, tls, config.network)
        self._rng = random.Random()
        self._leader: int | None = None
        self._leader_height = 0
        self._next_leaders: tuple[int, ...] = ()
        self._next_leaders_height = 0
        self._suspects: set[int] = set()
        """Replicas that sent evidence that did not verify: their reports count only when f+1
        replicas make the same one (so each costs the client at most one failed check)."""

    # ------------------------------------------------------------------------------ connections

    async def _keep_connected(self, conn: _Connection) -> None:
        host, port = self.config.replicas[conn.replica]
        hello = Hello(kind="client", id=0, chain_id=self.chain_id, protocol=self.config.protocol)
        backoff = 0.05
        while True:
            try:
                with trio.fail_after(self.config.connect_timeout):
                    framed = await dial(
                        self._endpoint, host, port, hello, expect_replica=conn.replica
                    )
            except (
                OSError,
                ssl.SSLError,
                trio.TooSlowError,
                trio.BrokenResourceError,
                HandshakeError,
            ):
                conn.failures += 1
                self.stats["connect_failures"] += 1
                await trio.sleep(backoff * (0.5 + self._rng.random()))
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.05
            conn.outbox.clear()  # frames for the last connection: sent again just below
            conn.framed = framed
            conn.connected.set()
            self.stats["connects"] += 1
            self._catch_up(conn.replica)
            try:
                async with trio.open_nursery() as both:
                    both.start_soon(self._write, conn, framed, both.cancel_scope)
                    await self._read_until_closed(conn, framed, both.cancel_scope)
            finally:
                conn.framed = None
                conn.connected = trio.Event()
                await trio.aclose_forcefully(framed.stream)

    async def _read(self, conn: _Connection, framed: FramedStream) -> None:
        while True:
            frame = await framed.receive()
            if frame is None:
                return
            if not frame:
                continue
            message = TO_CLIENT.decode(frame)
            if isinstance(message, Committed):
                self._on_committed(conn.replica, message)
            elif isinstance(message, Refused):
                self._on_refused(conn.replica, message)
            elif isinstance(message, Blocks):
                for replica, channel in list(self._block_streams):
                    if replica == conn.replica:
                        for block in message.blocks:
                            # A reader that falls behind by 1024 blocks resubscribes.
                            with suppress(
                                trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError
                            ):
                                channel.send_nowait(block)
            elif isinstance(message, StatusReply | ControlReply):
                waiter = self._status_waiters.pop(conn.replica, None)
                if waiter is not None:
                    waiter.send_nowait(message)

    async def _write(
        self, conn: _Connection, framed: FramedStream, scope: trio.CancelScope
    ) -> None:
        try:
            await conn.outbox.run(framed)
        except (OSError, ssl.SSLError, trio.BrokenResourceError, trio.ClosedResourceError):
            self.stats["disconnects"] += 1
            scope.cancel()  # the connection is gone: stop reading too, and reconnect

    async def _read_until_closed(
        self, conn: _Connection, framed: FramedStream, scope: trio.CancelScope
    ) -> None:
        try:
            await self._read(conn, framed)
        except (
            OSError,
            ssl.SSLError,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            CodecError,
            FrameError,
        ):
            self.stats["disconnects"] += 1
        finally:
            scope.cancel()  # closed or broken: stop writing too, and reconnect

    def _send(self, replica: int, frames: Sequence[bytes]) -> bool:
        """Queue ``frames`` for ``replica`` (``False`` if it is not connected)."""
        conn = self._conns.get(replica)
        if conn is None or conn.framed is None:
            return False
        conn.outbox.put(frames)
        return True

    def _send_alone(self, targets: tuple[int, ...], frame: bytes) -> bool:
        """Queue ``frame`` for each of ``targets``; whether any is connected."""
        sent = False
        for replica in targets:
            sent = self._send(replica, [frame]) or sent
        return sent

    def _broadcast(self, frames: Sequence[bytes]) -> int:
        """Queue ``frames`` for every connected replica; return how many."""
        return sum([self._send(replica, frames) for replica in self._conns])

    def _submit_frames(self, pendings: Sequence[_Pending]) -> list[bytes]:
        """``Submit`` frames for ``pendings``, ``batch_max`` to a frame."""
        step = self.config.batch_max
        return [
            Submit(txs=tuple(p.raw for p in pendings[i : i + step])).encode()
            for i in range(0, len(pendings), step)
        ]

    def _send_to_all(self, pendings: Sequence[_Pending]) -> None:
        """Queue ``pendings`` for every connected replica."""
        self._broadcast(self._submit_frames(pendings))

    def _catch_up(self, replica: int) -> None:
        """A connection to ``replica`` is up: send it the unanswered requests already sent that
        it should hold and may lack, since its connection was down or lost them (those sent to
        every replica; the leader's own too, if it is the leader). Without this a request
        broadcast while the leader was not connected (right after ``open_client``, which waits
        for a quorum only, or while it reconnected) reaches it only at ``retry_after``: Raft's
        followers relay only what a client sent to them alone. The replicas deduplicate."""
        targeted = replica in self._targets()
        due = [
            p
            for p in self._pending.values()
            if p.last_sent and not p.finished and (not p.narrow or targeted)
        ]
        if due:
            self._send(replica, self._submit_frames(due))
        self.stats["caught_up"] += len(due)

    def _targets(self) -> tuple[int, ...]:
        """The replicas new requests go to alone, or none: to every replica. The leader, in
        the modes with a stable leader; in HotStuff the f+1 leaders of the next views (as the
        newest answer named them), but none if one of them is suspect."""
        if not self.config.leader_first:
            return ()
        if self._next_leaders:
            if self._suspects.isdisjoint(self._next_leaders):
                return self._next_leaders
            return ()
        leader = self._leader
        if leader is None or leader in self._suspects:
            return ()
        return (leader,)

    def _take_leaders(self, height: int, leaders: tuple[int, ...]) -> None:
        """Where an answer for a block at ``height`` says new requests should go (HotStuff). A
        hint, not a proof: kept from the answer about the newest block, and only when it names
        :func:`~bft.client.protocol.leader_count` distinct replicas of the committee (f+1 at
        least, so one of them is honest; a wrong one costs a request ``leader_timeout`` at
        most)."""
        if height < self._next_leaders_height:
            return
        committee = self.committee
        want = leader_count(committee)
        if len(leaders) != want or len(set(leaders)) != want or max(leaders) >= committee.n:
            self.stats["leader_hints_ignored"] += 1
            return
        self._next_leaders, self._next_leaders_height = leaders, height

    def _widen(self, pendings: Sequence[_Pending]) -> None:
        """Send requests that only the leader has to every replica, now."""
        wide = [p for p in pendings if p.narrow and not p.finished]
        if not wide:
            return
        now = trio.current_time()
        for p in wide:
            p.narrow = False
            p.last_sent = now
        self._send_to_all(wide)
        self.stats["widened"] += len(wide)

    async def wait_connected(self, count: int | None = None, timeout: float | None = None) -> None:
        """Wait until ``count`` replicas (default: all) are connected."""
        need = len(self._conns) if count is None else count
        with trio.fail_after(timeout if timeout is not None else self.config.connect_timeout * 2):
            while sum(1 for c in self._conns.values() if c.framed is not None) < need:
                await trio.sleep(0.01)

    # ------------------------------------------------------------------------------ submitting

    def _make(self, payload: bytes) -> tuple[int, bytes]:
        self._seq += 1
        seq = self._seq
        if self.config.sign and self.config.signing_key is not None:
            return seq, encode_signed(self.config.signing_key, self.chain_id, seq, payload)
        return seq, encode_transaction(self.client_id, seq, payload)

    async def submit(self, payload: bytes) -> Receipt:
        """Order ``payload``; return its receipt once committed (see the module's contract)."""
        await self._take_slot()
        try:
            return await self._wait(self._enqueue(payload))
        finally:
            self._slots.release()

    async def _take_slot(self) -> None:
        """One of ``max_inflight`` slots, once the window lets the next number go (the caller
        releases the slot when its request settles). A free slot is taken without a checkpoint
        of its own (``async with`` the semaphore yields to the scheduler every time, one task
        switch per request); ``submit`` still yields, waiting for its receipt."""
        slots = self._slots
        try:
            slots.acquire_nowait()
        except trio.WouldBlock:
            await slots.acquire()
        try:
            await self._wait_for_window()
        except BaseException:
            slots.release()
            raise

    async def _wait_for_window(self) -> None:
        """Until the next sequence number is within ``client_window`` of the oldest unfinished
        request."""
        window = self.config.client_window
        pending = self._pending
        while pending:
            # The oldest unfinished number only grows. Found by stepping from the last one seen:
            # ``next(iter(pending))`` walked every deleted slot at the front of the dict (5 %
            # of a load process's time with requests finishing out of order).
            oldest = self._oldest
            while oldest not in pending:
                oldest += 1
            self._oldest = oldest
            if self._seq + 1 - oldest < window:
                return
            if self._window_moved.is_set():
                self._window_moved = trio.Event()
            self.stats["window_waits"] += 1
            await self._window_moved.wait()

    async def send(self, payload: bytes, on_done: Callable[[Outcome], object]) -> int:
        """Queue ``payload`` and return its sequence number; ``on_done`` is called once, from
        the client's own tasks, with what it came to: the :class:`~ledger.Receipt`, or the
        :class:`Rejected` or :class:`NotCommitted` that ``submit`` would raise (also when the
        client closes first). Like ``submit`` it waits while ``max_inflight`` requests are
        open or the window is full, but not for the outcome: a producer keeps many requests
        open from one task, as with a Kafka producer's callbacks, without the task switch
        per request that ``submit`` costs (a quarter of a load process's CPU per request at
        saturation: 34 against 25 us in a PBFT testbed).
        ``on_done`` must not block; what it raises is logged and counted
        (``stats["callback_errors"]``)."""
        await self._take_slot()
        return self._enqueue(payload, on_done).seq

    def _finish(self, pending: _Pending) -> None:
        """``pending`` came to its outcome (its receipt or error is set; neither: it timed
        out): wake its ``submit``, or free its slot and call its callback."""
        pending.finished = True
        callback = pending.on_done
        if callback is None:
            if pending.done is not None:
                pending.done.set()  # ``_wait`` takes it from here
            return
        self._pending.pop(pending.seq, None)
        self._window_moved.set()
        self._slots.release()
        outcome = self._outcome(pending)
        try:
            callback(outcome)
        except Exception:
            self.stats["callback_errors"] += 1
            log.exception("client: the callback of request %d raised", pending.seq)

    def _outcome(self, pending: _Pending) -> Outcome:
        if pending.error is not None:
            return pending.error
        if pending.receipt is None:
            self.stats["indeterminate"] += 1
            waited = trio.current_time() - (pending.deadline - self.config.timeout)
            return NotCommitted(pending.seq, min(waited, self.config.timeout))
        return pending.receipt

    def _close_callbacks(self) -> None:
        """The client is closing: requests sent with a callback and still open come to
        :class:`NotCommitted` (they may still commit)."""
        for pending in [p for p in self._pending.values() if p.on_done is not None]:
            self._finish(pending)  # (one that finished has left ``_pending``)

    def _enqueue(
        self, payload: bytes, on_done: Callable[[Outcome], object] | None = None
    ) -> _Pending:
        seq, raw = self._make(payload)
        deadline = trio.current_time() + self.config.timeout
        if on_done is None:
            pending = _Pending(seq, raw, trio.Event(), deadline)
        else:
            pending = _Pending(seq, raw, None, deadline, on_done=on_done)
        self._pending[seq] = pending
        self._outbox.append(pending)
        self._outbox_ready.set()
        return pending

    async def _wait(self, pending: _Pending) -> Receipt:
        try:
            # ``_expirer`` ends the wait at the deadline. A cancel scope per request cost ~10 us,
            # about a tenth of the client's CPU per transaction at saturation.
            if pending.done is not None:  # always, for a request ``submit`` made
                await pending.done.wait()
            outcome = self._outcome(pending)
            if isinstance(outcome, ClientError):
                raise outcome
            return outcome
        finally:
            self._pending.pop(pending.seq, None)
            self._window_moved.set()

    async def submit_many(self, payloads: Sequence[bytes]) -> list[Receipt | ClientError]:
        """Submit all of ``payloads`` concurrently; each result is a receipt or the error.

        Sequence numbers follow the order of ``payloads``, so the ledger keeps that order.
        """
        results: list[Receipt | ClientError] = [ClientError("not run")] * len(payloads)

        async def one(i: int, pending: _Pending) -> None:
            try:
                results[i] = await self._wait(pending)
            except ClientError as exc:
                results[i] = exc
            finally:
                self._slots.release()

        async with trio.open_nursery() as nursery:
            for i, payload in enumerate(payloads):
                await self._take_slot()
                # Numbered and queued here, in order (tasks start in no promised order).
                nursery.start_soon(one, i, self._enqueue(payload))
        return results

    async def _batcher(self) -> None:
        config = self.config
        while True:
            await self._outbox_ready.wait()
            if (
                len(self._outbox) < config.batch_max
                and config.linger > 0
                and len(self._pending) > len(self._outbox)
            ):
                # Others are in flight (load): wait a little for more to share the frame. With
                # nothing in flight, a request leaves at once: lingering then is pure latency.
                await trio.sleep(config.linger)
            batch, self._outbox = self._outbox[: config.batch_max], self._outbox[config.batch_max :]
            if not self._outbox:
                self._outbox_ready = trio.Event()
            if not batch:
                continue
            now = trio.current_time()
            for pending in batch:
                pending.first_sent = pending.last_sent = now
            txs = tuple(p.raw for p in batch)
            targets = self._targets()
            if targets and self._send_alone(targets, Submit(txs=txs, alone=True).encode()):
                for pending in batch:
                    pending.narrow = True
                self.stats["batches_to_leader"] += 1
            elif self._broadcast([Submit(txs=txs).encode()]) == 0:
                self.stats["send_failures"] += 1
            self.stats["batches_sent"] += 1

    async def _expirer(self) -> None:
        """Ends the wait of every request past its deadline (``submit`` then raises
        :class:`NotCommitted`). ``_pending`` is in sequence order, which is deadline order."""
        while True:
            now = trio.current_time()
            wake = now + self.config.timeout  # no deadline set later can be earlier than this
            expired = []
            for pending in self._pending.values():
                if pending.finished:
                    continue  # answered; its waiter has not run yet
                if pending.deadline > now:
                    wake = pending.deadline
                    break
                expired.append(pending)
            for pending in expired:  # (a callback's request leaves ``_pending`` as it finishes)
                self._finish(pending)
            await trio.sleep_until(wake)

    async def _retrier(self) -> None:
        config = self.config
        while True:
            await trio.sleep(min(config.retry_after / 4, config.leader_timeout / 4, 0.5))
            now = trio.current_time()
            # What the leader alone has and has not answered in time goes to the others.
            self._widen(
                [
                    p
                    for p in self._pending.values()
                    if p.narrow and now - p.first_sent >= config.leader_timeout
                ]
            )
            # Each request waits twice as long before each re-send: a slow cluster is not
            # flooded with copies of what it is already working on.
            due = [
                p
                for p in self._pending.values()
                if p.last_sent
                and not p.finished
                and now - p.last_sent >= config.retry_after * (1 << min(p.attempts, 6))
            ]
            if not due:
                continue
            for p in due:
                p.last_sent = now
                p.attempts += 1
                p.narrow = False
            self._send_to_all(due)
            self.stats["retries"] += len(due)

    # ------------------------------------------------------------------------------ replies

    def _block_ok(self, header: BlockHeader, block_hash: bytes, certificate: Any) -> bool:
        """Whether ``certificate`` certifies the header (``block_hash`` is its hash). A block is
        checked until one certificate for it verifies; only that is remembered: a faulty
        replica's bad certificate says nothing about the block, and remembering it would let
        that replica keep every client from its receipts."""
        key = (header.height, block_hash)
        if key in self._verified_blocks:
            return True
        try:
            verify_certificate(header, certificate, self.committee)
        except BlockError:
            self.stats["bad_certificates"] += 1
            return False
        if len(self._verified_blocks) >= 4096:
            self._verified_blocks.clear()
        self._verified_blocks.add(key)
        if header.height > self._leader_height and header.protocol in STABLE_LEADER:
            # The newest certified block names the leader that proposed it: PBFT's primary (a
            # view change makes another one, whose blocks then name it), Raft's leader.
            self._leader, self._leader_height = header.proposer, header.height
        return True

    def _leaf_tree(self, message: Committed, block_hash: bytes) -> MerkleTree | None:
        """The block's Merkle tree from the leaves a replica sent, once they are checked against
        the header's root (cached: every replica sends the same block)."""
        key = (message.header.height, block_hash)
        tree = self._trees.get(key)
        if tree is None:
            hashes = [
                message.leaves[i : i + DIGEST_SIZE]
                for i in range(0, len(message.leaves), DIGEST_SIZE)
            ]
            tree = MerkleTree.from_leaf_hashes(hashes)
            if tree.root != message.header.tx_root:
                self.stats["bad_receipts"] += 1
                return None
            self._trees[key] = tree
            while len(self._trees) > 16:
                self._trees.popitem(last=False)
        return tree

    def _on_committed(self, replica: int, message: Committed) -> None:
        header = message.header
        block_hash = header.hash()
        height = header.height
        quorum = self.config.ack_quorum
        trusted = replica not in self._suspects
        mine = self.client_id
        pending_of = self._pending.get
        evidence_ok: bool | None = None
        tree: MerkleTree | None = None
        settled = 0
        widen: list[_Pending] = []  # what this replica alone cannot settle: ask the others
        for i, (client, seq, index) in enumerate(
            zip(message.clients, message.seqs, message.indexes, strict=True)
        ):
            if client != mine:
                continue
            pending = pending_of(seq)
            if pending is None or pending.finished:
                continue
            # A receipt that verifies is proof on its own (the certificate is a Byzantine
            # quorum's); a replica that sent evidence that did not verify must be joined by f+1.
            # A trusted replica's report is counted only where it does not settle the request
            # (what settles it needs no count, and counting cost a microsecond per transaction).
            report = (height, index, block_hash)
            if trusted:
                votes = 0
            else:
                votes = pending.vote(replica, report)
                if votes < quorum:
                    continue
            if evidence_ok is None:  # once per frame: a bad one costs one check, not one per tx
                evidence_ok = self._block_ok(header, block_hash, message.certificate)
                if evidence_ok and message.leaves:
                    tree = self._leaf_tree(message, block_hash)
                    evidence_ok = tree is not None
                if not evidence_ok:
                    self._suspect(replica)
            if not evidence_ok:
                if trusted:
                    pending.vote(replica, report)
                widen.append(pending)
                continue
            if tree is not None:
                if leaf_hash(pending.raw) != tree.levels[0][index]:
                    # The place holds another transaction: a used sequence number, if f+1 say
                    # so (one faulty replica could name any place).
                    if trusted:
                        votes = pending.vote(replica, report)
                    if votes >= quorum:
                        self._taken(pending, height, index)
                    else:
                        widen.append(pending)
                    continue
                path = tree.proof(index)
            else:
                raw = message.paths[i]
                path = tuple(raw[k : k + DIGEST_SIZE] for k in range(0, len(raw), DIGEST_SIZE))
            # Every part is checked already (decoded, or our own transaction and a computed path).
            receipt = Receipt.from_checked(
                header=header,
                certificate=message.certificate,
                tx=pending.raw,
                index=index,
                path=path,
            )
            if not message.leaves:
                try:
                    receipt.verify_inclusion()  # the certificate was checked once for the block
                except ReceiptError:
                    self.stats["bad_receipts"] += 1
                    # One faulty replica can send a bad path; a quorum's paths that all fail
                    # include an honest one: the position holds another transaction.
                    if pending.vote(replica, f"bad path {height}/{index}") >= quorum:
                        self._taken(pending, height, index)
                    else:
                        widen.append(pending)
                    continue
            pending.receipt = receipt
            self._finish(pending)
            settled += 1
        if settled:
            self.stats["committed"] += settled
        if message.leaders and evidence_ok and trusted and header.protocol not in STABLE_LEADER:
            self._take_leaders(height, message.leaders)
        self._widen(widen)

    def _suspect(self, replica: int) -> None:
        if replica not in self._suspects:
            self._suspects.add(replica)
            self.stats["suspect_replicas"] += 1
            log.warning(
                "client: replica %d sent evidence that does not verify; its reports now count "
                "only with f+1 others",
                replica,
            )

    def _taken(self, pending: _Pending, height: int, index: int) -> None:
        """A quorum places this client's sequence number at a certified position that holds
        another transaction: the number was used before (by another process with this key),
        and the replicas will never order this one under it."""
        self.stats["seq_taken"] += 1
        pending.error = Rejected(
            pending.seq,
            f"sequence number {pending.seq} of this client was already used by another "
            f"transaction (height {height}, position {index}): another process with the same "
            "key, or an earlier one; number from above it (ClientConfig.first_seq)",
        )
        self.stats["rejected"] += 1
        self._finish(pending)

    def _on_refused(self, replica: int, message: Refused) -> None:
        quorum = self.config.ack_quorum
        widen: list[_Pending] = []
        for item in message.items:
            if item.client != self.client_id:
                continue
            pending = self._pending.get(item.seq)
            if pending is None or pending.finished:
                continue
            if pending.vote(replica, f"refused: {item.reason}") >= quorum:
                pending.error = Rejected(item.seq, item.reason)
                self.stats["rejected"] += 1
                self._finish(pending)
            else:
                widen.append(pending)  # the leader's word alone: ask the others
        self._widen(widen)

    # ------------------------------------------------------------------------- reading the order

    async def blocks(self, from_height: int = 1) -> AsyncIterator[Block]:
        """Committed blocks from ``from_height`` in order, each verified before it is yielded."""
        expected = from_height
        prev_hash: bytes | None = None
        replicas = list(self._conns)
        turn = 0
        while True:
            replica = replicas[turn % len(replicas)]
            turn += 1
            send, receive = trio.open_memory_channel[Block](1024)
            entry = (replica, send)
            self._block_streams.append(entry)
            try:
                subscribed_on = self._conns[replica].framed
                if not self._send(replica, [Subscribe(start=expected).encode()]):
                    await trio.sleep(0.1)
                    continue
                progress = trio.current_time()
                while True:
                    block = None
                    with trio.move_on_after(1.0):
                        block = await receive.receive()
                    if block is None or block.height < expected:
                        if self._conns[replica].framed is not subscribed_on:
                            break  # that connection is gone: subscribe again, to the next one
                        if trio.current_time() - progress > STREAM_STALL_S:
                            # Nothing new from this replica for a while: nothing committed, or
                            # a faulty replica that answers with nothing or old blocks. Ask
                            # the next one (a quiet cluster costs a Subscribe frame now and
                            # then).
                            self.stats["block_stream_stalls"] += 1
                            break
                        continue
                    if block.height > expected:
                        break
                    try:
                        if prev_hash is None:
                            verify_certificate(block.header, block.certificate, self.committee)
                            if block.computed_root() != block.header.tx_root:
                                raise BlockError(block.height, "Merkle root does not match")
                            block_hash = block.hash()
                        else:
                            block_hash = verify_block(
                                block,
                                chain_id=self.chain_id,
                                height=expected,
                                prev_hash=prev_hash,
                                committee=self.committee,
                            )
                    except BlockError:
                        self.stats["bad_blocks"] += 1
                        break
                    prev_hash = block_hash
                    expected += 1
                    yield block
                    progress = trio.current_time()  # the reader's own time is not a stall
            finally:
                self._block_streams.remove(entry)
                await send.aclose()

    # ------------------------------------------------------------------------- status and control

    async def _ask(self, replica: int, frame: bytes, timeout: float) -> Any:
        send, receive = trio.open_memory_channel[Any](1)
        self._status_waiters[replica] = send
        with trio.move_on_after(timeout):
            # Right after open_client only a quorum may be connected: wait for this replica.
            await self._conns[replica].connected.wait()
            if self._send(replica, [frame]):
                return await receive.receive()
        self._status_waiters.pop(replica, None)
        return None

    async def status(
        self, replica: int, *, verbose: bool = False, timeout: float = 2.0
    ) -> dict[str, Any] | None:
        reply = await self._ask(replica, StatusRequest(verbose=verbose).encode(), timeout)
        return json.loads(reply.json) if isinstance(reply, StatusReply) else None

    async def control(
        self, replica: int, command: str, args: dict[str, Any] | None = None, timeout: float = 2.0
    ) -> ControlReply | None:
        frame = Control(command=command, args=json.dumps(args or {})).encode()
        reply = await self._ask(replica, frame, timeout)
        return reply if isinstance(reply, ControlReply) else None


@asynccontextmanager
async def open_client(config: ClientConfig, *, wait: int | None = None) -> AsyncIterator[Client]:
    """A connected client (``wait``: how many replicas to wait for, default a quorum).

    Errors raised in the body (``NotCommitted``, say) and ``ClusterUnreachable`` come out as
    themselves, not wrapped in the nursery's exception group.
    """
    try:
        async with trio.open_nursery() as nursery:
            client = Client(config, nursery)
            for conn in client._conns.values():
                nursery.start_soon(client._keep_connected, conn)
            nursery.start_soon(client._batcher)
            nursery.start_soon(client._retrier)
            nursery.start_soon(client._expirer)
            need = (
                wait
                if wait is not None
                else config.committee.quorum
                if config.committee.is_bft
                else 1
            )
            try:
                await client.wait_connected(min(need, len(config.replicas)))
            except trio.TooSlowError:
                nursery.cancel_scope.cancel()
                raise ClusterUnreachable(f"fewer than {need} replicas reachable") from None
            try:
                yield client
            finally:
                client._close_callbacks()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        single = _single(group)
        if single is None:
            raise
        raise single from None


def _single(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception inside (possibly nested) one-member groups, else ``None``."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        if len(exc.exceptions) != 1:
            return None
        exc = exc.exceptions[0]
    return exc


class BlockingClient:
    """The client for ordinary (non-async) programs: the same API, each call blocking.

    It runs its own Trio loop on a background thread. Use as a context manager.
    """

    def __init__(self, config: ClientConfig, *, wait: int | None = None) -> None:
        self._config = config
        self._wait = wait
        self._token: trio.lowlevel.TrioToken | None = None
        self._client: Client | None = None
        self._started = threading.Event()
        self._stop: trio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bft-client", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._token = trio.lowlevel.current_trio_token()
            self._stop = trio.Event()
            try:
                async with open_client(self._config, wait=self._wait) as client:
                    self._client = client
                    self._started.set()
                    await self._stop.wait()
            except BaseException as exc:
                self._error = exc
                self._started.set()

        trio.run(main)

    def __enter__(self) -> BlockingClient:
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None and self._stop is not None:
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(timeout=10)

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._client is None or self._token is None:
            raise ClientError("the client is not open")
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    def submit(self, payload: bytes) -> Receipt:
        return self._call(self._client.submit, payload)  # type: ignore[union-attr]

    def submit_many(self, payloads: Sequence[bytes]) -> list[Receipt | ClientError]:
        return self._call(self._client.submit_many, payloads)  # type: ignore[union-attr]

    def status(self, replica: int, *, verbose: bool = False) -> dict[str, Any] | None:
        return self._call(lambda: self._client.status(replica, verbose=verbose))  # type: ignore[union-attr]
