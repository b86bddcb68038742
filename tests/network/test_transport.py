"""The transport over real loopback sockets: frames, mutual TLS identities, limits, reconnects."""

from __future__ import annotations

import random
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from crypto import Committee, SigningKey
from network import (
    Acceptor,
    Endpoint,
    FrameDecoder,
    FrameError,
    HandshakeError,
    Hello,
    Identity,
    LinkFaults,
    NetworkConfig,
    PeerLink,
    dial,
    encode_frame,
    read_frames,
)
from network.framing import FramedStream
from network.tls import (
    client_context,
    client_files,
    issue_certificate,
    make_cluster_ca,
    replica_files,
    server_context,
)

KEYS = [SigningKey(bytes([i + 1]) * 32) for i in range(3)]
COMMITTEE = Committee("nettest", [k.public_key for k in KEYS])
FAST = NetworkConfig(
    handshake_timeout=1.0,
    idle_timeout=2.0,
    keepalive_interval=0.2,
    reconnect_min=0.01,
    reconnect_max=0.1,
)


# ------------------------------------------------------------------------------------ framing


def test_decoder_handles_split_and_joined_frames() -> None:
    data = encode_frame(b"alpha") + encode_frame(b"") + encode_frame(b"b" * 300)
    for cut in range(len(data)):
        decoder = FrameDecoder()
        frames = decoder.feed(data[:cut]) + decoder.feed(data[cut:])
        assert frames == [b"alpha", b"", b"b" * 300]


def test_oversized_frame_is_refused_before_its_body() -> None:
    decoder = FrameDecoder(max_frame=100)
    assert decoder.feed(encode_frame(b"x" * 100)) == [b"x" * 100]
    with pytest.raises(FrameError, match="exceeds the limit"):
        decoder.feed(b"\xff\xff\xff\xff")  # a 4 GiB announcement, no body needed


@given(st.lists(st.binary(max_size=200), max_size=20), st.integers(min_value=1, max_value=50))
def test_frames_round_trip_in_any_chunking(payloads: list[bytes], chunk: int) -> None:
    data = b"".join(encode_frame(p) for p in payloads)
    decoder = FrameDecoder()
    out: list[bytes] = []
    for i in range(0, len(data), chunk):
        out += decoder.feed(data[i : i + chunk])
    assert out == payloads and decoder.buffered == 0


# ------------------------------------------------------------------------------------ TLS


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tls")
    ca_cert, ca_key = make_cluster_ca(directory, "nettest")
    for i, key in enumerate(KEYS):
        files = replica_files(directory, i)
        issue_certificate(ca_cert, ca_key, key, f"replica-{i}", files.cert, files.key)
    files = client_files(directory, "ann")
    issue_certificate(
        ca_cert, ca_key, SigningKey(b"\x55" * 32), "client-ann", files.cert, files.key
    )
    # A rogue CA issuing "replica 1" for another key.
    rogue = directory / "rogue"
    r_cert, r_key = make_cluster_ca(rogue, "nettest")
    issue_certificate(
        r_cert, r_key, KEYS[1], "replica-1", rogue / "replica-1.crt", rogue / "replica-1.tls.key"
    )
    return directory


def endpoint(tls_dir: Path | None, replica: int, config: NetworkConfig = FAST) -> Endpoint:
    if tls_dir is None:
        return Endpoint(COMMITTEE, "pbft", None, None, config)
    files = replica_files(tls_dir, replica)
    return Endpoint(COMMITTEE, "pbft", server_context(files), client_context(files), config)


class Receiver:
    def __init__(self) -> None:
        self.frames: list[tuple[Identity, bytes]] = []
        self.arrived = trio.Event()

    async def on_connection(self, identity: Identity, framed) -> None:  # type: ignore[no-untyped-def]
        async def handler(who: Identity, frame: bytes) -> None:
            self.frames.append((who, frame))
            self.arrived.set()

        await read_frames(framed, identity, handler, FAST)


async def start_acceptor(
    nursery: trio.Nursery, ep: Endpoint, receiver: Receiver, kind: str = "replica"
) -> tuple[Acceptor, int]:
    acceptor = Acceptor(ep, kind, receiver.on_connection)
    listeners = await nursery.start(acceptor.serve, "127.0.0.1", 0)
    return acceptor, listeners[0].socket.getsockname()[1]


