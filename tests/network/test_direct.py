"""The TLS stream over real loopback sockets: data both ways, back-pressure, clean and truncated
ends, closing under a waiting task, cancellation, and a refused certificate."""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from crypto import SigningKey
from network.direct import DirectStream
from network.tls import (
    TlsFiles,
    client_context,
    issue_certificate,
    make_cluster_ca,
    replica_files,
    server_context,
)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tlsstream")
    ca_cert, ca_key = make_cluster_ca(directory, "streamtest")
    for i in range(2):
        files = replica_files(directory, i)
        key = SigningKey(bytes([i + 7]) * 32)
        issue_certificate(ca_cert, ca_key, key, f"replica-{i}", files.cert, files.key)
    rogue = directory / "rogue"
    r_cert, r_key = make_cluster_ca(rogue, "streamtest")
    issue_certificate(
        r_cert, r_key, SigningKey(b"\x09" * 32), "replica-1", rogue / "r.crt", rogue / "r.key"
    )
    return directory


async def _tcp_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    listener = listeners[0]
    port = listener.socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server = await listener.accept()
    await listener.aclose()
    return client, server


async def _tls_pair(
    certs: Path, client_files: TlsFiles | None = None
) -> tuple[DirectStream, DirectStream]:
    client_tcp, server_tcp = await _tcp_pair()
    client = DirectStream.tls(
        client_tcp,
        client_context(client_files or replica_files(certs, 1)),
        server_side=False,
        server_hostname="replica-0",
    )
    server = DirectStream.tls(server_tcp, server_context(replica_files(certs, 0)), server_side=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.do_handshake)
        nursery.start_soon(server.do_handshake)
    return client, server


@pytest.fixture
async def pair(certs: Path) -> AsyncIterator[tuple[DirectStream, DirectStream]]:
    client, server = await _tls_pair(certs)
    yield client, server
    await client.aclose()
    await server.aclose()


async def _read_exactly(stream: DirectStream, size: int) -> bytes:
    got = bytearray()
    while len(got) < size:
        data = await stream.receive_some(65536)
        if not data:
            raise AssertionError(f"stream ended after {len(got)} of {size} bytes")
        got += data
    return bytes(got)


async def test_data_flows_both_ways_and_the_peer_certificate_is_there(
    pair: tuple[DirectStream, DirectStream],
) -> None:
    client, server = pair
    await client.send_all(b"ping")
    assert await _read_exactly(server, 4) == b"ping"
    await server.send_all(b"pong!")
    assert await _read_exactly(client, 5) == b"pong!"
    assert client.getpeercert(binary_form=True)  # DER of the server's certificate
    assert server.getpeercert(binary_form=True)  # mutual: the client showed one too


async def test_a_send_larger_than_the_socket_buffers_waits_for_the_reader(
    pair: tuple[DirectStream, DirectStream],
) -> None:
    client, server = pair
    payload = os.urandom(8 * 1024 * 1024)  # far beyond loopback's buffers: OpenSSL must wait
    received = bytearray()

    async def read_slowly() -> None:
        while len(received) < len(payload):
            received.extend(await server.receive_some(32768))
            await trio.sleep(0)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_slowly)
            await client.send_all(payload)
    assert bytes(received) == payload


async def test_a_clean_close_reads_as_end_of_stream(
    pair: tuple[DirectStream, DirectStream],
) -> None:
    client, server = pair
    await client.send_all(b"last words")
    await client.aclose()
    assert await _read_exactly(server, 10) == b"last words"
    with trio.fail_after(5):
        assert await server.receive_some() == b""


async def test_a_connection_cut_without_tls_close_is_broken_not_ended(certs: Path) -> None:
    client, server = await _tls_pair(certs)
    # Close the socket under the TLS layer: no close_notify goes out (a truncation).
    fd = client._sock.detach()
    socket.socket(fileno=fd).close()
    with trio.fail_after(5), pytest.raises(trio.BrokenResourceError, match="without TLS close"):
        await server.receive_some()
    await server.aclose()


async def test_closing_wakes_a_waiting_receiver_and_refuses_later_calls(
    pair: tuple[DirectStream, DirectStream],
) -> None:
    client, _ = pair
    outcome: list[BaseException] = []

    async def wait_for_data() -> None:
        try:
            await client.receive_some()
        except trio.ClosedResourceError as exc:
            outcome.append(exc)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_for_data)
            await trio.sleep(0.05)
            await client.aclose()
    assert len(outcome) == 1
    with pytest.raises(trio.ClosedResourceError):
        await client.send_all(b"x")
    with pytest.raises(trio.ClosedResourceError):
        await client.receive_some()
    await client.aclose()  # twice is fine


