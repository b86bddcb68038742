"""Authenticated connections between replicas, and from clients, over TCP with mutual TLS.

Theory of operation
-------------------
Every connection starts the same way, under ``handshake_timeout``: the TLS handshake (unless the
deployment runs in plaintext, which exists only to measure what TLS costs), then one
:class:`Hello` frame from the side that dialled, naming what it is (a replica and its id, or a
client) and the chain. A replica that says it is replica ``i`` must present a certificate whose
key is the committee's key for ``i``; the dialler checks the same of the replica it meant to
reach. Then frames flow: each one an encoded record, or an empty keep-alive frame.

Replicas talk over two one-way connections per pair: a replica *dials* every peer to send to it,
and *accepts* connections from every peer to receive. Sending goes through a :class:`PeerLink`
per peer: a bounded queue and one writer task that joins whatever is queued into a single
``send_all``, reconnecting with exponential backoff and jitter when the connection breaks (and
at once when the peer connects to us: it is back, see :meth:`PeerLink.peer_is_up`). While the
writer is idle and the queue empty, a frame goes onto the socket from the sending task itself
when the socket takes it (:meth:`network.direct.DirectStream.send_nowait`); what it does not take
is finished by the writer, ahead of anything queued later. A slow or dead peer never blocks the
others:

**Queue-full policy**: when a peer's queue holds ``queue_size`` frames or ``queue_bytes`` bytes,
the *oldest* queued frames are dropped to make room (and counted). A peer that does not drain
its queue is behind already, a newer message is usually worth more than an older one, and the
protocols re-send what still matters. Frames lost with a broken connection are counted the same way.

Receiving: each accepted connection has its own task that reads frames (the length is checked
before the body is read), drops a connection that stays silent past ``idle_timeout``, and hands
each frame to the handler. A handler that raises :class:`ProtocolViolation` (for a frame that does
not decode, say) gets the connection closed; the replica goes on.
"""

from __future__ import annotations

import logging
import random
import ssl
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from crypto import Committee
from crypto.codec import CodecError, Record, Text, UInt, record, wire

from .direct import DirectStream
from .faults import LinkFaults
from .framing import DEFAULT_MAX_FRAME, FramedStream, FrameError
from .tls import peer_public_key

log = logging.getLogger(__name__)

KEEPALIVE = b""


@record(tag=0x90)
class Hello(Record):
    kind: str = wire(Text(choices=("replica", "client")))
    id: int = wire(UInt(1023))
    chain_id: str = wire(Text(64, min_len=1))
    protocol: str = wire(Text(choices=("pbft", "hotstuff", "raft")))


class ProtocolViolation(Exception):
    """The peer sent something unacceptable; its connection is closed."""


class HandshakeError(Exception):
    """A connection could not be established as the party it claims to be."""


@dataclass(frozen=True)
class NetworkConfig:
    max_frame: int = DEFAULT_MAX_FRAME
    handshake_timeout: float = 5.0
    idle_timeout: float = 30.0
    keepalive_interval: float = 5.0
    send_timeout: float = 10.0
    queue_size: int = 4096
    queue_bytes: int = 64 << 20
    """Bytes queued for one peer at most: 4,096 large proposals or block answers would be GBs."""
    batch_bytes: int = 4 << 20
    max_handshakes: int = 128
    """Accepted connections still in their handshake at most, per listening port; beyond it a
    new connection is closed at once. Anyone who can reach the port can open them, so without
    a bound they are memory anyone can take (each lasts ``handshake_timeout`` at most)."""
    reconnect_min: float = 0.05
    reconnect_max: float = 2.0


@dataclass(frozen=True)
class Identity:
    """Who is on the other side of an accepted connection."""

    kind: str
    replica: int | None
    public_key: bytes | None

    def describe(self) -> str:
        if self.kind == "replica":
            return f"replica {self.replica}"
        return f"client {self.public_key.hex()[:12] if self.public_key else 'unauthenticated'}"


@dataclass
class Endpoint:
    """What a replica or client needs to make and check connections."""

    committee: Committee
    protocol: str
    server_tls: ssl.SSLContext | None
    client_tls: ssl.SSLContext | None
    config: NetworkConfig = field(default_factory=NetworkConfig)

    @property
    def plaintext(self) -> bool:
        return self.server_tls is None


# ------------------------------------------------------------------------------------ dialling