def hello(replica: int) -> Hello:
    return Hello(kind="replica", id=replica, chain_id="nettest", protocol="pbft")


async def test_replica_to_replica_over_mutual_tls(tls_dir: Path) -> None:
    receiver = Receiver()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            _, port = await start_acceptor(nursery, endpoint(tls_dir, 0), receiver)
            framed = await dial(endpoint(tls_dir, 1), "127.0.0.1", port, hello(1), expect_replica=0)
            await framed.send([b"one", b"two"])
            while len(receiver.frames) < 2:
                await trio.sleep(0.01)
            who, _ = receiver.frames[0]
            assert (
                who.kind == "replica"
                and who.replica == 1
                and who.public_key == KEYS[1].public_key.raw
            )
            assert [f for _, f in receiver.frames] == [b"one", b"two"]
            await framed.aclose()
            nursery.cancel_scope.cancel()


async def test_a_replica_claiming_another_id_is_refused(tls_dir: Path) -> None:
    receiver = Receiver()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            acceptor, port = await start_acceptor(nursery, endpoint(tls_dir, 0), receiver)
            framed = await dial(endpoint(tls_dir, 1), "127.0.0.1", port, hello(2), expect_replica=0)
            await framed.send([b"forged"])
            while acceptor.stats["rejected_handshake"] == 0:
                await trio.sleep(0.01)
            assert receiver.frames == []
            nursery.cancel_scope.cancel()


async def test_the_dialler_checks_it_reached_the_right_replica(tls_dir: Path) -> None:
    receiver = Receiver()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            _, port = await start_acceptor(nursery, endpoint(tls_dir, 0), receiver)
            with pytest.raises(HandshakeError, match="not replica 2's key"):
                await dial(endpoint(tls_dir, 1), "127.0.0.1", port, hello(1), expect_replica=2)
            nursery.cancel_scope.cancel()


async def test_a_certificate_from_another_ca_is_refused(tls_dir: Path) -> None:
    from network.tls import TlsFiles

    rogue = TlsFiles(
        tls_dir / "rogue" / "ca.crt",
        tls_dir / "rogue" / "replica-1.crt",
        tls_dir / "rogue" / "replica-1.tls.key",
    )
    rogue_endpoint = Endpoint(COMMITTEE, "pbft", server_context(rogue), client_context(rogue), FAST)
    receiver = Receiver()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            acceptor, port = await start_acceptor(nursery, endpoint(tls_dir, 0), receiver)
            with pytest.raises((ssl.SSLError, trio.BrokenResourceError, HandshakeError)):
                framed = await dial(rogue_endpoint, "127.0.0.1", port, hello(1), expect_replica=0)
                await framed.send([b"x"])
                await framed.receive()
            while acceptor.stats["rejected_handshake"] == 0:
                await trio.sleep(0.01)
            assert receiver.frames == []
            nursery.cancel_scope.cancel()


async def test_a_stalled_handshake_times_out(tls_dir: Path) -> None:
    receiver = Receiver()
    config = NetworkConfig(handshake_timeout=0.3)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            acceptor, port = await start_acceptor(nursery, endpoint(tls_dir, 0, config), receiver)
            stream = await trio.open_tcp_stream("127.0.0.1", port)  # connects, says nothing
            with trio.fail_after(3):
                assert await stream.receive_some(10) == b""  # the replica hung up
            assert acceptor.stats["rejected_timeout"] == 1
            nursery.cancel_scope.cancel()


