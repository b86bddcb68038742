"""A Trio stream that calls the socket directly: the standard library's non-blocking socket, or
its ``SSLSocket`` for TLS, waited on with Trio's I/O readiness primitives.

``trio.SSLStream`` runs TLS over memory buffers, so it works over any Trio stream; the price is
Python-level work on every call (copying ciphertext between the BIOs and the transport, a retry
loop, conflict detectors). Our links are always TCP sockets, and the frames on them are small:
a one-frame round trip over loopback took 211 us of CPU with ``trio.SSLStream`` and 110 us with
OpenSSL reading and writing the socket itself (plain TCP: 92 us). A send or a receive is one C
call when the socket is ready.

It also offers :meth:`DirectStream.send_nowait`, which puts bytes on the wire from the calling
task if the socket takes them at once: a peer link sends a protocol message without waking its
writer task (two task switches and three timeouts per message and peer otherwise).

Semantics follow Trio's streams: every async method is a checkpoint; ``receive_some`` returns
``b""`` at the end of the stream (for TLS: the peer's ``close_notify``); a TLS connection that ends
without one (truncation), a TLS error or a socket error raises :class:`trio.BrokenResourceError`
with the cause chained; a closed stream raises :class:`trio.ClosedResourceError`. One task may
receive while another sends (each waits on its own direction of the socket); two concurrent
senders or receivers are refused.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from typing import Any

import trio

_WANT = (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError)


class DirectStream(trio.abc.Stream):
    """A connected TCP socket, with or without TLS; build it with :meth:`plain` or :meth:`tls`."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._closed = False
        self._sending = False
        self._receiving = False
        # Bytes a non-blocking send started and the socket did not take: the next send
        # finishes them first (OpenSSL requires the same bytes again after a partial write).
        self._pending: memoryview | None = None
        self._send_broken = False

    @staticmethod
    def _take_socket(stream: trio.SocketStream) -> socket.socket:
        raw = socket.socket(fileno=stream.socket.detach())
        raw.setblocking(False)
        return raw

    @classmethod
    def plain(cls, stream: trio.SocketStream) -> DirectStream:
        """Take over ``stream``'s socket (``stream`` must not be used afterwards)."""
        return cls(cls._take_socket(stream))

    @classmethod
    def tls(
        cls,
        stream: trio.SocketStream,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
    ) -> DirectStream:
        """Take over ``stream``'s socket for TLS; the handshake is :meth:`do_handshake`."""
        tls = context.wrap_socket(
            cls._take_socket(stream),
            server_side=server_side,
            server_hostname=None if server_side else server_hostname,
            do_handshake_on_connect=False,
            suppress_ragged_eofs=False,
        )
        return cls(tls)

    @property
    def pending(self) -> int:
        """Bytes a :meth:`send_nowait` accepted that are not on the wire yet."""
        return 0 if self._pending is None else len(self._pending)

    # ------------------------------------------------------------------------------ helpers

    async def _wait(self, want: BaseException, *, sending: bool = False) -> None:
        """Wait until the socket can do what OpenSSL (or the kernel) said it needs: a plain
        ``BlockingIOError`` means the caller's own direction."""
        if isinstance(want, ssl.SSLWantWriteError) or (
            sending and not isinstance(want, ssl.SSLWantReadError)
        ):
            await trio.lowlevel.wait_writable(self._sock)
        else:
            await trio.lowlevel.wait_readable(self._sock)
        self._check_open()

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the stream is closed")

    def _check_sendable(self) -> None:
        self._check_open()
        if self._send_broken:
            raise trio.BrokenResourceError("an earlier send on this stream did not finish")

    @staticmethod
    def _broken(exc: BaseException) -> trio.BrokenResourceError:
        if isinstance(exc, ssl.SSLEOFError):
            return trio.BrokenResourceError("the peer closed the connection without TLS close")
        if isinstance(exc, ssl.SSLError):
            return trio.BrokenResourceError(f"TLS connection failed: {exc}")
        return trio.BrokenResourceError(f"connection failed: {exc}")

    # ------------------------------------------------------------------------------ the API

    async def do_handshake(self) -> None:
        """Run the TLS handshake (a plain stream has none)."""
        self._check_open()
        await trio.lowlevel.checkpoint_if_cancelled()
        sock = self._sock
        if isinstance(sock, ssl.SSLSocket):
            while True:
                try:
                    sock.do_handshake()
                except _WANT as want:
                    await self._wait(want)
                    continue
                except (ssl.SSLError, OSError) as exc:
                    raise self._broken(exc) from exc
                break
        await trio.lowlevel.cancel_shielded_checkpoint()

    def getpeercert(self, binary_form: bool = False) -> Any:
        """The peer's certificate (``None`` without TLS)."""
        sock = self._sock
        return sock.getpeercert(binary_form) if isinstance(sock, ssl.SSLSocket) else None

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        self._check_open()
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this stream")
        size = 65536 if max_bytes is None else max_bytes
        if size < 1:
            raise ValueError("max_bytes must be >= 1")
        self._receiving = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            waited = False
            while True:
                try:
                    data = self._sock.recv(size)
                except ssl.SSLZeroReturnError:
                    data = b""
                except _WANT as want:
                    await self._wait(want)
                    waited = True
                    continue
                except (ssl.SSLError, OSError) as exc:
                    raise self._broken(exc) from exc
                break
            if not waited:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return data
        finally:
            self._receiving = False

    def send_nowait(self, data: bytes) -> bool:
        """Send ``data`` from the calling task, without waiting.

        Raises :class:`trio.WouldBlock` (taking nothing) while another send is under way or
        earlier bytes are still pending. Otherwise the bytes are the stream's: returns ``True``
        when all are on the wire, ``False`` when the socket took only part; the rest goes
        first in the next :meth:`send_all` (``send_all(b"")`` just finishes it).
        """
        self._check_sendable()
        if self._sending or self._pending is not None:
            raise trio.WouldBlock
        view = memoryview(data)
        sent = 0
        total = len(view)
        while sent < total:
            try:
                took = self._sock.send(view[sent:])
            except _WANT:
                self._pending = view[sent:]
                return False
            except (ssl.SSLError, OSError) as exc:
                self._send_broken = True
                raise self._broken(exc) from exc
            sent += took
        return True

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self._check_sendable()
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            try:
                waited = await self._send_pending()
                self._pending = memoryview(data)
                waited = await self._send_pending() or waited
            except BaseException:
                # Cancelled or failed part-way: what the peer got is no longer whole frames.
                self._send_broken = True
                raise
            if not waited:
                await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            self._sending = False

    async def _send_pending(self) -> bool:
        """Put ``self._pending`` on the wire; whether it had to wait."""
        waited = False
        view = self._pending
        while view is not None and len(view):
            try:
                took = self._sock.send(view)
            except _WANT as want:
                # OpenSSL wants the same bytes again once the socket is ready.
                await self._wait(want, sending=True)
                waited = True
                continue
            except (ssl.SSLError, OSError) as exc:
                raise self._broken(exc) from exc
            view = self._pending = view[took:]
        self._pending = None
        return waited

    async def wait_send_all_might_not_block(self) -> None:
        self._check_open()
        await trio.lowlevel.wait_writable(self._sock)

    async def aclose(self) -> None:
        """For TLS, send ``close_notify`` if the socket takes it at once; then close. Never
        waits for the peer."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        sock = self._sock
        trio.lowlevel.notify_closing(sock)
        if isinstance(sock, ssl.SSLSocket):
            with contextlib.suppress(ssl.SSLError, OSError, ValueError):
                sock.unwrap()
        sock.close()
        await trio.lowlevel.checkpoint()