async def test_a_second_receiver_is_refused_and_a_cancelled_receive_leaves_the_stream_usable(
    pair: tuple[DirectStream, DirectStream],
) -> None:
    client, server = pair
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.receive_some)
            await trio.sleep(0.05)
            with pytest.raises(trio.BusyResourceError):
                await server.receive_some()
            nursery.cancel_scope.cancel()
    with trio.move_on_after(0.05) as scope:
        await server.receive_some()
    assert scope.cancelled_caught
    await client.send_all(b"still here")
    assert await _read_exactly(server, 10) == b"still here"


async def test_every_call_is_a_checkpoint_even_when_data_is_ready(
    pair: tuple[DirectStream, DirectStream],
) -> None:
    client, server = pair
    await client.send_all(b"ready")
    await trio.sleep(0.05)  # the bytes are there before the receive starts
    with trio.CancelScope() as scope:
        scope.cancel()
        await server.receive_some()  # must raise Cancelled, not return the ready bytes
    assert scope.cancelled_caught
    assert await _read_exactly(server, 5) == b"ready"


async def test_a_certificate_from_another_ca_fails_the_handshake(certs: Path) -> None:
    rogue = TlsFiles(certs / "ca.crt", certs / "rogue" / "r.crt", certs / "rogue" / "r.key")
    client_tcp, server_tcp = await _tcp_pair()
    client = DirectStream.tls(
        client_tcp, client_context(rogue), server_side=False, server_hostname="replica-0"
    )
    server = DirectStream.tls(server_tcp, server_context(replica_files(certs, 0)), server_side=True)
    errors: list[BaseException] = []

    async def shake(stream: DirectStream) -> None:
        try:
            await stream.do_handshake()
            await stream.receive_some()  # TLS 1.3: a client learns of its rejection here
        except trio.BrokenResourceError as exc:
            errors.append(exc)
        finally:
            await stream.aclose()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(shake, client)
            nursery.start_soon(shake, server)
    assert len(errors) == 2
    assert all(isinstance(e.__cause__, (ssl.SSLError, OSError)) for e in errors)


# ------------------------------------------------------------------------------------ send_nowait


async def test_send_nowait_puts_a_small_frame_on_the_wire_at_once(
    pair: tuple[DirectStream, DirectStream],
) -> None:
    client, server = pair
    assert client.send_nowait(b"quick") is True
    assert client.pending == 0
    assert await _read_exactly(server, 5) == b"quick"


async def test_what_send_nowait_could_not_send_goes_first_in_the_next_send(
    pair: tuple[DirectStream, DirectStream],
) -> None:
    client, server = pair
    big = os.urandom(8 * 1024 * 1024)  # more than the socket takes while nobody reads
    assert client.send_nowait(big) is False
    assert 0 < client.pending <= len(big)  # TLS: OpenSSL holds part, wants all again
    with pytest.raises(trio.WouldBlock):
        client.send_nowait(b"must not overtake")  # refused, nothing taken
    received = bytearray()

    async def read_all() -> None:
        while len(received) < len(big) + 4:
            received.extend(await server.receive_some(65536))

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all)
            await client.send_all(b"tail")
    assert client.pending == 0
    assert bytes(received) == big + b"tail"


async def test_a_send_cut_short_by_cancellation_breaks_the_stream(
    pair: tuple[DirectStream, DirectStream],
) -> None:
    client, _ = pair
    with trio.move_on_after(0.2) as scope:
        await client.send_all(os.urandom(8 * 1024 * 1024))  # nobody reads: it waits
    assert scope.cancelled_caught
    # Part of a frame may be on the wire: no later bytes may follow it.
    with pytest.raises(trio.BrokenResourceError, match="did not finish"):
        await client.send_all(b"x")
    with pytest.raises(trio.BrokenResourceError, match="did not finish"):
        client.send_nowait(b"x")


async def test_a_plain_stream_carries_data_and_ends_cleanly() -> None:
    client_tcp, server_tcp = await _tcp_pair()
    client, server = DirectStream.plain(client_tcp), DirectStream.plain(server_tcp)
    await client.do_handshake()  # nothing to do without TLS
    assert client.getpeercert(binary_form=True) is None
    assert client.send_nowait(b"plain ") is True
    await client.send_all(b"text")
    assert await _read_exactly(server, 10) == b"plain text"
    await client.aclose()
    with trio.fail_after(5):
        assert await server.receive_some() == b""
    await server.aclose()