async def dial(
    endpoint: Endpoint, host: str, port: int, hello: Hello, *, expect_replica: int | None = None
) -> FramedStream:
    """Connect, shake hands, send ``hello``; check the replica we reached is ``expect_replica``."""
    config = endpoint.config
    with trio.fail_after(config.handshake_timeout):
        tcp = await trio.open_tcp_stream(host, port)
        # The direct stream owns the socket from here on: it is the one to close.
        if endpoint.client_tls is None:
            stream = DirectStream.plain(tcp)
        else:
            stream = DirectStream.tls(
                tcp,
                endpoint.client_tls,
                server_side=False,
                server_hostname=f"replica-{expect_replica}",
            )
        try:
            if endpoint.client_tls is not None:
                await stream.do_handshake()
                if expect_replica is not None:
                    key = peer_public_key(stream)
                    if key != endpoint.committee.members[expect_replica].raw:
                        raise HandshakeError(
                            f"{host}:{port} presented a certificate that is not "
                            f"replica {expect_replica}'s key"
                        )
            framed = FramedStream(stream, config.max_frame)
            await framed.send([hello.encode()])
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
    return framed


class PeerLink:
    """The sending side towards one peer: a bounded queue and one writer task."""

    def __init__(
        self,
        endpoint: Endpoint,
        me: int,
        peer: int,
        address: tuple[str, int],
        faults: LinkFaults,
        rng: random.Random,
    ) -> None:
        self.endpoint = endpoint
        self.me = me
        self.peer = peer
        self.address = address
        self.faults = faults
        self.rng = rng
        self.queue: deque[bytes] = deque()
        self.queued_bytes = 0
        self._wakeup = trio.Event()
        self._retry_now = trio.Event()
        # The connection, while the writer task waits for work: send() may use it directly.
        self._direct: FramedStream | None = None
        self.connected = False
        self.stats: Counter[str] = Counter()

    def peer_is_up(self) -> None:
        """The peer has just connected to us, so it is back: if this link is waiting out a
        reconnect backoff, dial now (a restarted replica then hears from us at once, not after
        up to ``reconnect_max``, which can outlast its protocol's timeouts)."""
        if not self.connected:
            self._retry_now.set()

    def send(self, frame: bytes) -> None:
        """Send ``frame`` without waiting: straight onto the connection if the writer task
        is idle and the socket takes it (no task switch); otherwise queue it for the writer,
        dropping the oldest queued frame when the queue is full."""
        self.send_many((frame,))

    def send_many(self, frames: Sequence[bytes]) -> None:
        """Send ``frames``, in order, as :meth:`send` does; straight onto the connection they
        go in one write (one system call, and the peer wakes once for all of them)."""
        direct = self._direct
        if direct is not None and not self.queue and not self.faults.active:
            try:
                done = direct.send_nowait(frames)
            except trio.WouldBlock:
                pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                # The writer finds the connection broken on its next send and reconnects;
                # this frame is lost with the connection, as a queued one would be.
                self._direct = None
                self.stats["dropped_broken_link"] += 1
                self._wakeup.set()
                return
            else:
                self.stats["frames_sent"] += len(frames)
                self.stats["bytes_sent"] += sum(map(len, frames))
                if not done:
                    self._wakeup.set()  # the writer finishes what the socket did not take
                return
        config = self.endpoint.config
        queue = self.queue
        for frame in frames:
            queue.append(frame)
            self.queued_bytes += len(frame)
        while len(queue) > 1 and (
            len(queue) > config.queue_size or self.queued_bytes > config.queue_bytes
        ):
            self.queued_bytes -= len(queue.popleft())
            self.stats["dropped_queue_full"] += 1
        self._wakeup.set()

    async def run(self) -> None:
        """Keep a connection to the peer and send whatever is queued (until cancelled)."""
        config = self.endpoint.config
        hello = Hello(
            kind="replica",
            id=self.me,
            chain_id=self.endpoint.committee.chain_id,
            protocol=self.endpoint.protocol,
        )
        backoff = config.reconnect_min
        while True:
            try:
                framed = await dial(self.endpoint, *self.address, hello, expect_replica=self.peer)
            except (
                OSError,
                trio.TooSlowError,
                ssl.SSLError,
                HandshakeError,
                trio.BrokenResourceError,
            ) as exc:
                self.connected = False
                self.stats["connect_failures"] += 1
                if (
                    self.stats["connect_failures"] in (1, 10, 100)
                    or self.stats["connect_failures"] % 1000 == 0
                ):
                    log.info(
                        "replica %d: cannot reach replica %d at %s:%d: %s",
                        self.me,
                        self.peer,
                        *self.address,
                        exc,
                    )
                with trio.move_on_after(backoff * (0.5 + self.rng.random())):
                    await self._retry_now.wait()
                if self._retry_now.is_set():
                    self._retry_now = trio.Event()
                    backoff = config.reconnect_min
                else:
                    backoff = min(backoff * 2, config.reconnect_max)
                continue
            backoff = config.reconnect_min
            self.connected = True
            self.stats["connects"] += 1
            try:
                await self._pump(framed)
            except (
                OSError,
                trio.BrokenResourceError,
                trio.ClosedResourceError,
                trio.TooSlowError,
                ssl.SSLError,
            ) as exc:
                log.info("replica %d: link to replica %d broke: %s", self.me, self.peer, exc)
            finally:
                self.connected = False
                await trio.aclose_forcefully(framed.stream)

    async def _pump(self, framed: FramedStream) -> None:
        config = self.endpoint.config
        while True:
            if not self.queue:
                self._wakeup = trio.Event()
                self._direct = framed
                try:
                    with trio.move_on_after(config.keepalive_interval) as idle:
                        await self._wakeup.wait()
                finally:
                    self._direct = None
                if not self.queue:
                    with trio.fail_after(config.send_timeout):
                        # Finishes a direct send the socket took only part of; a keepalive
                        # if the link was idle (frames sent directly do not count: cheap).
                        await framed.send([KEEPALIVE] if idle.cancelled_caught else [])
                    continue
            batch: list[bytes] = []
            size = 0
            hold = 0.0
            while self.queue and size < config.batch_bytes:
                frame = self.queue.popleft()
                self.queued_bytes -= len(frame)
                if self.faults.active:
                    dropped, delay = self.faults.outbound(self.peer)
                    if dropped:
                        self.stats["dropped_by_fault"] += 1
                        continue
                    hold = max(hold, delay)
                batch.append(frame)
                size += len(frame)
            if not batch:
                continue
            if hold:
                # An injected delay holds the batch once (latency), not every frame in turn,
                # which would cap the link at one frame per delay.
                await trio.sleep(hold)
            try:
                with trio.fail_after(config.send_timeout):
                    await framed.send(batch)
            except BaseException:
                self.stats["dropped_broken_link"] += len(batch)
                raise
            self.stats["frames_sent"] += len(batch)
            self.stats["bytes_sent"] += size