async def test_connections_beyond_the_limits_are_closed_at_once(tls_dir: Path) -> None:
    """``max_open`` bounds the open connections, ``max_handshakes`` those still in their
    handshake (anyone can open those): one more is closed as soon as it is accepted, and a
    place freed is taken again."""
    receiver = Receiver()
    config = NetworkConfig(handshake_timeout=1.0, idle_timeout=30.0, max_handshakes=2)
    ep = endpoint(tls_dir, 0, config)

    async def refused(port: int) -> bool:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        with trio.move_on_after(0.5):
            return await stream.receive_some(10) == b""  # closed before a byte was sent
        await stream.aclose()
        return False  # still open: waiting for its handshake

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            acceptor = Acceptor(ep, "replica", receiver.on_connection, max_open=3)
            listeners = await nursery.start(acceptor.serve, "127.0.0.1", 0)
            port = listeners[0].socket.getsockname()[1]
            # Two silent connections fill the handshake places; a third is refused.
            silent = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(2)]
            while acceptor.handshaking < 2:
                await trio.sleep(0.01)
            assert await refused(port)
            assert acceptor.stats["refused_full"] == 1
            for stream in silent:
                await stream.aclose()
            while acceptor.handshaking:
                await trio.sleep(0.01)
            # Three authenticated connections fill max_open; a fourth is refused.
            links = [
                await dial(endpoint(tls_dir, 1, config), "127.0.0.1", port, hello(1))
                for _ in range(3)
            ]
            while acceptor.handshaking:  # the acceptor reads each one's hello
                await trio.sleep(0.01)
            assert acceptor.open == 3
            assert await refused(port)
            assert acceptor.stats["refused_full"] == 2
            await links[0].aclose()
            while acceptor.open == 3:
                await trio.sleep(0.01)
            again = await dial(endpoint(tls_dir, 1, config), "127.0.0.1", port, hello(1))
            await again.send([b"taken again"])
            await receiver.arrived.wait()
            assert acceptor.stats["accepted"] == 4
            nursery.cancel_scope.cancel()


async def test_frames_at_and_over_the_limit(tls_dir: Path) -> None:
    receiver = Receiver()
    config = NetworkConfig(max_frame=1000, handshake_timeout=1.0, idle_timeout=2.0)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            acceptor, port = await start_acceptor(nursery, endpoint(tls_dir, 0, config), receiver)
            framed = await dial(
                endpoint(tls_dir, 1, config), "127.0.0.1", port, hello(1), expect_replica=0
            )
            await framed.send([b"a" * 1000])
            await receiver.arrived.wait()
            await framed.stream.send_all(encode_frame(b"b" * 1001)[:200])
            while acceptor.stats["closed_bad_input"] == 0:
                await trio.sleep(0.01)
            assert len(receiver.frames) == 1
            nursery.cancel_scope.cancel()


async def test_a_client_on_the_replica_port_is_refused_and_clients_are_identified(
    tls_dir: Path,
) -> None:
    files = client_files(tls_dir, "ann")
    client_endpoint = Endpoint(COMMITTEE, "pbft", None, client_context(files), FAST)
    client_hello = Hello(kind="client", id=0, chain_id="nettest", protocol="pbft")
    replicas, clients = Receiver(), Receiver()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            peer_acceptor, peer_port = await start_acceptor(nursery, endpoint(tls_dir, 0), replicas)
            _, client_port = await start_acceptor(
                nursery, endpoint(tls_dir, 0), clients, kind="client"
            )
            framed = await dial(client_endpoint, "127.0.0.1", peer_port, client_hello)
            await framed.send([b"sneaky"])
            while peer_acceptor.stats["rejected_handshake"] == 0:
                await trio.sleep(0.01)
            framed = await dial(client_endpoint, "127.0.0.1", client_port, client_hello)
            await framed.send([b"tx"])
            await clients.arrived.wait()
            who, frame = clients.frames[0]
            assert (
                who.kind == "client" and who.public_key == SigningKey(b"\x55" * 32).public_key.raw
            )
            assert frame == b"tx" and replicas.frames == []
            nursery.cancel_scope.cancel()


async def test_plaintext_mode_for_measuring_tls_cost() -> None:
    receiver = Receiver()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            _, port = await start_acceptor(nursery, endpoint(None, 0), receiver)
            framed = await dial(endpoint(None, 1), "127.0.0.1", port, hello(1), expect_replica=0)
            await framed.send([b"clear"])
            await receiver.arrived.wait()
            assert receiver.frames[0][0].public_key is None
            nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------------- idle readers

IDLE = 5.0
PEER = Identity("replica", 1, None)


def _socket_pair() -> tuple[trio.SocketStream, FramedStream]:
    a, b = trio.socket.socketpair()
    return trio.SocketStream(a), FramedStream(trio.SocketStream(b))


async def test_a_silent_peer_is_dropped_after_the_idle_timeout(autojump_clock: Any) -> None:
    writer, framed = _socket_pair()
    got: list[bytes] = []

    async def handler(who: Identity, frame: bytes) -> None:
        got.append(frame)

    await writer.send_all(encode_frame(b"one"))
    began = trio.current_time()
    with pytest.raises(trio.TooSlowError, match=r"silent for 5\.0 s"):
        await read_frames(framed, PEER, handler, NetworkConfig(idle_timeout=IDLE))
    assert got == [b"one"]
    assert IDLE <= trio.current_time() - began <= IDLE + 0.1


