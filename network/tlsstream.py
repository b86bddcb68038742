"""TLS straight on the socket: the standard library's ``SSLSocket`` in non-blocking mode, waited
on with Trio's I/O readiness primitives.

``trio.SSLStream`` runs TLS over memory buffers, so it works over any Trio stream; the price is
Python-level work on every call (copying ciphertext between the BIOs and the transport, a retry
loop, conflict detectors). Our links are always TCP sockets, and the frames on them are small:
a one-frame round trip over loopback took 211 us of CPU with ``trio.SSLStream`` and 110 us with
this class (plain TCP: 92 us). With OpenSSL reading and writing the socket itself, a send or a
receive is one C call when the socket is ready.

Semantics follow Trio's streams: every method is a checkpoint; ``receive_some`` returns ``b""``
at the peer's ``close_notify``; a connection that ends without one (truncation), a TLS error or a
socket error raises :class:`trio.BrokenResourceError` with the cause chained; a closed stream
raises :class:`trio.ClosedResourceError`. One task may receive while another sends (each waits
on its own direction of the socket); two concurrent senders or receivers are refused.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from typing import Any

import trio

_WANT = (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError)


class TlsSocketStream(trio.abc.Stream):
    """A TLS connection over a connected TCP socket; build it with :meth:`wrap`."""

    def __init__(self, tls: ssl.SSLSocket) -> None:
        self._tls = tls
        self._closed = False
        self._sending = False
        self._receiving = False

    @classmethod
    def wrap(
        cls,
        stream: trio.SocketStream,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
    ) -> TlsSocketStream:
        """Take over ``stream``'s socket (``stream`` must not be used afterwards); the handshake
        is :meth:`do_handshake`."""
        raw = socket.socket(fileno=stream.socket.detach())
        raw.setblocking(False)
        tls = context.wrap_socket(
            raw,
            server_side=server_side,
            server_hostname=None if server_side else server_hostname,
            do_handshake_on_connect=False,
            suppress_ragged_eofs=False,
        )
        return cls(tls)

    # ------------------------------------------------------------------------------ waiting

    async def _wait(self, want: BaseException) -> None:
        if isinstance(want, ssl.SSLWantWriteError):
            await trio.lowlevel.wait_writable(self._tls)
        else:
            await trio.lowlevel.wait_readable(self._tls)

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the TLS stream is closed")

    @staticmethod
    def _broken(exc: BaseException) -> trio.BrokenResourceError:
        if isinstance(exc, ssl.SSLEOFError):
            return trio.BrokenResourceError("the peer closed the connection without TLS close")
        return trio.BrokenResourceError(f"TLS connection failed: {exc}")

    # ------------------------------------------------------------------------------ the API

    async def do_handshake(self) -> None:
        self._check_open()
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                self._tls.do_handshake()
            except _WANT as want:
                await self._wait(want)
                self._check_open()
                continue
            except (ssl.SSLError, OSError) as exc:
                raise self._broken(exc) from exc
            break
        await trio.lowlevel.cancel_shielded_checkpoint()

    def getpeercert(self, binary_form: bool = False) -> Any:
        return self._tls.getpeercert(binary_form)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        self._check_open()
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this TLS stream")
        size = 65536 if max_bytes is None else max_bytes
        if size < 1:
            raise ValueError("max_bytes must be >= 1")
        self._receiving = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            waited = False
            while True:
                try:
                    data = self._tls.recv(size)
                except ssl.SSLZeroReturnError:
                    data = b""
                except _WANT as want:
                    await self._wait(want)
                    self._check_open()
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

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self._check_open()
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this TLS stream")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            view = memoryview(data)
            total = len(view)
            sent = 0
            waited = False
            while sent < total:
                try:
                    sent += self._tls.send(view[sent:])
                except _WANT as want:
                    # OpenSSL wants the same bytes again once the socket is ready.
                    await self._wait(want)
                    self._check_open()
                    waited = True
                except (ssl.SSLError, OSError) as exc:
                    raise self._broken(exc) from exc
            if not waited:
                await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        self._check_open()
        await trio.lowlevel.wait_writable(self._tls)

    async def aclose(self) -> None:
        """Send ``close_notify`` if the socket takes it at once, then close. Never waits for
        the peer's answer."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        tls = self._tls
        trio.lowlevel.notify_closing(tls)
        with contextlib.suppress(ssl.SSLError, OSError, ValueError):
            tls.unwrap()
        tls.close()
        await trio.lowlevel.checkpoint()
