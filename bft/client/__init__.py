"""The client library: an async Trio API (``open_client``) and a blocking facade
(``BlockingClient``) to submit transactions, get verifiable receipts, and read the ordered
stream of committed blocks."""

from .client import (
    BlockingClient,
    Client,
    ClientConfig,
    ClientError,
    ClusterUnreachable,
    NotCommitted,
    Outcome,
    Rejected,
    open_client,
)

__all__ = [
    "BlockingClient",
    "Client",
    "ClientConfig",
    "ClientError",
    "ClusterUnreachable",
    "NotCommitted",
    "Outcome",
    "Rejected",
    "open_client",
]
