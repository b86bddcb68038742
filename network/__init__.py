"""Trio transport: framing, mutual-TLS channels, peer links, fault injection; and the helpers that
move batched crypto off the event loop."""

from .offload import verify_off_loop

__all__ = ["verify_off_loop"]
