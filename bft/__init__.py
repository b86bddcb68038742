"""The BFT ordering service: consensus protocols, the replica runtime, the client library, the
testbed and the ``bft`` command."""

__version__ = "0.1.0"
