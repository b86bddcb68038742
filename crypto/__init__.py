"""Keys, domain-separated Ed25519 signatures, hashing, Merkle trees, quorum certificates, and the
strict canonical codec for everything that is signed or sent.

Pure: nothing here reads a clock, a file or a socket, except :mod:`crypto.keyfiles`, which is
imported on its own by the programs that load keys.
"""

from .codec import CodecError, Record, RecordUnion, decode_value, encode_value, record, wire
from .committee import (
    MAX_COMMITTEE,
    Committee,
    byzantine_faults,
    byzantine_quorum,
    crash_faults,
    majority,
)
from .errors import CryptoError, InvalidCertificate, InvalidKey, KeyFileError
from .hashing import DIGEST_SIZE, sha256, short_hex
from .keys import (
    PUBLIC_KEY_SIZE,
    SEED_SIZE,
    SIGNATURE_SIZE,
    Domain,
    PublicKey,
    SigningKey,
    check_chain_id,
    statement_digest,
)
from .merkle import EMPTY_ROOT, MerkleTree, leaf_hash, merkle_root, node_hash, verify_inclusion
from .qc import QuorumCertificate, bitmap_indices, make_bitmap

__all__ = [
    "DIGEST_SIZE",
    "EMPTY_ROOT",
    "MAX_COMMITTEE",
    "PUBLIC_KEY_SIZE",
    "SEED_SIZE",
    "SIGNATURE_SIZE",
    "CodecError",
    "Committee",
    "CryptoError",
    "Domain",
    "InvalidCertificate",
    "InvalidKey",
    "KeyFileError",
    "MerkleTree",
    "PublicKey",
    "QuorumCertificate",
    "Record",
    "RecordUnion",
    "SigningKey",
    "bitmap_indices",
    "byzantine_faults",
    "byzantine_quorum",
    "check_chain_id",
    "crash_faults",
    "decode_value",
    "encode_value",
    "leaf_hash",
    "majority",
    "make_bitmap",
    "merkle_root",
    "node_hash",
    "record",
    "sha256",
    "short_hex",
    "statement_digest",
    "verify_inclusion",
    "wire",
]
