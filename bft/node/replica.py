"""The replica runtime: one protocol core driven by Trio, real sockets, a ledger on disk.

Theory of operation
-------------------
One task, the *driver*, owns the core. Everything else talks to it through a bounded inbox:
peer readers put decoded messages there (and wait when it is full, which slows the peer down
over TCP), client readers put admitted requests, and a ticker puts a tick every ``tick_ms``
(ticks coalesce: a busy driver sees one, not a pile). The driver takes one event and whatever
else is already waiting, feeds all of it to the core, then carries out each ``Ready`` in the
order it demands:

1. ``persist``: appended to the protocol log and fsynced (or the log replaced atomically);
2. ``committed``: appended to the ledger and fsynced, one group commit for the whole batch;
3. ``messages``: encoded once each and queued on the peer links (never awaited);
4. ``replies``: one ``Committed`` frame per client per block, with the Merkle evidence.

Disk work holds one capacity limiter (the ledger store is single-owner). The protocol-log and
ledger appends of steps 1 and 2 run on the event loop while the disk is quick, and on a worker
thread when it is not, so that the loop keeps serving peers and clients during a slow fsync
(:mod:`bft.node.disk`); other disk work (index batches, block reads) always runs on a thread.
Nothing that depends on state is sent before that state is durable, and no client hears of a
block before the block is on disk: a replica killed with SIGKILL at any point loses nothing it
acknowledged.

Peers that fall behind ask for blocks (``BlockRequest``); the runtime answers from the ledger.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import json
import logging
import math
import signal
import ssl
import time
from collections import Counter, OrderedDict, defaultdict, deque
from collections.abc import Callable, Sequence
from typing import Any

import trio

from bft.client.protocol import (
    TO_REPLICA,
    Blocks,
    Committed,
    Control,
    ControlReply,
    Refusal,
    Refused,
    StatusReply,
    StatusRequest,
    Submit,
    Subscribe,
    leader_count,
)
from bft.core.admission import AdmissionPolicy, VerifiedCache
from bft.core.errors import LocalMisuse
from bft.core.evidence import Evidence, EvidenceError, find_signer
from bft.core.interface import CoreContext, LedgerState, serve_block_request
from bft.core.messages import BlockRequest, BlockResponse
from bft.core.ready import BROADCAST, Outbound, Ready, Reply
from bft.core.requests import Request, RequestId
from bft.protocols import spec as protocol_spec
from crypto import MerkleTree
from crypto.codec import CodecError, Record
from crypto.keyfiles import load_committee, load_secret_key
from ledger import Block, looks_signed, txid_of
from ledger.store import LedgerStore
from network import (
    Acceptor,
    Endpoint,
    FramedStream,
    Identity,
    LinkFaults,
    NetworkConfig,
    PeerLinks,
    ProtocolViolation,
    read_frames,
)
from network.outbox import Outbox
from network.tls import TlsError, TlsFiles, client_context, server_context

from .clients import ClientTableFile
from .config import BYZANTINE_MODES, ConfigError, ReplicaConfig, protocol_config
from .disk import DiskRunner
from .evidence import EvidenceStore
from .logs import RateLimit
from .logs import configure as configure_logging
from .logs import event as log_event
from .memory import Malloc, resident_bytes, snapshot, tune_gc
from .metrics import GcWatch, ReplicaMetrics, prometheus_available
from .signatures import SignatureChecks
from .wal import ProtocolLog

log = logging.getLogger("bft.replica")

RECENT_BLOCKS = 256
MAX_ROUTES = 1_000_000
ROUTE_FANOUT = 4
"""Client connections one request's reply goes to at most: the first that submitted it and the
latest. A request arrives on several when a client reconnects, or when anyone else submits the
same bytes (a faulty replica can: it sees every transaction); the reply must not go to the last
submitter alone, or submitting a copy would take another client's replies."""
PEER_CONNECTIONS = 2  # connections from one peer read at once; a newer one closes the oldest
Route = tuple[tuple[int, ...], float, bool]
"""Where a request's reply goes: client connection numbers, when it was last admitted, and
whether a client sent it to a few replicas, this one among them (``Submit.alone``): this
replica then answers it whoever proposed its block."""
ROUTE_TTL_S = 600.0  # a request not answered this long after admission is no longer routed
SESSION_QUEUE = 4096
SESSION_QUEUE_BYTES = 32 << 20
"""What one client connection may have queued (frames, bytes); beyond, the oldest frames are
dropped: a client that stops reading loses replies it will ask for again, and a subscriber
resubscribes from the gap."""
SETTLED_ANSWERS_QUEUE = 1024
"""Answers waiting to read their (old) block from the ledger; beyond, they are dropped and
counted (``settled_answers_dropped``): the client asks again."""
BACKFILL_FRAME_BYTES = 1 << 20
BACKFILL_AHEAD_BYTES = 4 << 20
"""A subscriber's catch-up reads the next blocks only while less than this is queued for it:
the ledger is read as fast as the subscriber takes it, not faster."""
SESSION_REPEATS = 4096  # settled requests a client connection was answered again, remembered
REPEAT_WINDOW_S = 1.0  # the same settled request again within this costs the refusal allowance
FREE_ANSWER_BLOCKS = 256
"""A settled request submitted again is answered without charge when its block is one of the
last this many (a lagging replica receives an honest client's requests after the others committed
them; a client retries a lost answer within seconds). One settled in an older block costs the
connection's refusal allowance: its answer is a read of that block from the ledger, and a flood
of distinct old transactions, each sent once, would otherwise read the ledger at no charge."""
INDEX_BATCH_ROWS = 20_000  # index entries written together (see _index_writer)
INDEX_EVERY_S = 5.0  # ... or whatever has accumulated, this often
INDEX_PAUSE_S = 0.02  # between chunks of a sealed segment's run (see _index_writer)
FULL_COLLECTION_EVERY_S = 60.0
"""... and a full collection this often, whatever the counts say (see :func:`tune_gc`)."""


class ReplicaError(Exception):
    """The replica cannot start; the message says why, in one line."""


class Allowance:
    """A per-connection budget of ``rate`` units per second, a second's worth banked (a token
    bucket); ``rate`` 0 means no limit."""

    def __init__(self, rate: float, max_pause: float | None = None) -> None:
        self.rate = rate
        self.max_pause = max_pause
        self._credit = rate
        self._at: float | None = None

    def take(self, amount: float, now: float) -> float:
        """Spend ``amount``; return how long to stop reading from the connection to earn the
        overdraft back (0 while within the budget; at most ``max_pause``)."""
        rate = self.rate
        if rate <= 0:
            return 0.0
        credit = self._credit if self._at is None else self._credit + (now - self._at) * rate
        credit = min(rate, credit) - amount
        self._credit, self._at = credit, now
        if credit >= 0:
            return 0.0
        pause = -credit / rate
        return pause if self.max_pause is None else min(self.max_pause, pause)