class PeerLinks:
    """One :class:`PeerLink` per peer."""

    def __init__(
        self,
        endpoint: Endpoint,
        me: int,
        addresses: dict[int, tuple[str, int]],
        faults: LinkFaults,
        seed: int = 0,
    ) -> None:
        rng = random.Random(seed * 1_000_003 + me)
        self.links = {
            peer: PeerLink(endpoint, me, peer, address, faults, rng)
            for peer, address in addresses.items()
            if peer != me
        }

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for link in self.links.values():
                nursery.start_soon(link.run)
            task_status.started()

    def send(self, peer: int, frame: bytes) -> None:
        link = self.links.get(peer)
        if link is not None:
            link.send(frame)

    def send_many(self, peer: int, frames: Sequence[bytes]) -> None:
        link = self.links.get(peer)
        if link is not None:
            link.send_many(frames)

    def broadcast(self, frame: bytes) -> None:
        for link in self.links.values():
            link.send(frame)

    def peer_is_up(self, peer: int) -> None:
        """``peer`` connected to us: see :meth:`PeerLink.peer_is_up`."""
        link = self.links.get(peer)
        if link is not None:
            link.peer_is_up()

    def statistics(self) -> dict[int, dict[str, Any]]:
        return {
            peer: {"connected": link.connected, "queued": len(link.queue), **link.stats}
            for peer, link in self.links.items()
        }


# ------------------------------------------------------------------------------------ accepting


FrameHandler = Callable[[Identity, bytes], Awaitable[None]]
ConnectionHandler = Callable[[Identity, FramedStream], Awaitable[None]]


