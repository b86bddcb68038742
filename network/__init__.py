"""Trio transport: length-prefixed frames, mutual TLS under a per-cluster CA with identities pinned
by the committee, per-peer links with bounded queues and reconnection, link fault injection, and
the helper that verifies a batch of signatures on a worker thread."""

from .faults import LinkFaults
from .framing import DEFAULT_MAX_FRAME, FrameDecoder, FramedStream, FrameError, encode_frame
from .offload import verify_off_loop
from .transport import (
    Acceptor,
    Endpoint,
    HandshakeError,
    Hello,
    Identity,
    NetworkConfig,
    PeerLink,
    PeerLinks,
    ProtocolViolation,
    dial,
    read_frames,
)

__all__ = [
    "DEFAULT_MAX_FRAME",
    "Acceptor",
    "Endpoint",
    "FrameDecoder",
    "FrameError",
    "FramedStream",
    "HandshakeError",
    "Hello",
    "Identity",
    "LinkFaults",
    "NetworkConfig",
    "PeerLink",
    "PeerLinks",
    "ProtocolViolation",
    "dial",
    "encode_frame",
    "read_frames",
    "verify_off_loop",
]