class ClientSession:
    """One client connection: a bounded outbound queue and its writer."""

    def __init__(
        self, number: int, identity: Identity, framed: FramedStream, config: ReplicaConfig
    ) -> None:
        self.number = number
        self.identity = identity
        self.framed = framed
        self.outbox = Outbox(max_frames=SESSION_QUEUE, max_bytes=SESSION_QUEUE_BYTES)
        self.subscribed_from: int | None = None
        self.backfilling = False
        self.closed = False
        self.refusals = Allowance(config.client_refusals_per_s, max_pause=2.0)
        self.repeats: OrderedDict[RequestId, float] = OrderedDict()  # settled, answered again
        self.txs = Allowance(config.client_txs_per_s)
        self.bytes = Allowance(config.client_bytes_per_s)

    def send(self, record: Record) -> None:
        if not self.closed:
            self.outbox.put([record.encode()])

    async def writer(self) -> None:
        await self.outbox.run(self.framed)


class Replica:
    def __init__(self, config: ReplicaConfig) -> None:
        self.config = config
        try:
            self.committee = load_committee(config.committee_file)
            secret = load_secret_key(config.key_file)
        except Exception as exc:  # KeyFileError and friends: already one line naming the file
            raise ReplicaError(str(exc)) from None
        if secret.role != "replica" or secret.id != config.replica:
            raise ReplicaError(
                f"{config.path}: [replica.key] {config.key_file} holds the key of "
                f"{secret.role} {secret.id}, not replica {config.replica}"
            )
        if secret.chain_id != self.committee.chain_id:
            raise ReplicaError(
                f"{config.key_file}: key of chain {secret.chain_id!r}, "
                f"committee is {self.committee.chain_id!r}"
            )
        if not 0 <= config.replica < self.committee.n:
            raise ReplicaError(
                f"{config.path}: replica {config.replica} is not in a committee "
                f"of {self.committee.n}"
            )
        if self.committee.members[config.replica] != secret.key.public_key:
            raise ReplicaError(
                f"{config.key_file}: this key is not the committee's key "
                f"for replica {config.replica}"
            )
        if not self.committee.accepts_protocol(config.protocol):
            raise ReplicaError(
                f"{config.path}: runs {config.protocol}, but {config.committee_file} is a "
                f"{self.committee.protocol} committee"
            )
        missing = [i for i in range(self.committee.n) if i not in config.peers]
        if missing:
            raise ConfigError(config.path, "peers", f"no address for replicas {missing}")
        try:
            self.spec = protocol_spec(config.protocol)
        except ValueError as exc:
            raise ReplicaError(str(exc)) from None
        self.core_config = protocol_config(config, self.spec.config_type)
        self.signer = secret.key
        self.chain_id = self.committee.chain_id
        self.replica = config.replica
        if config.plaintext:
            server_tls = client_tls = None
        else:
            files = TlsFiles(config.tls_ca, config.tls_cert, config.tls_key)  # type: ignore[arg-type]
            try:
                server_tls, client_tls = server_context(files), client_context(files)
            except TlsError as exc:
                raise ReplicaError(str(exc)) from None
        self.network_config = NetworkConfig(
            max_frame=config.max_frame,
            handshake_timeout=config.handshake_timeout_s,
            idle_timeout=config.idle_timeout_s,
        )
        self.endpoint = Endpoint(
            self.committee, config.protocol, server_tls, client_tls, self.network_config
        )
        self.faults = LinkFaults(seed=config.replica)
        self.admission = AdmissionPolicy(
            chain_id=self.chain_id,
            max_tx_bytes=config.max_tx_bytes,
            require_signatures=config.require_client_signatures,
        )
        self.verified = VerifiedCache()
        self.signatures = SignatureChecks(
            self.chain_id, self.verified, on_thread=config.verify_on_thread
        )
        self.byzantine = config.byzantine
        self.stats: Counter[str] = Counter()
        if config.metrics_listen is not None and not prometheus_available():
            raise ReplicaError(
                f"{config.path}: [metrics] listen is set, but prometheus-client is not "
                "installed (pip install 'bft-ordering[metrics]')"
            )
        self.metrics = ReplicaMetrics() if config.metrics_listen is not None else None
        self.metrics_port: int | None = None
        self.log_limiter: RateLimit | None = None
        """The log handler's rate limiter, when :func:`serve` installed one."""
        self.peer_frames_in: Counter[int] = Counter()
        self.peer_bytes_in: Counter[int] = Counter()
        self.peer_heights: dict[int, int] = {}
        self.evidence_store: EvidenceStore | None = None
        self._evidence_seen = 0
        self._rejections_seen = 0
        self.view = 0
        self.leader: int | None = None
        self._peers_up: set[int] = set()
        self.sessions: dict[int, ClientSession] = {}
        self._peer_inbound: dict[int, deque[trio.CancelScope]] = {}
        self._session_numbers = 0
        self._routes: OrderedDict[tuple[bytes, int], Route] = OrderedDict()
        """(client, seq) -> (session numbers, last admitted at): where a request's reply goes."""
        self._tick_pending = False
        self.started = time.monotonic()
        self._rate: deque[tuple[float, int]] = deque(maxlen=64)
        self._recent_latency: deque[tuple[float, float]] = deque(maxlen=256)
        """(when, seconds): one commit latency sample per reply frame, for ``status``."""
        self._disk = trio.CapacityLimiter(1)
        self.disk = DiskRunner(
            config.disk_inline_below_ms / 1000, self._disk, self.stats, self.replica
        )
        self.store: LedgerStore | None = None
        self.wal: ProtocolLog | None = None
        self.client_file: ClientTableFile | None = None
        self._client_snapshot: bytes | None = None
        self._client_snapshot_due = trio.Event()
        self._evicted_seen = 0
        self._evictions_logged_at = -math.inf
        self.core: Any = None
        self.links: PeerLinks | None = None
        self.ready_event = trio.Event()
        self.gc = GcWatch()
        self.malloc = Malloc()

    # ------------------------------------------------------------------------------ start

    def _open_state(self) -> None:
        data = self.config.data_dir
        try:
            self.store = LedgerStore.open(data / "ledger", chain_id=self.chain_id)
        except Exception as exc:
            raise ReplicaError(f"{data / 'ledger'}: {exc}") from None
        store = self.store
        if store.damage is not None:
            log.error(
                "replica %d: ledger damaged at height %d; truncating to %d, peers resend the rest",
                self.replica,
                store.damage.height,
                store.damage.height - 1,
            )
            store.truncate_after(store.damage.height - 1)
        # The transaction index is committed by _index_writer, off the commit path.
        store.background_index = True
        self.wal = ProtocolLog(data, self.spec.log_records)
        self.evidence_store = EvidenceStore(data / "evidence", self.config.evidence_kept)
        self.client_file = ClientTableFile(data, self.core_config, self.replica)
        clients = self.client_file.load(store)
        start = max(1, store.height - RECENT_BLOCKS + 1)
        recent = tuple(store.blocks(start)) if store.height else ()
        ledger = LedgerState(self.chain_id, store.height, store.last_hash, recent, clients)
        context = CoreContext(
            committee=self.committee,
            replica=self.replica,
            signer=self.signer,
            ledger=ledger,
            persisted=tuple(self.wal.take_loaded()),
            config=self.core_config,
        )
        self.core = self.spec.make(context)
        status = self.core.status()
        self.view, self.leader = status.view, status.leader
        log.info(
            "replica %d (%s, chain %s) recovered: ledger height %d, %d protocol records",
            self.replica, self.config.protocol, self.chain_id, store.height, self.wal.count,
            extra=log_event("recovered"),
        )  # fmt: skip

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self._open_state()
        self.gc.start()
        inbox_send, inbox_receive = trio.open_memory_channel[tuple[Any, ...]](10_000)
        self._inbox = inbox_send
        self._settled_answers, self._settled_answers_out = trio.open_memory_channel[
            tuple[int, int, list[Reply]]
        ](SETTLED_ANSWERS_QUEUE)
        try:
            async with trio.open_nursery() as nursery:
                self.links = PeerLinks(
                    self.endpoint, self.replica, self.config.peers, self.faults, seed=self.replica
                )
                peers = Acceptor(self.endpoint, "replica", self._on_peer)
                clients = Acceptor(
                    self.endpoint,
                    "client",
                    self._on_client,
                    max_open=self.config.max_client_connections,
                    max_open_setting="[limits] max_client_connections",
                )
                self.peer_acceptor, self.client_acceptor = peers, clients
                # Listen before dialling: a peer we reach then reaches us back at once.
                self.peer_port = await self._listen(nursery, peers, self.config.listen)
                self.client_port = await self._listen(nursery, clients, self.config.client_listen)
                await nursery.start(self.links.run)
                nursery.start_soon(self._ticker)
                nursery.start_soon(self._drive, inbox_receive)
                nursery.start_soon(self._answer_settled)
                nursery.start_soon(self._meter)
                nursery.start_soon(self._observe)
                nursery.start_soon(self._index_writer)
                nursery.start_soon(self._client_table_writer)
                nursery.start_soon(self._trim_memory)
                nursery.start_soon(self._collect_garbage)
                if self.config.metrics_listen is not None:
                    await self._serve_metrics(nursery, self.config.metrics_listen)
                # Whatever the core asked for during recovery (a view change to resume, say).
                await self._carry_out()
                log.info(
                    "replica %d serving peers on %s:%d and clients on %s:%d",
                    self.replica,
                    self.config.listen[0],
                    self.peer_port,
                    self.config.client_listen[0],
                    self.client_port,
                    extra=log_event("serving"),
                )
                self.ready_event.set()
                task_status.started(self)
        finally:
            self.close()

    async def _listen(
        self, nursery: trio.Nursery, acceptor: Acceptor, address: tuple[str, int]
    ) -> int:
        """Start serving ``acceptor`` on ``address``; return the port."""
        listeners = await self._start_listening(
            nursery, acceptor.serve, address, f"cannot listen on {{}} for {acceptor.kind}s"
        )
        return int(listeners[0].socket.getsockname()[1])

    async def _serve_metrics(self, nursery: trio.Nursery, address: tuple[str, int]) -> None:
        from .metrics import serve_metrics

        self.metrics_port = await self._start_listening(
            nursery,
            functools.partial(serve_metrics, self),
            address,
            "[metrics.listen] cannot listen on {}",
        )
        log.info(
            "replica %d: metrics at http://%s:%d/metrics",
            self.replica, address[0], self.metrics_port,
        )  # fmt: skip

    async def _start_listening(
        self, nursery: trio.Nursery, serve: Any, address: tuple[str, int], failure: str
    ) -> Any:
        """``nursery.start(serve, host, port)``; a busy or foreign address is a
        :class:`ReplicaError` (``failure`` with the address, and why), not a crash."""
        host, port = address
        try:
            return await nursery.start(serve, host, port)
        except BaseException as exc:
            error = _only_exception(exc) if isinstance(exc, BaseExceptionGroup) else exc
            if isinstance(error, OSError):
                where = failure.format(f"{host}:{port}")
                raise ReplicaError(
                    f"{self.config.path}: {where}: {error.strerror or error}"
                ) from None
            raise

    def close(self) -> None:
        """Flush and close files (after the tasks are gone)."""
        self.gc.close()
        self.disk.close()
        if self.store is not None and self.core is not None and self.client_file is not None:
            # A clean stop leaves the client table at the ledger's height: the next start
            # replays nothing.
            data = self.client_file.snapshot(self.core.clients, self.store.height)
            if data is not None:
                self._write_client_table(data)
        if self.store is not None:
            self.store.close()
            self.store = None
        if self.wal is not None:
            self.wal.close()
            self.wal = None

    # ------------------------------------------------------------------------------ the driver

    async def _ticker(self) -> None:
        interval = self.config.tick_ms / 1000
        while True:
            await trio.sleep(interval)
            if not self._tick_pending:
                self._tick_pending = True
                try:
                    self._inbox.send_nowait(("tick",))
                except trio.WouldBlock:
                    self._tick_pending = False

    async def _drive(self, inbox: trio.MemoryReceiveChannel[tuple[Any, ...]]) -> None:
        async for event in inbox:
            self._apply(event)
            for _ in range(2_000):
                try:
                    event = inbox.receive_nowait()
                except trio.WouldBlock:
                    break
                self._apply(event)
            await self._carry_out()

    def _apply(self, event: tuple[Any, ...]) -> None:
        kind = event[0]
        core = self.core
        if kind == "step":
            core.step(event[1], event[2])
        elif kind == "propose":
            alone = event[2]
            for request in event[1]:
                dropped = core.propose(request, alone=alone)
                if dropped:
                    self._dropped(request, dropped)
        elif kind == "tick":
            self._tick_pending = False
            core.tick()
        elif kind == "transfer":
            try:
                core.transfer_leadership(event[1])
            except LocalMisuse as exc:  # leadership moved on since the request was checked
                log.warning("replica %d: no leadership transfer: %s", self.replica, exc)

    def _dropped(self, request: Request, reason: str) -> None:
        """The core did not take an admitted request (its pending pool is full): nothing here
        will answer it, so its route goes now rather than at ``ROUTE_TTL_S``. Should another
        replica order it, the client's retry is answered from the ledger."""
        self._routes.pop(request.id, None)
        self.stats["client_txs_dropped"] += 1
        # Rate-limited per message by the log handler (RateLimit): one line per reason.
        log.warning(
            "replica %d: an admitted transaction was dropped: %s",
            self.replica, reason,
            extra=log_event("overload"),
        )  # fmt: skip

    async def _carry_out(self) -> None:
        """Carry out each ``Ready`` in the order its contract sets (see :class:`Ready`)."""
        core = self.core
        while (ready := core.ready()) is not None:
            sent = ready.send_first and bool(ready.messages)
            if sent:  # a Raft leader's new entries: written while its followers store them
                self._send_peers(ready.messages)
            if ready.persist_replaces:
                # The new log forgets what the ledger holds from now on: the blocks go first.
                if ready.committed:
                    await self._commit_blocks(ready.committed)
                await self._persist(ready)
            else:
                await self._persist(ready)
                if ready.messages and not sent:
                    # Votes rest on the protocol log alone: they leave before the ledger write.
                    self._send_peers(ready.messages)
                    sent = True
                if ready.committed:
                    await self._commit_blocks(ready.committed)
            if ready.messages and not sent:
                self._send_peers(ready.messages)
            if ready.replies:
                self._reply(ready)
            if ready.committed:
                self._feed_subscribers(ready.committed)
            core.advance(ready)

    async def _commit_blocks(self, committed: Sequence[Block]) -> None:
        """Append certified blocks to the ledger, durably (one group commit)."""
        core = self.core
        blocks = list(committed)
        began = time.monotonic()
        await self.disk.run(self.store.extend, blocks)  # type: ignore[union-attr]
        if self.metrics is not None:
            self.metrics.fsync["ledger"].observe(time.monotonic() - began)
        txs = sum(len(b.txs) for b in blocks)
        self.stats["blocks_committed"] += len(blocks)
        self.stats["txs_committed"] += txs
        # Here the client table holds exactly the ledger's blocks: a consistent moment.
        table = core.clients
        snapshot = self.client_file.take(table, self.store.height, txs)  # type: ignore[union-attr]
        if table.evicted != self._evicted_seen:
            self._evicted_seen = table.evicted
            self._clients_forgotten(table.evicted)
        if snapshot is not None:
            self._client_snapshot = snapshot
            self._client_snapshot_due.set()

    async def _persist(self, ready: Ready) -> None:
        wal = self.wal
        if wal is None:
            return
        if not ready.persist and not ready.persist_replaces:
            return
        began = time.monotonic()
        if ready.persist_replaces:
            await self.disk.run(wal.replace, list(ready.persist))
        else:
            await self.disk.run(wal.append, list(ready.persist))
        if self.metrics is not None:
            self.metrics.fsync["protocol_log"].observe(time.monotonic() - began)

    async def _disk_run(self, fn: Any, *args: Any) -> Any:
        return await trio.to_thread.run_sync(fn, *args, limiter=self._disk)

    def _clients_forgotten(self, total: int) -> None:
        """The client table has forgotten ``total`` clients: say so, at most once a minute."""
        now = time.monotonic()
        if now - self._evictions_logged_at < 60.0:
            return
        self._evictions_logged_at = now
        log.warning(
            "replica %d: the client table is full: %d client(s) forgotten so far (those whose "
            "last commit is oldest); their old transactions would look new again if replayed: "
            "raise [%s] max_clients / max_client_entries on every replica",
            self.replica, total, self.config.protocol,
            extra=log_event("client-table"),
        )  # fmt: skip

    async def _client_table_writer(self) -> None:
        """Write the newest client-table snapshot the driver took, on a thread of its own."""
        limiter = trio.CapacityLimiter(1)
        while True:
            await self._client_snapshot_due.wait()
            self._client_snapshot_due = trio.Event()
            data, self._client_snapshot = self._client_snapshot, None
            if data is not None:
                await trio.to_thread.run_sync(self._write_client_table, data, limiter=limiter)

    def _write_client_table(self, data: bytes) -> None:
        file = self.client_file
        if file is None:
            return
        try:
            file.write(data)
        except OSError as exc:
            self.stats["client_table_write_errors"] += 1
            log.error(
                "replica %d: %s: cannot write the client table: %s (a restart replays more of "
                "the ledger)",
                self.replica, file.path, exc.strerror or exc,
                extra=log_event("client-table"),
            )  # fmt: skip
            return
        self.stats["client_table_snapshots"] += 1

    async def _index_writer(self) -> None:
        """Write the ledger's derived indexes in batches on a thread of their own.

        The indexes (height -> place in SQLite; transaction id -> place in a sorted run file
        per sealed segment) are derived from the fsynced segments and rebuilt from them after a
        crash, so nothing waits for them. Written inline they made every protocol-log and
        ledger fsync queue behind them on the disk thread; a segment's run (sorting its
        transactions, a few hundred ms of CPU for 64 MiB) is written when it is sealed, with
        ``INDEX_PAUSE_S`` between chunks of the work: every replica seals at the same height,
        and the CPU all of them took at once showed as a commit-latency spike. Meanwhile reads
        find the entries in memory.
        """
        limiter = trio.CapacityLimiter(1)
        last = time.monotonic()
        while True:
            await trio.sleep(0.25)
            store = self.store
            if store is None or (
                store.index_lag < INDEX_BATCH_ROWS and time.monotonic() - last < INDEX_EVERY_S
            ):
                continue
            last = time.monotonic()
            batch = await self._disk_run(store.detach_index)
            if batch is None:
                continue
            began = time.monotonic()
            await trio.to_thread.run_sync(
                functools.partial(store.write_index, batch, pause=_index_pause), limiter=limiter
            )
            self.stats["index_rows_written"] += batch.rows
            if self.metrics is not None:
                self.metrics.fsync["index"].observe(time.monotonic() - began)

    # ------------------------------------------------------------------------------ peers

    def _send_peers(self, messages: Sequence[Outbound]) -> None:
        """A ``Ready``'s messages, in order per peer, each peer's in one write: PBFT's commit
        and checkpoint, say, or HotStuff's proposal and a certificate, reach a peer together
        and wake it once."""
        links = self.links
        if len(messages) == 1 or links is None or self.byzantine:
            for out in messages:
                self._send_peer(out.to, out.message)
            return
        frames: dict[int, list[bytes]] = {}
        for out in messages:
            message = out.message
            if type(message) is BlockRequest:
                self._note_block_request(out.to, message)
            frame = message.encode()
            self.stats["messages_sent"] += 1
            if out.to == BROADCAST:
                for peer in links.links:
                    frames.setdefault(peer, []).append(frame)
            else:
                frames.setdefault(out.to, []).append(frame)
        for peer, batch in frames.items():
            links.send_many(peer, batch)

    def _note_block_request(self, to: int, message: BlockRequest) -> None:
        self.stats["block_requests_sent"] += 1
        log.info(
            "replica %d catching up: asking replica %s for blocks from height %d",
            self.replica, to, message.start, extra=log_event("catch-up"),
        )  # fmt: skip

    def _send_peer(self, to: int, message: Record) -> None:
        links = self.links
        if links is None or self.byzantine == "silent":
            return
        if self.byzantine == "bad-signatures":
            message = _spoil_signature(message)
        if (
            self.byzantine in ("equivocate", "twin")
            and self.spec.equivocate is not None
            and to == BROADCAST
        ):
            other = self.spec.equivocate(message, self.signer, self.committee)
            if other is not None:
                # "equivocate" splits the peers, one version each; "twin" acts like two
                # processes sharing this identity: every peer gets both, in either order.
                frame, alt = message.encode(), other.encode()
                for peer in links.links:
                    ours, theirs = (frame, alt) if peer % 2 else (alt, frame)
                    links.send(peer, ours)
                    if self.byzantine == "twin":
                        links.send(peer, theirs)
                self.stats["equivocations_sent"] += 1
                return
        if type(message) is BlockRequest:
            self._note_block_request(to, message)
        frame = message.encode()
        self.stats["messages_sent"] += 1
        if to == BROADCAST:
            links.broadcast(frame)
        else:
            links.send(to, frame)

    async def _on_peer(self, identity: Identity, framed: FramedStream) -> None:
        sender = identity.replica
        if sender is None:
            return
        if self.links is not None:
            self.links.peer_is_up(sender)  # it restarted, say: reconnect to it now
        # A replica connects to us once at a time; a new connection from it replaces its oldest
        # beyond PEER_CONNECTIONS (one that broke without a word, say), so no peer, faulty or
        # not, can hold more than that many readers here.
        mine = self._peer_inbound.setdefault(sender, deque())
        with trio.CancelScope() as scope:
            mine.append(scope)
            while len(mine) > PEER_CONNECTIONS:
                mine.popleft().cancel()
                self.stats["peer_connections_replaced"] += 1
            try:
                await read_frames(framed, identity, self._peer_frame, self.network_config)
            finally:
                if scope in mine:
                    mine.remove(scope)

    async def _peer_frame(self, identity: Identity, frame: bytes) -> None:
        sender = identity.replica
        if sender is None or (self.faults.active and self.faults.inbound_blocked(sender)):
            return
        try:
            message = self.spec.messages.decode(frame)
        except CodecError as exc:
            self.stats["bad_peer_frames"] += 1
            raise ProtocolViolation(f"replica {sender} sent an undecodable frame: {exc}") from None
        self.stats["messages_received"] += 1
        self.peer_frames_in[sender] += 1
        self.peer_bytes_in[sender] += len(frame)
        if type(message) is BlockResponse:
            self.peer_heights[sender] = max(self.peer_heights.get(sender, 0), message.height)
        elif isinstance(message, BlockRequest):
            await self._serve_blocks(sender, message)
            return
        txs = self.core.transactions_to_verify(sender, message) if self.core is not None else ()
        signed = [t for t in txs if looks_signed(t)]
        if len(signed) >= 8:
            # Check a proposal's client signatures on a worker thread, so the core finds them
            # already verified (one hop for the batch); those this replica is checking already,
            # from their client, are waited for instead of checked twice.
            good = await self.signatures.proposal(signed)
            self.core.verified.add(good)
        await self._inbox.send(("step", sender, message))

    async def _serve_blocks(self, peer: int, request: BlockRequest) -> None:
        store = self.store
        if store is None:
            return
        response = await self._disk_run(
            lambda: serve_block_request(request, store.height, store.get)
        )
        self.stats["blocks_served"] += len(response.blocks)
        if self.links is not None:
            self.links.send(peer, response.encode())

    # ------------------------------------------------------------------------------ clients

    async def _on_client(self, identity: Identity, framed: FramedStream) -> None:
        self._session_numbers += 1
        session = ClientSession(self._session_numbers, identity, framed, self.config)
        self.sessions[session.number] = session
        try:
            async with trio.open_nursery() as nursery:

                async def write() -> None:
                    try:
                        await session.writer()
                    except (
                        OSError,
                        ssl.SSLError,
                        trio.BrokenResourceError,
                        trio.ClosedResourceError,
                    ):
                        nursery.cancel_scope.cancel()  # the connection is gone: stop reading too

                nursery.start_soon(write)
                await read_frames(
                    framed,
                    identity,
                    lambda who, frame: self._client_frame(session, nursery, frame),
                    self.network_config,
                )
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The reader's error (a client that went away, a bad frame) must reach the acceptor
            # as itself, which closes this connection only; wrapped in the nursery's group it
            # would escape the acceptor and stop the whole replica.
            error = _only_exception(group)
            if error is None:
                raise
            raise error from None
        finally:
            session.closed = True
            del self.sessions[session.number]
            self.stats["client_bytes_in"] += framed.bytes_received
            self.stats["client_bytes_out"] += framed.bytes_sent

    async def _client_frame(
        self, session: ClientSession, nursery: trio.Nursery, frame: bytes
    ) -> None:
        try:
            message = TO_REPLICA.decode(frame)
        except CodecError as exc:
            self.stats["bad_client_frames"] += 1
            raise ProtocolViolation(f"undecodable client frame: {exc}") from None
        if isinstance(message, Submit):
            await self._submit(session, message)
        elif isinstance(message, Subscribe):
            # One catch-up per connection: a new subscription moves it.
            session.subscribed_from = message.start
            if not session.backfilling:
                session.backfilling = True
                nursery.start_soon(self._backfill, session)
        elif isinstance(message, StatusRequest):
            session.send(StatusReply(json=json.dumps(self.status(verbose=message.verbose))))
        elif isinstance(message, Control):
            session.send(self._control(session, message))

    async def _submit(self, session: ClientSession, message: Submit) -> None:
        txs = message.txs
        self.stats["client_txs_received"] += len(txs)
        now = time.monotonic()
        pause = max(session.txs.take(len(txs), now), session.bytes.take(sum(map(len, txs)), now))
        if pause > 0:
            # Over the connection's configured rate: read nothing more from it until the
            # budget is earned back (TCP slows the sender); what was read is still served.
            self.stats["client_rate_limited"] += 1
            self.stats["client_rate_limited_s"] += pause
            await trio.sleep(pause)
        admitted, refused = await self.signatures.admit(txs, self.admission)
        wasted = len(refused)
        if refused:
            items = []
            for index, reason in refused:
                try:
                    request = Request.from_raw(txs[index])
                    items.append(
                        Refusal(client=request.client, seq=request.seq, reason=reason[:500])
                    )
                except CodecError:
                    self.stats["client_txs_malformed"] += 1
            self.stats["client_txs_refused"] += len(refused)
            if items:
                session.send(Refused(items=tuple(items)))
        if admitted:
            # Requests the ledger already settles are answered again and counted. One costs the
            # allowance when it repeats on this connection within a second of the last time, or
            # when its block is older than FREE_ANSWER_BLOCKS (a ledger read): a replica that
            # lags receives an honest client's requests once each, after the others committed
            # them (throttling it would slow that client down), and an honest client retries
            # seconds apart; a flood of replays repeats itself at once, or reaches back.
            repeats, now = session.repeats, time.monotonic()
            clients = self.core.clients
            free_from = (self.store.height if self.store is not None else 0) - FREE_ANSWER_BLOCKS
            for request in admitted:
                if clients.is_new(request.client, request.seq):
                    continue
                place = clients.status(request.client, request.seq)[1]
                self.stats["client_txs_settled_again"] += 1
                seen = repeats.pop(request.id, None)
                if place is not None and place[0] <= free_from:
                    self.stats["client_txs_settled_long_ago"] += 1
                    wasted += 1
                elif seen is not None and now - seen < REPEAT_WINDOW_S:
                    wasted += 1
                repeats[request.id] = now
            while len(repeats) > SESSION_REPEATS:
                repeats.popitem(last=False)
        if wasted:
            pause = session.refusals.take(wasted, time.monotonic())
            if pause > 0:
                # Reading nothing more from this connection for a while slows its sender over
                # TCP; honest clients, whose requests are rarely refused, keep their share.
                self.stats["client_throttled"] += 1
                log.warning(
                    "replica %d: client connection %d exceeds %g refused transactions/s; "
                    "not reading from it for %.2f s",
                    self.replica, session.number, session.refusals.rate, pause,
                    extra=log_event("rejected"),
                )  # fmt: skip
                await trio.sleep(pause)
        if not admitted:
            return
        routes = self._routes
        route = ((session.number,), time.monotonic(), message.alone)
        for request in admitted:
            rid = request.id
            earlier = routes.get(rid)
            if earlier is None:
                routes[rid] = route  # a new key is at the end already
            else:
                routes[rid] = merge_routes(earlier, route)
                routes.move_to_end(rid)
        # Oldest first (a request admitted again moves to the end): what was never answered (it
        # was refused, settled already, or its block went to another replica's clients) goes.
        while routes and (
            len(routes) > MAX_ROUTES or route[1] - next(iter(routes.values()))[1] > ROUTE_TTL_S
        ):
            routes.popitem(last=False)
        self.core.verified.add(txid_of(r.raw) for r in admitted if r.signed)
        await self._inbox.send(("propose", admitted, message.alone))

    def _reply(self, ready: Ready) -> None:
        """One ``Committed`` (or ``Refused``) frame per client session per block."""
        if not self._routes:
            return  # nobody to answer here (a PBFT backup: clients send to the primary)
        by_height: dict[int, Block] = {b.height: b for b in ready.committed}
        grouped: dict[tuple[int, int], list[Reply]] = defaultdict(list)
        # Where some blocks are left to other replicas to answer: the groups that hold a request
        # sent to a few replicas, this one among them (answered here whoever proposed it).
        answering = self._answering()
        targeted: set[tuple[int, int]] = set()
        refusals: dict[int, list[Refusal]] = defaultdict(list)
        latency = self.metrics.commit_latency if self.metrics is not None else None
        now = time.monotonic()
        for reply in ready.replies:
            # Answered once, whichever way: the route goes (also when its session has closed).
            route = self._routes.pop((reply.client, reply.seq), None)
            if route is None:
                continue
            numbers, admitted_at, alone = route
            if latency is not None:
                latency.observe(now - admitted_at)
            if (numbers[0], reply.height) not in grouped:
                self._recent_latency.append((now, now - admitted_at))
            for number in numbers:
                if number not in self.sessions:
                    continue
                if reply.error:
                    refusals[number].append(
                        Refusal(client=reply.client, seq=reply.seq, reason=reply.error[:500])
                    )
                else:
                    grouped[(number, reply.height)].append(reply)
                    if alone and answering is not None:
                        targeted.add((number, reply.height))
        for number, items in refusals.items():
            self.sessions[number].send(Refused(items=tuple(items)))
        trees: dict[int, MerkleTree] = {}
        leaders = self.core.next_leaders(leader_count(self.committee))
        for (number, height), replies in grouped.items():
            block = by_height.get(height)
            if (
                answering is not None
                and block is not None
                and not answering(block.header.proposer)
                and (number, height) not in targeted
            ):
                self.stats["answers_left_to_others"] += len(replies)
                continue
            if block is None:
                # Settled long ago (a retry, or a replay): the block is read from the ledger by
                # another task, so the driver never waits for the disk on a client's behalf.
                try:
                    self._settled_answers.send_nowait((number, height, replies))
                except trio.WouldBlock:
                    self.stats["settled_answers_dropped"] += len(replies)
                continue
            self._answer(number, block, replies, trees, leaders)

    def _answering(self) -> Callable[[int], bool] | None:
        """Whether this replica answers the clients of a block just committed, by its proposer
        (``None``: it answers every block, as in PBFT and Raft).

        In HotStuff a client sends a request to every replica until it knows the leaders of
        the next views, and each would answer it: n Committed frames per block and client where
        one that verifies settles it. The block's proposer and the f replicas after it answer
        (f+1 of them, so at least one honest); the others leave it to them, sparing their CPU
        and the client's (at n = 4, half the frames; at n = 10, six in ten). A request the
        client sent to f+1 replicas only (``Submit.alone``: the leaders of the next views) is
        answered by those that received it, whoever proposed it. A request answered from the
        ledger (a retry of one settled earlier) is answered by every replica that has it: a
        client that heard from none of the f+1 (the ones it reaches are faulty) has its answer
        when it re-sends the request after ``retry_after``. Measured (4 pairs, window 1,000,
        every request to every replica): n = 4 13,450 -> 13,969 tx/s, load process 31 -> 29.5
        us per transaction; n = 10 within noise, load process 52 -> 46 us."""
        core = self.core
        if core.protocol != "hotstuff":
            return None
        n, f, me = self.committee.n, self.committee.f, self.replica
        return lambda proposer: (me - proposer) % n <= f

    def _answer(
        self,
        number: int,
        block: Block,
        replies: Sequence[Reply],
        trees: dict[int, MerkleTree],
        leaders: tuple[int, ...] = (),
    ) -> None:
        """Send client session ``number`` one ``Committed`` frame for ``replies`` in ``block``
        (with ``leaders``, where the client should send its next requests)."""
        session = self.sessions.get(number)
        if session is None:
            return
        tree = trees.get(block.height)
        if tree is None:
            tree = trees[block.height] = MerkleTree(block.txs)
        # The smaller evidence: every leaf hash of the block, or one path per item.
        depth = len(tree.levels) - 1
        if block.header.tx_count <= len(replies) * depth:
            leaves, paths = b"".join(tree.levels[0]), ()
        else:
            leaves, paths = b"", tuple(b"".join(tree.proof(r.position)) for r in replies)
        certificate = block.certificate
        if self.byzantine == "bad-replies":
            certificate = _spoil_certificate(certificate)
        session.send(
            Committed(
                header=block.header,
                certificate=certificate,
                clients=tuple(r.client for r in replies),
                seqs=tuple(r.seq for r in replies),
                indexes=tuple(r.position for r in replies),
                paths=paths,
                leaves=leaves,
                leaders=leaders,
            )
        )

    async def _answer_settled(self) -> None:
        """Answers for transactions settled in blocks no longer at hand, read from the ledger."""
        async for number, height, replies in self._settled_answers_out:
            store = self.store
            if store is None or height > store.height or number not in self.sessions:
                continue
            block = await self._disk_run(store.get, height)
            self._answer(
                number, block, replies, {}, self.core.next_leaders(leader_count(self.committee))
            )

    def _feed_subscribers(self, blocks: Sequence[Block]) -> None:
        for session in self.sessions.values():
            start = session.subscribed_from
            if start is None or session.backfilling:
                continue  # a catch-up under way reads these from the ledger, in order
            live = [b for b in blocks if b.height >= start]
            if live:
                for i in range(0, len(live), 64):
                    session.send(Blocks(blocks=tuple(live[i : i + 64])))
                session.subscribed_from = live[-1].height + 1

    async def _backfill(self, session: ClientSession) -> None:
        """Send a subscriber the blocks it asked for that are already in the ledger, as fast as
        it reads them."""
        try:
            while not session.closed:
                store = self.store
                nxt = session.subscribed_from
                if store is None or nxt is None or nxt > store.height:
                    return
                if session.outbox.queued_bytes > BACKFILL_AHEAD_BYTES:
                    await trio.sleep(0.05)
                    continue
                blocks = await self._disk_run(_read_some_blocks, store, nxt)
                if session.subscribed_from != nxt:
                    continue  # resubscribed meanwhile: from where it asked now
                session.send(Blocks(blocks=tuple(blocks)))
                session.subscribed_from = blocks[-1].height + 1
                await trio.sleep(0)
        finally:
            session.backfilling = False

    # ------------------------------------------------------------------------- control and status

    def _control(self, session: ClientSession, message: Control) -> ControlReply:
        key = session.identity.public_key
        if key is None or key not in self.config.admin_keys:
            self.stats["control_refused"] += 1
            return ControlReply(ok=False, detail="not an admin client")
        try:
            args = json.loads(message.args or "{}")
            if not isinstance(args, dict):
                raise ValueError("arguments must be a JSON object")
            command = message.command
            peers = list(range(self.committee.n))
            if command == "heal":
                self.faults.heal()
            elif command == "partition":
                self.faults.partition(self.replica, args["groups"], peers)
            elif command == "drop":
                for peer in args.get("peers", peers):
                    self.faults.drop(int(peer), float(args["probability"]))
            elif command == "delay":
                for peer in args.get("peers", peers):
                    self.faults.delay(int(peer), float(args["seconds"]))
            elif command == "cut":
                for peer in args.get("peers", peers):
                    self.faults.cut(
                        int(peer),
                        outbound=args.get("outbound", True),
                        inbound=args.get("inbound", False),
                    )
            elif command == "transfer":
                target = int(args["to"])
                if not hasattr(self.core, "transfer_leadership"):
                    raise ValueError(f"{self.config.protocol} has no leadership transfer")
                if not 0 <= target < self.committee.n:
                    raise ValueError(f"no replica {target} in a committee of {self.committee.n}")
                leader = self.core.status().leader
                if leader != self.replica:
                    raise ValueError(f"replica {self.replica} does not lead (leader: {leader})")
                try:
                    self._inbox.send_nowait(("transfer", target))
                except trio.WouldBlock:
                    raise ValueError("the replica is overloaded; try again") from None
            elif command == "byzantine":
                mode = args.get("mode", "")
                if mode not in ("", *BYZANTINE_MODES):
                    raise ValueError(f"unknown byzantine mode {mode!r}")
                self.byzantine = mode
            else:
                raise ValueError(f"unknown command {command!r}")
        except (ValueError, KeyError, TypeError) as exc:
            return ControlReply(ok=False, detail=f"bad control command: {exc}")
        log.warning(
            "replica %d: control %s %s",
            self.replica, message.command, message.args, extra=log_event("control"),
        )  # fmt: skip
        return ControlReply(
            ok=True,
            detail=json.dumps({"faults": self.faults.describe(), "byzantine": self.byzantine}),
        )

    async def _trim_memory(self) -> None:
        """Every ``trim_every_s``: hand the free pages of C malloc's arenas back to the kernel.

        Freed buffers (frames, blocks, index batches) leave free chunks in glibc's heaps, which
        it keeps for reuse rather than return; in the soaks that free memory, not live objects,
        was what grew (``malloc_free`` in verbose status). ``malloc_trim`` releases the whole
        free pages among them. It runs on a worker thread: it locks one arena at a time, so a
        thread allocating from that arena waits for a moment and the event loop does not.
        """
        every = self.config.trim_every_s
        if every <= 0 or not self.malloc.can_trim:
            return
        while True:
            await trio.sleep(every)
            began = time.monotonic()
            await trio.to_thread.run_sync(self.malloc.trim)
            took = time.monotonic() - began
            self.stats["memory_trims"] += 1
            self.stats["memory_trim_max_us"] = max(
                self.stats["memory_trim_max_us"], round(took * 1e6)
            )

    async def _collect_garbage(self) -> None:
        """A full collection of cyclic garbage every :data:`FULL_COLLECTION_EVERY_S` (the
        thresholds of :func:`tune_gc` alone could leave some for long)."""
        while True:
            await trio.sleep(FULL_COLLECTION_EVERY_S)
            gc.collect()

    async def _meter(self) -> None:
        while True:
            self._rate.append((time.monotonic(), self.stats["txs_committed"]))
            await trio.sleep(0.5)

    async def _observe(self) -> None:
        """Ten times a second: log view and leader changes and peers coming and going, and save
        new evidence. (The log's view and height come from here, so they cost nothing per
        line.)"""
        while True:
            await trio.sleep(0.1)
            core = self.core
            if core is None:
                continue
            status = core.status()
            if status.view != self.view:
                log.warning(
                    "replica %d: %s %d -> %d, leader %s",
                    self.replica, "term" if self.config.protocol == "raft" else "view",
                    self.view, status.view, status.leader, extra=log_event("view"),
                )  # fmt: skip
            elif status.leader != self.leader and status.leader is not None:
                log.warning(
                    "replica %d: leader is now %s", self.replica, status.leader,
                    extra=log_event("leader"),
                )  # fmt: skip
            self.view, self.leader = status.view, status.leader
            if self.links is not None:
                up = {p for p, link in self.links.links.items() if link.connected}
                for peer in sorted(up - self._peers_up):
                    log.info(
                        "replica %d: peer %d up", self.replica, peer, extra=log_event("peer-up")
                    )
                for peer in sorted(self._peers_up - up):
                    log.warning(
                        "replica %d: peer %d down", self.replica, peer, extra=log_event("peer-down")
                    )
                self._peers_up = up
            self._log_rejections(core)
            total = int(getattr(core, "evidence_total", 0))
            if total > self._evidence_seen:
                pairs = list(getattr(core, "evidence", ()))
                fresh = pairs[max(0, len(pairs) - (total - self._evidence_seen)) :]
                self._evidence_seen = total
                for first, second in fresh:
                    await self._save_evidence(first, second)

    def _log_rejections(self, core: Any) -> None:
        """Log what the core refused since last time, with the reason (each reason has its own
        rate limit: see bft.node.logs)."""
        rejections = core.rejections
        total = rejections.total
        if total <= self._rejections_seen:
            return
        recent = rejections.recent
        fresh = recent[len(recent) - min(len(recent), total - self._rejections_seen) :]
        self._rejections_seen = total
        for item in fresh:
            log.warning(
                "replica %d refused a %s from replica %s: " + item.reason.replace("%", "%%"),
                self.replica, item.kind, item.sender, extra=log_event("rejected"),
            )  # fmt: skip

    async def _save_evidence(self, first: Record, second: Record) -> None:
        check = self.spec.evidence
        store = self.evidence_store
        if check is None or store is None:
            return
        if len(store) >= store.max_kept:
            store.dropped += 1  # full: the earliest proofs are kept; spend no CPU on more
            return
        found = find_signer(first, second, self.committee, check)
        if found is None:
            log.error(
                "replica %d: the core reported a pair of %s that is not evidence (not saved)",
                self.replica, type(first).__name__,
            )  # fmt: skip
            return
        signer, text = found
        evidence = Evidence(
            protocol=self.config.protocol,
            chain_id=self.chain_id,
            signer=signer,
            observer=self.replica,
            first=first.encode(),
            second=second.encode(),
        )
        try:
            path = await self._disk_run(store.save, evidence)
        except (OSError, EvidenceError) as exc:
            log.error("replica %d: cannot save evidence: %s", self.replica, exc)
            return
        self.stats["evidence"] += 1
        log.warning(
            "replica %d: EVIDENCE %s%s",
            self.replica, text, f" (saved as {path})" if path else " (already kept, or store full)",
            extra=log_event("evidence"),
        )  # fmt: skip

    def queue_depths(self) -> dict[str, int]:
        return {
            "inbox": self._inbox.statistics().current_buffer_used if hasattr(self, "_inbox") else 0,
            "mempool": self.core.status().pending if self.core is not None else 0,
            "client_out": sum(len(s.outbox) for s in self.sessions.values()),
            "peer_out": sum(len(link.queue) for link in self.links.links.values())
            if self.links is not None
            else 0,
            "index_lag": self.store.index_lag if self.store is not None else 0,
            "routes": len(self._routes),
            "settled_answers": self._settled_answers.statistics().current_buffer_used
            if hasattr(self, "_settled_answers")
            else 0,
        }

    def rejection_counts(self) -> Counter[str]:
        """Refused remote input by reason: the core's, and what the runtime refused itself."""
        counts: Counter[str] = Counter()
        if self.core is not None:
            counts.update(self.core.rejections.by_reason)
        for key in ("bad_peer_frames", "bad_client_frames", "control_refused"):
            if self.stats[key]:
                counts[key.replace("_", " ")] += self.stats[key]
        for acceptor in (
            getattr(self, "peer_acceptor", None),
            getattr(self, "client_acceptor", None),
        ):
            if acceptor is None:
                continue
            for key in (
                "rejected_handshake",
                "rejected_timeout",
                "closed_bad_input",
                "refused_full",
            ):
                if acceptor.stats[key]:
                    counts[f"{acceptor.kind} {key.replace('_', ' ')}"] += acceptor.stats[key]
        return counts

    def log_lines_suppressed(self) -> int:
        return self.log_limiter.dropped_total if self.log_limiter is not None else 0

    def recent_latency_ms(self) -> float | None:
        """Median commit latency (admission here to reply) over the last 5 s, if any."""
        since = time.monotonic() - 5.0
        samples = sorted(s for t, s in self._recent_latency if t >= since)
        return round(samples[len(samples) // 2] * 1000, 1) if samples else None

    def tx_rate(self) -> float:
        if len(self._rate) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self._rate[max(0, len(self._rate) - 5)], self._rate[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def status(self, verbose: bool = False) -> dict[str, Any]:
        core = self.core.status() if self.core is not None else None
        store = self.store
        doc: dict[str, Any] = {
            "replica": self.replica,
            "chain_id": self.chain_id,
            "protocol": self.config.protocol,
            "role": core.role if core else "starting",
            "view": core.view if core else 0,
            "leader": core.leader if core else None,
            "height": store.height if store else 0,
            "tx_per_s": round(self.tx_rate(), 1),
            "commit_ms_p50": self.recent_latency_ms(),
            "mempool": core.pending if core else 0,
            "inbox": self._inbox.statistics().current_buffer_used if hasattr(self, "_inbox") else 0,
            "peers_connected": sum(1 for link in self.links.links.values() if link.connected)
            if self.links
            else 0,
            "clients": len(self.sessions),
            "uptime_s": round(time.monotonic() - self.started, 1),
            "rss_mb": round((resident_bytes() or 0) / (1 << 20), 1),
            "byzantine": self.byzantine,
            "faults": self.faults.describe() if self.faults.active else {},
        }
        if verbose:
            doc["core"] = {k: v for k, v in (core.extra.items() if core else ()) if _jsonable(v)}
            doc["stats"] = dict(self.stats) | dict(self.signatures.stats)
            doc["links"] = (
                {str(k): dict(v) for k, v in self.links.statistics().items()} if self.links else {}
            )
            doc["rejected"] = dict(self.core.rejections.by_reason) if self.core is not None else {}
            doc["client_bytes"] = self.client_bytes()
            doc["gc"] = self.gc.status()
            doc["memory"] = snapshot(self.malloc)
            doc["disk"] = self.disk.status()
            doc["verify_on_thread"] = self.signatures.on_thread
            if self.core is not None and self.client_file is not None:
                table = self.core.clients
                doc["client_table"] = {
                    "clients": len(table),
                    "places": table.entries,
                    "max_clients": table.max_clients,
                    "max_places": table.max_entries,
                    "forgotten": table.evicted,
                    "snapshot_height": self.client_file.height,
                }
        return doc

    def client_bytes(self) -> dict[str, int]:
        """Bytes read from and written to client connections, closed and open ones."""
        live = [s.framed for s in self.sessions.values()]
        return {
            "in": self.stats["client_bytes_in"] + sum(f.bytes_received for f in live),
            "out": self.stats["client_bytes_out"] + sum(f.bytes_sent for f in live),
        }


def _only_exception(group: BaseException) -> BaseException | None:
    """The single exception inside (possibly nested) one-member groups, else ``None``."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        if len(exc.exceptions) != 1:
            return None
        exc = exc.exceptions[0]
    return exc


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return not (isinstance(value, float) and not math.isfinite(value))


def _spoil_signature(message: Record) -> Record:
    """A copy of ``message`` with its signature corrupted (Byzantine testbed mode)."""
    signature = getattr(message, "signature", None)
    if not isinstance(signature, bytes) or len(signature) != 64:
        return message
    bad = bytes([signature[0] ^ 0x01]) + signature[1:]
    return dataclasses.replace(message, signature=bad)  # type: ignore[type-var]


def merge_routes(earlier: Route, new: Route) -> Route:
    """Where a request's reply goes once it is admitted again from ``new``'s connection: the
    connections it came from (the first kept, the newest added, ``ROUTE_FANOUT`` at most), the
    newest admission time, and whether any client sent it to a few replicas only."""
    (number,), at, alone = new
    numbers = earlier[0]
    if number not in numbers:
        numbers = numbers[: ROUTE_FANOUT - 1] + (number,)
    return numbers, at, alone or earlier[2]


def _read_some_blocks(store: LedgerStore, start: int) -> list[Block]:
    """Blocks from ``start`` for one catch-up frame: up to 32, and up to ~1 MiB of transactions
    (at least one block)."""
    out: list[Block] = []
    size = 0
    for block in store.blocks(start, min(store.height, start + 31)):
        out.append(block)
        size += sum(map(len, block.txs))
        if size >= BACKFILL_FRAME_BYTES:
            break
    return out


def _spoil_certificate(certificate: Any) -> Any:
    """A copy of a block's certificate for another statement (Byzantine testbed mode): it
    decodes, and does not verify for the block."""
    statement = certificate.statement
    return dataclasses.replace(certificate, statement=bytes([statement[0] ^ 0x01]) + statement[1:])


def _index_pause() -> None:
    time.sleep(INDEX_PAUSE_S)


async def serve(config: ReplicaConfig) -> None:
    """Run a replica until SIGTERM or SIGINT, then shut down cleanly. Logs go to stderr in the
    configured format (:mod:`bft.node.logs`)."""
    replica = Replica(config)
    tune_gc()

    def probe() -> tuple[int, int]:
        store = replica.store
        return replica.view, store.height if store is not None else 0

    handler = configure_logging(
        config.replica,
        fmt=config.log_format,
        level=config.log_level,
        burst=config.log_burst,
        window=config.log_window_s,
        probe=probe,
    )
    replica.log_limiter = next(f for f in handler.filters if isinstance(f, RateLimit))
    try:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(replica.run)

                async def stop_on_signal() -> None:
                    async for signum in signals:
                        log.warning(
                            "replica %d: %s, shutting down",
                            config.replica,
                            signal.Signals(signum).name,
                            extra=log_event("shutdown"),
                        )
                        nursery.cancel_scope.cancel()
                        return

                nursery.start_soon(stop_on_signal)
    except BaseExceptionGroup as group:
        # A start-up failure (a busy port, say) reaches the caller as itself: one line.
        error = _only_exception(group)
        if isinstance(error, ReplicaError | ConfigError):
            raise error from None
        raise