class Acceptor:
    """Accepts connections, authenticates them, and runs a handler on each.

    At most ``max_open`` connections are open at once (0: no limit) and at most
    ``NetworkConfig.max_handshakes`` of them in their handshake; a connection beyond either is
    closed as soon as it is accepted, before any TLS work (``refused_full`` in ``stats``).
    """

    def __init__(
        self,
        endpoint: Endpoint,
        kind: str,
        on_connection: ConnectionHandler,
        *,
        max_open: int = 0,
        max_open_setting: str = "",
    ) -> None:
        self.endpoint = endpoint
        self.kind = kind
        self.on_connection = on_connection
        self.max_open = max_open
        self.max_open_setting = max_open_setting
        """Where an operator sets ``max_open``, named in the refusal's log line."""
        self.stats: Counter[str] = Counter()
        self.open = 0
        self.handshaking = 0

    async def serve(
        self, host: str, port: int, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        await trio.serve_tcp(self._handle, port, host=host, task_status=task_status)

    async def _handle(self, tcp: trio.SocketStream) -> None:
        full = self._full()
        if full:
            self.stats["refused_full"] += 1
            log.warning("%s connection refused: %s", self.kind, full)
            await trio.aclose_forcefully(tcp)
            return
        self.open += 1
        self.handshaking += 1
        stream: trio.abc.Stream = tcp
        try:
            try:
                # The direct stream owns the socket from here on: it is the one to close.
                tls = self.endpoint.server_tls
                direct = (
                    DirectStream.plain(tcp)
                    if tls is None
                    else DirectStream.tls(tcp, tls, server_side=True)
                )
                stream = direct
                identity, framed = await self._handshake(direct)
            finally:
                self.handshaking -= 1
            self.stats["accepted"] += 1
            await self.on_connection(identity, framed)
        except HandshakeError as exc:
            self.stats["rejected_handshake"] += 1
            log.warning("%s connection refused: %s", self.kind, exc)
        except trio.TooSlowError:
            self.stats["rejected_timeout"] += 1
        except (FrameError, ProtocolViolation, CodecError) as exc:
            self.stats["closed_bad_input"] += 1
            log.info("%s connection closed: %s", self.kind, exc)
        except (OSError, ssl.SSLError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.stats["closed_broken"] += 1
            log.debug("%s connection broke: %s", self.kind, exc)
        finally:
            self.open -= 1
            await trio.aclose_forcefully(stream)

    def _full(self) -> str:
        """Why a new connection cannot be taken now ("" when it can)."""
        if self.max_open and self.open >= self.max_open:
            where = f" ({self.max_open_setting})" if self.max_open_setting else ""
            return f"{self.open} connections open, the limit{where}"
        limit = self.endpoint.config.max_handshakes
        if self.handshaking >= limit:
            return f"{self.handshaking} connections in their handshake, the limit"
        return ""

    async def _handshake(self, stream: DirectStream) -> tuple[Identity, FramedStream]:
        endpoint = self.endpoint
        config = endpoint.config
        with trio.fail_after(config.handshake_timeout):
            try:
                await stream.do_handshake()  # nothing to do in plaintext
            except trio.BrokenResourceError as exc:
                raise HandshakeError(f"TLS handshake failed: {exc}") from None
            key = peer_public_key(stream)  # None in plaintext
            framed = FramedStream(stream, config.max_frame)
            first = await framed.receive()
        if first is None:
            raise HandshakeError("closed before saying hello")
        try:
            hello = Hello.decode(first, max_size=1024)
        except CodecError as exc:
            raise HandshakeError(f"bad hello: {exc}") from None
        if hello.kind != self.kind:
            raise HandshakeError(f"a {hello.kind} connected to the {self.kind} port")
        committee = endpoint.committee
        if hello.chain_id != committee.chain_id or hello.protocol != endpoint.protocol:
            raise HandshakeError(f"hello for chain {hello.chain_id!r} ({hello.protocol}), not ours")
        if hello.kind == "replica":
            if not 0 <= hello.id < committee.n:
                raise HandshakeError(f"replica id {hello.id} is not in the committee")
            if not endpoint.plaintext and key != committee.members[hello.id].raw:
                raise HandshakeError(
                    f"certificate is not replica {hello.id}'s key (impersonation?)"
                )
            return Identity("replica", hello.id, key), framed
        return Identity("client", None, key), framed


class _Silence:
    """How long a connection's reader has been waiting for a frame (see :func:`read_frames`)."""

    __slots__ = ("deadline", "expired", "reading")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.reading = False
        self.expired = False


async def _watch_silence(silence: _Silence, idle: float, reader: trio.CancelScope) -> None:
    while True:
        await trio.sleep_until(silence.deadline)
        now = trio.current_time()
        if now < silence.deadline:
            continue  # frames came meanwhile
        if silence.reading:
            silence.expired = True
            reader.cancel()
            return
        silence.deadline = now + idle  # the handler holds the frame: not silence


async def read_frames(
    framed: FramedStream, identity: Identity, handler: FrameHandler, config: NetworkConfig
) -> None:
    """Hand every frame to ``handler`` until the peer closes or stays silent too long.

    Silence (``idle_timeout`` spent waiting for a frame; time in the handler does not count) is
    timed by a watchdog task that sleeps until the deadline the reader moves on each frame,
    rather than by a cancel scope around each read: entering and leaving a scope with a
    deadline costs ~17 us on a 2-core test machine, and a replica reads ~10 frames per block at
    light load.
    """
    idle = config.idle_timeout
    silence = _Silence(trio.current_time() + idle)
    failure: Exception | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_watch_silence, silence, idle, nursery.cancel_scope)
        try:
            while True:
                silence.deadline = trio.current_time() + idle
                silence.reading = True
                frame = await framed.receive()
                silence.reading = False
                if frame is None:
                    break
                if frame == KEEPALIVE:
                    continue
                await handler(identity, frame)
        except Exception as exc:  # raised after the watchdog is stopped, as itself
            failure = exc
        nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
    if silence.expired:
        raise trio.TooSlowError(f"{identity.describe()} silent for {idle} s")