async def test_each_frame_restarts_the_idle_timeout(autojump_clock: Any) -> None:
    writer, framed = _socket_pair()
    got: list[bytes] = []

    async def handler(who: Identity, frame: bytes) -> None:
        got.append(frame)

    async def slow_writer() -> None:
        for i in range(6):  # 6 x 0.8 x IDLE: silent for longer than IDLE in total, never at once
            await trio.sleep(0.8 * IDLE)
            await writer.send_all(encode_frame(b"%d" % i))
        await writer.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(slow_writer)
        await read_frames(framed, PEER, handler, NetworkConfig(idle_timeout=IDLE))
    assert got == [b"%d" % i for i in range(6)]


async def test_time_in_the_handler_is_not_silence(autojump_clock: Any) -> None:
    writer, framed = _socket_pair()
    got: list[tuple[float, bytes]] = []
    began = trio.current_time()

    async def handler(who: Identity, frame: bytes) -> None:
        got.append((trio.current_time() - began, frame))
        if frame == b"slow":
            await trio.sleep(3 * IDLE)  # a busy replica holding the frame, say

    await writer.send_all(encode_frame(b"slow") + encode_frame(b"next"))
    with pytest.raises(trio.TooSlowError):
        await read_frames(framed, PEER, handler, NetworkConfig(idle_timeout=IDLE))
    assert [frame for _, frame in got] == [b"slow", b"next"]
    assert got[1][0] >= 3 * IDLE
    assert trio.current_time() - began >= 4 * IDLE


async def test_a_failing_handler_raises_its_own_error() -> None:
    writer, framed = _socket_pair()

    async def handler(who: Identity, frame: bytes) -> None:
        raise ValueError(f"cannot take {frame!r}")

    await writer.send_all(encode_frame(b"bad"))
    with trio.fail_after(5), pytest.raises(ValueError, match="cannot take b'bad'"):
        await read_frames(framed, PEER, handler, NetworkConfig(idle_timeout=IDLE))


# ------------------------------------------------------------------------------------ links


async def test_queue_full_drops_the_oldest() -> None:
    config = NetworkConfig(queue_size=3, reconnect_min=10, reconnect_max=10)
    link = PeerLink(
        endpoint(None, 1, config), 1, 0, ("127.0.0.1", 1), LinkFaults(), random.Random(1)
    )
    for i in range(5):
        link.send(b"%d" % i)
    assert list(link.queue) == [b"2", b"3", b"4"]
    assert link.stats["dropped_queue_full"] == 2


async def test_a_full_queue_in_bytes_drops_the_oldest_and_keeps_the_newest() -> None:
    config = NetworkConfig(queue_bytes=2500, reconnect_min=10, reconnect_max=10)
    link = PeerLink(
        endpoint(None, 1, config), 1, 0, ("127.0.0.1", 1), LinkFaults(), random.Random(1)
    )
    for i in range(5):
        link.send(bytes([i]) * 1000)
    assert [f[0] for f in link.queue] == [3, 4] and link.queued_bytes == 2000
    link.send(b"x" * 10_000)  # larger than the cap alone: queued, alone
    assert list(link.queue) == [b"x" * 10_000] and link.queued_bytes == 10_000
    assert link.stats["dropped_queue_full"] == 5


async def test_a_link_reconnects_after_the_peer_restarts(tls_dir: Path) -> None:
    receiver = Receiver()
    with trio.fail_after(20):
        async with trio.open_nursery() as outer:
            async with trio.open_nursery() as server:
                _, port = await start_acceptor(server, endpoint(tls_dir, 0), receiver)
                link = PeerLink(
                    endpoint(tls_dir, 1), 1, 0, ("127.0.0.1", port), LinkFaults(), random.Random(2)
                )
                outer.start_soon(link.run)
                link.send(b"before")
                await receiver.arrived.wait()
                server.cancel_scope.cancel()  # the peer goes away
            receiver.arrived = trio.Event()
            link.send(b"lost or kept")
            await trio.sleep(0.2)
            async with trio.open_nursery() as server:
                acceptor = Acceptor(endpoint(tls_dir, 0), "replica", receiver.on_connection)
                await server.start(acceptor.serve, "127.0.0.1", port)
                link.send(b"after")
                while b"after" not in [f for _, f in receiver.frames]:
                    await trio.sleep(0.02)
                assert link.stats["connects"] >= 2
                server.cancel_scope.cancel()
            outer.cancel_scope.cancel()


@pytest.mark.parametrize("tls", [True, False])
async def test_an_idle_link_sends_at_once_and_keeps_order_with_queued_frames(
    tls_dir: Path, tls: bool
) -> None:
    receiver = Receiver()
    directory = tls_dir if tls else None
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            _, port = await start_acceptor(nursery, endpoint(directory, 0), receiver)
            link = PeerLink(
                endpoint(directory, 1), 1, 0, ("127.0.0.1", port), LinkFaults(), random.Random(5)
            )
            nursery.start_soon(link.run)
            link.send(b"first")  # queued: not connected yet
            await receiver.arrived.wait()
            while link._direct is None:  # the writer is idle now
                await trio.sleep(0.01)
            sent = link.stats["frames_sent"]
            link.send(b"direct")
            # On the wire before this task yields: the writer task had no chance to run.
            assert link.stats["frames_sent"] == sent + 1 and not link.queue
            big = b"B" * (12 * 1024 * 1024)  # more than the socket takes at once
            link.send(big)
            link.send(b"after the big one")  # queued behind what the socket did not take
            assert list(link.queue) == [b"after the big one"]
            while len(receiver.frames) < 4:
                await trio.sleep(0.01)
            assert [f for _, f in receiver.frames] == [
                b"first",
                b"direct",
                big,
                b"after the big one",
            ]
            nursery.cancel_scope.cancel()


async def test_frames_sent_together_leave_in_one_write_and_in_order(tls_dir: Path) -> None:
    receiver = Receiver()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            _, port = await start_acceptor(nursery, endpoint(tls_dir, 0), receiver)
            link = PeerLink(
                endpoint(tls_dir, 1), 1, 0, ("127.0.0.1", port), LinkFaults(), random.Random(5)
            )
            link.send_many([b"q1", b"q2"])  # not connected yet: queued, in order
            assert list(link.queue) == [b"q1", b"q2"]
            nursery.start_soon(link.run)
            while link._direct is None:  # connected, queue sent, the writer idle
                await trio.sleep(0.01)
            direct = link._direct
            writes: list[list[bytes]] = []
            send_nowait = direct.send_nowait

            def counting(payloads: Sequence[bytes]) -> bool:
                writes.append(list(payloads))
                return send_nowait(payloads)

            direct.send_nowait = counting  # type: ignore[method-assign]
            sent = link.stats["frames_sent"]
            link.send_many([b"a", b"b", b"c"])
            assert writes == [[b"a", b"b", b"c"]]
            assert link.stats["frames_sent"] == sent + 3 and not link.queue
            while len(receiver.frames) < 5:
                await trio.sleep(0.01)
            assert [f for _, f in receiver.frames] == [b"q1", b"q2", b"a", b"b", b"c"]
            nursery.cancel_scope.cancel()


async def test_fault_injection_cuts_and_partitions(tls_dir: Path) -> None:
    receiver = Receiver()
    faults = LinkFaults()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            _, port = await start_acceptor(nursery, endpoint(tls_dir, 0), receiver)
            link = PeerLink(
                endpoint(tls_dir, 1), 1, 0, ("127.0.0.1", port), faults, random.Random(3)
            )
            nursery.start_soon(link.run)
            faults.partition(1, [[1, 2], [0]], peers=[0, 1, 2])
            assert faults.active and faults.inbound_blocked(0)
            link.send(b"cut")
            while link.stats["dropped_by_fault"] == 0:
                await trio.sleep(0.01)
            faults.heal()
            assert not faults.active
            link.send(b"healed")
            await receiver.arrived.wait()
            assert [f for _, f in receiver.frames] == [b"healed"]
            nursery.cancel_scope.cancel()


def test_faults_drop_and_delay_are_seeded() -> None:
    a, b = LinkFaults(seed=4), LinkFaults(seed=4)
    for faults in (a, b):
        faults.drop(2, 0.5)
        faults.delay(3, 0.01)
    assert [a.outbound(2) for _ in range(50)] == [b.outbound(2) for _ in range(50)]
    assert a.outbound(3) == (False, 0.01)
    with pytest.raises(ValueError):
        a.drop(2, 1.5)
