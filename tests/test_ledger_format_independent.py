"""An independent verifier of the ledger format, written from ``docs/ledger-format.md`` alone.

The first half of this module is a verifier that uses only the standard library and the Ed25519 of
``cryptography``: no cbor2, no PyNaCl, no module of this project. It decodes the strict CBOR
profile itself, reads segment files and records, checks checksums, the hash chain, Merkle roots,
quorum certificates against the committee file, client signatures and receipts.

The second half builds real ledgers with the project's own code (imported only there) and checks
that the verifier accepts them, refuses tampered copies, and agrees with the worked example of the
document byte for byte. When the code and the document part ways, these tests say where.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import re
import shutil
import struct
import tomllib
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

DOC = Path(__file__).resolve().parent.parent / "docs" / "ledger-format.md"

# =============================================================================================
# The independent verifier (standard library and cryptography's Ed25519 only)


class Rejected(Exception):
    """The input breaks a rule of the format; the message names the rule."""


class StoreDamage(Rejected):
    """A segment or record fails; ``kind`` is ``"torn-tail"`` or ``"corrupt"`` (doc section 11)."""

    def __init__(self, kind: str, height: int, segment: str, offset: int, reason: str) -> None:
        self.kind = kind
        self.height = height
        self.segment = segment
        self.offset = offset
        self.reason = reason
        super().__init__(f"{kind} at height {height}, {segment}:{offset}: {reason}")


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# ---- Canonical CBOR (doc section 1)

MAX_DEPTH = 16


def cbor_decode(data: bytes) -> object:
    """Decode exactly one value of the profile: uint, bytes, text, array; shortest forms only."""
    value, end = _cbor_item(data, 0, 1)
    if end != len(data):
        raise Rejected(f"{len(data) - end} trailing byte(s) after the value")
    return value


def _cbor_argument(data: bytes, pos: int, info: int) -> tuple[int, int]:
    if info < 24:
        return info, pos
    if info > 27:
        raise Rejected("indefinite length or reserved additional information")
    size = 1 << (info - 24)
    end = pos + size
    if end > len(data):
        raise Rejected("truncated CBOR argument")
    value = int.from_bytes(data[pos:end], "big")
    if value < (24 if size == 1 else 1 << (4 * size)):
        raise Rejected("CBOR argument not in its shortest form")
    return value, end


def _cbor_item(data: bytes, pos: int, depth: int) -> tuple[object, int]:
    if pos >= len(data):
        raise Rejected("truncated CBOR value")
    major, info = data[pos] >> 5, data[pos] & 0x1F
    arg, pos = _cbor_argument(data, pos + 1, info)
    if major == 0:
        return arg, pos
    if major in (2, 3):
        end = pos + arg
        if end > len(data):
            raise Rejected("truncated CBOR string")
        raw = bytes(data[pos:end])
        if major == 2:
            return raw, end
        try:
            return raw.decode("utf-8"), end
        except UnicodeDecodeError:
            raise Rejected("text string is not valid UTF-8") from None
    if major == 4:
        if depth > MAX_DEPTH:
            raise Rejected("arrays nested too deep")
        if arg > len(data) - pos:
            raise Rejected("truncated CBOR array")
        items = []
        for _ in range(arg):
            item, pos = _cbor_item(data, pos, depth + 1)
            items.append(item)
        return items, pos
    raise Rejected(f"CBOR major type {major} is not in the profile")


def _cbor_head(major: int, arg: int) -> bytes:
    if arg < 24:
        return bytes([major << 5 | arg])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if arg < 1 << (8 * size):
            return bytes([major << 5 | info]) + arg.to_bytes(size, "big")
    raise ValueError("argument too large")


def cbor_encode(value: object) -> bytes:
    if type(value) is int:
        if value < 0:
            raise ValueError("only unsigned integers")
        return _cbor_head(0, value)
    if type(value) is bytes:
        return _cbor_head(2, len(value)) + value
    if type(value) is str:
        raw = value.encode("utf-8")
        return _cbor_head(3, len(raw)) + raw
    if type(value) in (list, tuple):
        return _cbor_head(4, len(value)) + b"".join(cbor_encode(v) for v in value)
    raise TypeError(f"cannot encode {type(value).__name__}")


# ---- Records (doc section 2)

CHAIN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
PROTOCOLS = ("pbft", "hotstuff", "raft")
BFT = ("pbft", "hotstuff")
MAX_TXS = 100_000
MAX_TX = 4 * 1024 * 1024 + 256


def _fields(value: object, tag: int, count: int, name: str) -> list:
    if type(value) is not list:
        raise Rejected(f"{name}: not an array")
    if len(value) != count + 2:
        raise Rejected(f"{name}: {len(value)} items, expected {count + 2}")
    if type(value[0]) is not int or value[0] != tag:
        raise Rejected(f"{name}: tag {value[0]!r}, expected {tag:#x}")
    if type(value[1]) is not int or value[1] != 1:
        raise Rejected(f"{name}: unsupported version {value[1]!r}")
    return value[2:]


def _uint(v: object, hi: int, where: str, lo: int = 0) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise Rejected(f"{where}: expected an unsigned integer in [{lo}, {hi}]")
    return v


def _bytes(v: object, lo: int, hi: int, where: str) -> bytes:
    if type(v) is not bytes or not lo <= len(v) <= hi:
        raise Rejected(f"{where}: expected {lo}..{hi} bytes")
    return v


def _array(v: object, hi: int, where: str) -> list:
    if type(v) is not list or len(v) > hi:
        raise Rejected(f"{where}: expected an array of at most {hi} items")
    return v


@dataclass(frozen=True)
class Header:
    chain_id: str
    height: int
    prev_hash: bytes
    tx_root: bytes
    tx_count: int
    protocol: str
    view: int
    proposer: int

    def encode(self) -> bytes:
        return cbor_encode(
            [0x10, 1, self.chain_id, self.height, self.prev_hash, self.tx_root, self.tx_count,
             self.protocol, self.view, self.proposer]
        )  # fmt: skip

    def hash(self) -> bytes:
        return sha256(self.encode())


@dataclass(frozen=True)
class Certificate:
    statement: bytes
    signers: bytes
    signatures: tuple[bytes, ...]

    @property
    def signer_ids(self) -> list[int]:
        return [i for i in range(len(self.signers) * 8) if self.signers[i // 8] >> (i % 8) & 1]


@dataclass(frozen=True)
class BlockRec:
    header: Header
    txs: tuple[bytes, ...]
    certificate: Certificate


@dataclass(frozen=True)
class Tx:
    client: bytes
    seq: int
    payload: bytes
    signature: bytes


@dataclass(frozen=True)
class ReceiptRec:
    header: Header
    certificate: Certificate
    tx: bytes
    index: int
    path: tuple[bytes, ...]


def parse_header(v: object) -> Header:
    chain_id, height, prev, root, count, protocol, view, proposer = _fields(v, 0x10, 8, "header")
    if type(chain_id) is not str or not CHAIN_ID.fullmatch(chain_id):
        raise Rejected("header.chain_id: not a chain id")
    if protocol not in PROTOCOLS or type(protocol) is not str:
        raise Rejected(f"header.protocol: {protocol!r}")
    return Header(
        chain_id=chain_id,
        height=_uint(height, 2**64 - 1, "header.height", lo=1),
        prev_hash=_bytes(prev, 32, 32, "header.prev_hash"),
        tx_root=_bytes(root, 32, 32, "header.tx_root"),
        tx_count=_uint(count, MAX_TXS, "header.tx_count"),
        protocol=protocol,
        view=_uint(view, 2**64 - 1, "header.view"),
        proposer=_uint(proposer, 1023, "header.proposer"),
    )


def parse_certificate(v: object) -> Certificate:
    statement, signers, signatures = _fields(v, 0x01, 3, "certificate")
    sigs = tuple(
        _bytes(s, 64, 64, "certificate.signatures[]")
        for s in _array(signatures, 1024, "certificate.signatures")
    )
    cert = Certificate(
        statement=_bytes(statement, 32, 32, "certificate.statement"),
        signers=_bytes(signers, 1, 128, "certificate.signers"),
        signatures=sigs,
    )
    if sigs and len(sigs) != len(cert.signer_ids):
        raise Rejected("certificate: signatures do not match the signer bitmap")
    return cert


def parse_block(v: object) -> BlockRec:
    header, txs, certificate = _fields(v, 0x11, 3, "block")
    h = parse_header(header)
    items = tuple(_bytes(t, 1, MAX_TX, "block.txs[]") for t in _array(txs, MAX_TXS, "block.txs"))
    if len(items) != h.tx_count:
        raise Rejected("block: tx_count differs from the number of transactions")
    return BlockRec(h, items, parse_certificate(certificate))


def parse_tx(data: bytes) -> Tx:
    client, seq, payload, signature = _fields(cbor_decode(data), 0x12, 4, "transaction")
    tx = Tx(
        client=_bytes(client, 1, 32, "tx.client"),
        seq=_uint(seq, 2**64 - 1, "tx.seq"),
        payload=_bytes(payload, 0, 4 * 1024 * 1024, "tx.payload"),
        signature=_bytes(signature, 0, 64, "tx.signature"),
    )
    if tx.signature and (len(tx.signature) != 64 or len(tx.client) != 32):
        raise Rejected("transaction: a signature is 64 bytes, by a 32-byte client key")
    return tx


def parse_receipt(data: bytes) -> ReceiptRec:
    header, certificate, tx, index, path = _fields(cbor_decode(data), 0x13, 5, "receipt")
    r = ReceiptRec(
        header=parse_header(header),
        certificate=parse_certificate(certificate),
        tx=_bytes(tx, 1, MAX_TX, "receipt.tx"),
        index=_uint(index, MAX_TXS - 1, "receipt.index"),
        path=tuple(_bytes(p, 32, 32, "receipt.path[]") for p in _array(path, 64, "receipt.path")),
    )
    if r.index >= r.header.tx_count:
        raise Rejected("receipt: index beyond the block's transactions")
    return r


# ---- Merkle tree (doc section 3)


def leaf_hash(data: bytes) -> bytes:
    return sha256(b"\x00" + data)


def node_hash(left: bytes, right: bytes) -> bytes:
    return sha256(b"\x01" + left + right)


def merkle_root(leaves: tuple[bytes, ...] | list[bytes]) -> bytes:
    level = [leaf_hash(d) for d in leaves]
    if not level:
        return sha256(b"")
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def verify_inclusion(data: bytes, index: int, size: int, path: tuple, root: bytes) -> bool:
    if not 0 <= index < size or any(len(p) != 32 for p in path):
        return False
    fn, sn, r = index, size - 1, leaf_hash(data)
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


# ---- Ed25519 with libsodium's acceptance rules (doc section 4)

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, -1, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)
_IDENTITY = (0, 1, 1, 0)


def _point_add(a: tuple, b: tuple) -> tuple:
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    aa = (y1 - x1) * (y2 - x2) % _P
    bb = (y1 + x1) * (y2 + x2) % _P
    cc = 2 * t1 * t2 * _D % _P
    dd = 2 * z1 * z2 % _P
    e, f, g, h = bb - aa, dd - cc, dd + cc, bb + aa
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _point_mul(k: int, point: tuple) -> tuple:
    acc = _IDENTITY
    while k:
        if k & 1:
            acc = _point_add(acc, point)
        point = _point_add(point, point)
        k >>= 1
    return acc


def _is_identity(point: tuple) -> bool:
    return point[0] % _P == 0 and (point[1] - point[2]) % _P == 0


def _decode_point(raw: bytes) -> tuple | None:
    """The point a 32-byte encoding names, or None when it is not a canonical curve point."""
    if len(raw) != 32:
        return None
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)
    sign = raw[31] >> 7
    if y >= _P:
        return None
    x2 = (y * y - 1) * pow(_D * y * y + 1, -1, _P) % _P
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P:
        return None
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = _P - x
    return (x, y, 1, x * y % _P)


@functools.cache
def valid_public_key(raw: bytes) -> bool:
    """Canonical, on the curve, not of small order, in the prime-order subgroup."""
    point = _decode_point(raw)
    return (
        point is not None
        and not _is_identity(_point_mul(8, point))
        and _is_identity(_point_mul(_L, point))
    )


def ed25519_verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    if len(signature) != 64 or not valid_public_key(public_key):
        return False
    r = _decode_point(signature[:32])
    if r is None or _is_identity(_point_mul(8, r)):
        return False
    if int.from_bytes(signature[32:], "little") >= _L:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except InvalidSignature:
        return False
    return True


# ---- Digests, committee, certificates (doc sections 4, 5, 7, 12)


def domain_tag(chain_id: str, kind: str) -> bytes:
    return cbor_encode(["bft-sig", 1, chain_id, kind])


def statement_digest(chain_id: str, kind: str, payload: bytes) -> bytes:
    return sha256(domain_tag(chain_id, kind) + payload)


def genesis_hash(chain_id: str) -> bytes:
    return sha256(cbor_encode(["bft-genesis", 1, chain_id]))


def commit_statement(header: Header) -> bytes:
    payload = cbor_encode([header.protocol, header.view, header.height, header.hash()])
    return statement_digest(header.chain_id, "block/commit", payload)


@dataclass(frozen=True)
class CommitteeFile:
    chain_id: str
    keys: tuple[bytes, ...]
    protocol: str


def load_committee(path: Path) -> CommitteeFile:
    doc = tomllib.loads(Path(path).read_text("utf-8"))
    if doc.get("format") != "bft-committee-v1":
        raise Rejected("committee: wrong format")
    chain_id = doc.get("chain_id")
    if type(chain_id) is not str or not CHAIN_ID.fullmatch(chain_id):
        raise Rejected("committee: bad chain id")
    protocol = doc.get("protocol")
    if protocol not in PROTOCOLS or type(protocol) is not str:
        raise Rejected("committee: protocol must be pbft, hotstuff or raft")
    replicas = doc.get("replica")
    if type(replicas) is not list or not 1 <= len(replicas) <= 1024:
        raise Rejected("committee: needs 1 to 1024 [[replica]] tables")
    keys = []
    for k, entry in enumerate(replicas):
        if type(entry) is not dict or type(entry.get("id")) is not int or entry["id"] != k:
            raise Rejected(f"committee: replica {k} has a wrong id")
        text = entry.get("public_key")
        if type(text) is not str or not re.fullmatch(r"[0-9a-fA-F]{64}", text):
            raise Rejected(f"committee: replica {k} public key is not 64 hex digits")
        key = bytes.fromhex(text)
        if not valid_public_key(key):
            raise Rejected(f"committee: replica {k} public key is not a valid Ed25519 key")
        keys.append(key)
    if len(set(keys)) != len(keys):
        raise Rejected("committee: two replicas share a key")
    return CommitteeFile(chain_id, tuple(keys), protocol)


def threshold(protocol: str, n: int) -> int:
    if protocol in BFT:
        f = (n - 1) // 3
        return (n + f + 2) // 2  # ceil((n + f + 1) / 2)
    return n // 2 + 1


def verify_certificate(
    header: Header, cert: Certificate, committee: CommitteeFile, *, protocol: str | None = None
) -> None:
    # The committee file fixes the rule; the header cannot choose a weaker one (section 8).
    allowed = BFT if committee.protocol in BFT else {committee.protocol}
    if header.protocol not in allowed:
        raise Rejected(
            f"height {header.height}: protocol {header.protocol!r}; "
            f"the committee runs {committee.protocol!r}"
        )
    if protocol is not None and header.protocol != protocol:
        raise Rejected(f"height {header.height}: protocol {header.protocol!r}, not {protocol!r}")
    if header.proposer >= len(committee.keys):
        raise Rejected(f"height {header.height}: proposer is not a committee member")
    if committee.chain_id != header.chain_id:
        raise Rejected(f"height {header.height}: committee of another chain")
    statement = commit_statement(header)
    if cert.statement != statement:
        raise Rejected(f"height {header.height}: certificate is over another statement")
    n = len(committee.keys)
    if len(cert.signers) != (n + 7) // 8:
        raise Rejected(f"height {header.height}: signer bitmap does not fit the committee")
    ids = cert.signer_ids
    if any(i >= n for i in ids):
        raise Rejected(f"height {header.height}: signer bitmap names an unknown replica")
    t = threshold(committee.protocol, n)
    if len(ids) < t:
        raise Rejected(f"height {header.height}: {len(ids)} signers, {t} required")
    if committee.protocol in BFT or cert.signatures:
        if len(cert.signatures) != len(ids):
            raise Rejected(f"height {header.height}: certificate carries no signatures")
        for i, sig in zip(ids, cert.signatures, strict=True):
            if not ed25519_verify(committee.keys[i], statement, sig):
                raise Rejected(f"height {header.height}: invalid signature from replica {i}")


def verify_transaction(data: bytes, chain_id: str) -> bool:
    """Decode a transaction; True when it is signed (and its signature verified)."""
    tx = parse_tx(data)
    if not tx.signature:
        return False
    body = cbor_encode([tx.client, tx.seq, tx.payload])
    if not ed25519_verify(tx.client, statement_digest(chain_id, "client/tx", body), tx.signature):
        raise Rejected("invalid client signature")
    return True


# ---- The ledger directory (doc section 11)

SEGMENT_NAME = re.compile(r"[0-9]{20}\.seg")
MAX_RECORD = 1 << 30


def read_manifest(directory: Path) -> str:
    doc = tomllib.loads((directory / "LEDGER").read_text("utf-8"))
    if doc.get("format") != "bft-ledger-v1":
        raise Rejected("manifest: wrong format")
    chain_id = doc.get("chain_id")
    if type(chain_id) is not str or not CHAIN_ID.fullmatch(chain_id):
        raise Rejected("manifest: bad chain id")
    return chain_id


def _record_at(data: bytes, offset: int) -> bytes:
    if offset + 12 > len(data):
        raise Rejected("truncated record header")
    magic, length, crc = struct.unpack_from(">4sII", data, offset)
    if magic != b"BFTR":
        raise Rejected("bad record magic")
    if length > MAX_RECORD:
        raise Rejected("implausible record length")
    if offset + 12 + length > len(data):
        raise Rejected("truncated record")
    payload = data[offset + 12 : offset + 12 + length]
    if zlib.crc32(data[offset + 4 : offset + 8] + payload) != crc:
        raise Rejected("checksum mismatch")
    return payload


def _good_record_after(data: bytes, start: int) -> bool:
    i = data.find(b"BFTR", start)
    while i != -1:
        try:
            _record_at(data, i)
            return True
        except Rejected:
            i = data.find(b"BFTR", i + 1)
    return False


def read_blocks(directory: Path) -> tuple[str, list[tuple[BlockRec, bytes]]]:
    """The manifest's chain id and every block with its hash; StoreDamage at the first bad byte."""
    chain_id = read_manifest(directory)
    names = sorted(p.name for p in directory.iterdir() if SEGMENT_NAME.fullmatch(p.name))
    blocks: list[tuple[BlockRec, bytes]] = []
    prev = genesis_hash(chain_id)
    for n, name in enumerate(names):
        data = (directory / name).read_bytes()
        offset = 0
        try:
            if len(data) < 16:
                raise Rejected("truncated segment header")
            magic, first = struct.unpack_from(">8sQ", data, 0)
            if magic != b"BFTLSEG1" or first != int(name[:20]) or first != len(blocks) + 1:
                raise Rejected("bad segment header")
            offset = 16
            while offset < len(data):
                payload = _record_at(data, offset)
                block = parse_block(cbor_decode(payload))
                h = block.header
                if h.chain_id != chain_id:
                    raise Rejected("block of another chain")
                if h.height != len(blocks) + 1:
                    raise Rejected(f"block claims height {h.height}")
                if h.prev_hash != prev:
                    raise Rejected("previous-hash link is broken")
                if merkle_root(block.txs) != h.tx_root:
                    raise Rejected("Merkle root does not match the transactions")
                prev = h.hash()
                blocks.append((block, prev))
                offset += 12 + len(payload)
        except Rejected as exc:
            follows = n + 1 < len(names) or _good_record_after(data, offset + 1)
            kind = "corrupt" if follows else "torn-tail"
            raise StoreDamage(kind, len(blocks) + 1, name, offset, str(exc)) from None
    return chain_id, blocks


@dataclass(frozen=True)
class Summary:
    chain_id: str
    height: int
    last_hash: bytes
    transactions: int
    signed_transactions: int
    positions: dict[bytes, tuple[int, int]]


def verify_ledger(
    directory: Path, committee: CommitteeFile, *, protocol: str | None = None
) -> Summary:
    chain_id, blocks = read_blocks(Path(directory))
    signed = 0
    positions: dict[bytes, tuple[int, int]] = {}
    for block, block_hash in blocks:
        h = block.header
        assert block_hash == h.hash()
        verify_certificate(h, block.certificate, committee, protocol=protocol)
        for i, raw in enumerate(block.txs):
            try:
                signed += verify_transaction(raw, chain_id)
            except Rejected as exc:
                raise Rejected(f"height {h.height}, transaction {i}: {exc}") from None
            positions[leaf_hash(raw)] = (h.height, i)
    last = blocks[-1][1] if blocks else genesis_hash(chain_id)
    total = sum(len(b.txs) for b, _ in blocks)
    return Summary(chain_id, len(blocks), last, total, signed, positions)


def verify_receipt(
    data: bytes, committee: CommitteeFile, *, protocol: str | None = None
) -> tuple[bytes, int, int]:
    """(txid, height, index) proven by a receipt; Rejected otherwise."""
    r = parse_receipt(data)
    if not verify_inclusion(r.tx, r.index, r.header.tx_count, r.path, r.header.tx_root):
        raise Rejected("the Merkle path does not lead to the header's root")
    verify_certificate(r.header, r.certificate, committee, protocol=protocol)
    verify_transaction(r.tx, r.header.chain_id)
    return leaf_hash(r.tx), r.header.height, r.index


# =============================================================================================
# Tests. Only below this line may the project's modules be imported (inside functions).

PROJECT_MODULES = {"crypto", "ledger", "bft", "network", "cbor2", "nacl"}
CHAIN = "audit-1"
TX_COUNTS = (1, 3, 0, 5, 2, 7, 4, 6)


def test_the_verifier_imports_nothing_of_the_project() -> None:
    source = Path(__file__).read_text("utf-8")
    marker = source.index("# Tests. Only below this line")
    marker_line = source[:marker].count("\n") + 1
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots = {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots = {(node.module or "").split(".")[0]}
        else:
            continue
        if roots & PROJECT_MODULES:
            assert node.lineno > marker_line and node.col_offset > 0, (
                f"line {node.lineno}: project import in the independent verifier"
            )


@dataclass(frozen=True)
class Built:
    directory: Path
    committee_file: Path
    seeds: tuple[bytes, ...]
    receipts: dict[bytes, bytes]
    height: int
    last_hash: bytes
    transactions: int
    segments: int


def build_ledger(root: Path) -> Built:
    """A pbft ledger of a committee of 4, blocks signed by 3, over several segments."""
    from crypto import Committee, QuorumCertificate, SigningKey
    from crypto.keyfiles import write_committee
    from ledger import Block, Transaction, genesis_hash, make_header
    from ledger.store import LedgerStore

    seeds = tuple(hashlib.sha256(b"replica %d" % i).digest() for i in range(4))
    keys = [SigningKey(s) for s in seeds]
    committee = Committee(CHAIN, [k.public_key for k in keys])
    committee_file = root / "committee.toml"
    write_committee(committee_file, committee)
    clients = [SigningKey(hashlib.sha256(b"client %d" % i).digest()) for i in range(2)]
    prev = genesis_hash(CHAIN)
    blocks = []
    seq = 0
    for height, count in enumerate(TX_COUNTS, start=1):
        txs = []
        for i in range(count):
            seq += 1
            payload = bytes([height, i]) * 90
            if i % 2 == 0:
                tx = Transaction.signed(clients[(height + i) % 2], CHAIN, seq, payload)
            else:
                tx = Transaction(
                    client=b"tls-client-%d" % i, seq=seq, payload=payload, signature=b""
                )
            txs.append(tx.encode())
        header = make_header(
            chain_id=CHAIN,
            height=height,
            prev_hash=prev,
            txs=txs,
            protocol="pbft",
            view=height // 3,
            proposer=height % 4,
        )
        statement = header.commit_statement()
        signers = [i for i in range(4) if i != height % 4]
        cert = QuorumCertificate.from_votes(
            statement, [(i, keys[i].sign_digest(statement)) for i in signers], 4
        )
        blocks.append(Block(header=header, txs=tuple(txs), certificate=cert))
        prev = header.hash()
    directory = root / "ledger"
    with LedgerStore.open(directory, chain_id=CHAIN, segment_size=4096) as store:
        store.extend(blocks[:3])
        store.extend(blocks[3:])
        summary = store.verify(committee, check_transactions=True)
        receipts = {}
        for block in blocks:
            for raw in block.txs:
                txid = hashlib.sha256(b"\x00" + raw).digest()
                receipts[txid] = store.receipt(txid).encode()
        segments = store.statistics().segments
    return Built(
        directory,
        committee_file,
        seeds,
        receipts,
        summary.height,
        summary.last_hash,
        summary.transactions,
        segments,
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return build_ledger(tmp_path_factory.mktemp("ledger-format"))


@pytest.fixture
def copy(built: Built, tmp_path: Path) -> Path:
    """A copy of the ledger's format files (manifest and segments), to tamper with."""
    target = tmp_path / "copy"
    target.mkdir()
    for p in built.directory.iterdir():
        if p.name == "LEDGER" or SEGMENT_NAME.fullmatch(p.name):
            shutil.copyfile(p, target / p.name)
    return target


def segments_of(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if SEGMENT_NAME.fullmatch(p.name))


def rewrite_record(segment: Path, index: int, edit) -> None:
    """Replace record ``index`` of ``segment`` by ``edit(payload)``, with a fresh length and CRC."""
    data = segment.read_bytes()
    offset = 16
    for _ in range(index):
        offset += 12 + struct.unpack_from(">I", data, offset + 4)[0]
    length = struct.unpack_from(">I", data, offset + 4)[0]
    payload = edit(data[offset + 12 : offset + 12 + length])
    size = len(payload).to_bytes(4, "big")
    frame = b"BFTR" + size + zlib.crc32(size + payload).to_bytes(4, "big") + payload
    segment.write_bytes(data[:offset] + frame + data[offset + 12 + length :])


# ---- Acceptance


def test_independent_verifier_accepts_the_ledger(built: Built) -> None:
    assert built.segments >= 2
    assert len(segments_of(built.directory)) == built.segments
    committee = load_committee(built.committee_file)
    summary = verify_ledger(built.directory, committee, protocol="pbft")
    assert summary.chain_id == CHAIN
    assert summary.height == built.height == len(TX_COUNTS)
    assert summary.last_hash == built.last_hash
    assert summary.transactions == built.transactions == sum(TX_COUNTS)
    assert 0 < summary.signed_transactions < summary.transactions
    assert set(summary.positions) == set(built.receipts)


def test_segments_start_where_the_previous_one_ended(built: Built) -> None:
    expected = 1
    for segment in segments_of(built.directory):
        data = segment.read_bytes()
        assert data[:8] == b"BFTLSEG1"
        first = struct.unpack_from(">Q", data, 8)[0]
        assert first == int(segment.name[:20]) == expected
        offset = 16
        while offset < len(data):
            offset += 12 + len(_record_at(data, offset))
            expected += 1
        assert offset == len(data)
    assert expected == len(TX_COUNTS) + 1


def test_independent_verifier_accepts_every_receipt(built: Built) -> None:
    committee = load_committee(built.committee_file)
    summary = verify_ledger(built.directory, committee, protocol="pbft")
    for txid, receipt in built.receipts.items():
        proven, height, index = verify_receipt(receipt, committee, protocol="pbft")
        assert proven == txid
        assert (height, index) == summary.positions[txid]


# ---- Rejection of tampered input


def test_flipped_bit_in_a_record_payload_is_rejected(built: Built, copy: Path) -> None:
    from ledger.store import LedgerStore

    first = segments_of(copy)[0]
    data = bytearray(first.read_bytes())
    data[16 + 12 + 40] ^= 0x04  # inside the first block's header
    first.write_bytes(bytes(data))
    committee = load_committee(built.committee_file)
    with pytest.raises(StoreDamage) as caught:
        verify_ledger(copy, committee, protocol="pbft")
    assert caught.value.kind == "corrupt"
    assert (caught.value.height, caught.value.offset) == (1, 16)
    assert "checksum" in caught.value.reason
    # The store agrees: damage in the middle, nothing truncated, nothing served.
    with LedgerStore.open(copy, chain_id=CHAIN) as store:
        assert store.damage is not None and store.damage.height == 1
        assert store.height == 0
    assert first.read_bytes() == bytes(data)


def test_flipped_bit_with_a_fixed_checksum_breaks_the_merkle_root(built: Built, copy: Path) -> None:
    def flip_in_a_transaction(payload: bytes) -> bytes:
        block = parse_block(cbor_decode(payload))
        at = payload.index(block.txs[0]) + len(block.txs[0]) - 70
        return payload[:at] + bytes([payload[at] ^ 1]) + payload[at + 1 :]

    rewrite_record(segments_of(copy)[0], 1, flip_in_a_transaction)
    with pytest.raises(StoreDamage, match="Merkle root") as caught:
        verify_ledger(copy, load_committee(built.committee_file), protocol="pbft")
    assert caught.value.height == 2


def test_truncated_last_record_is_a_torn_tail(built: Built, copy: Path) -> None:
    from ledger.store import LedgerStore

    last = segments_of(copy)[-1]
    size = last.stat().st_size
    with open(last, "r+b") as fh:
        fh.truncate(size - 10)
    with pytest.raises(StoreDamage) as caught:
        verify_ledger(copy, load_committee(built.committee_file), protocol="pbft")
    assert caught.value.kind == "torn-tail"
    assert caught.value.height == len(TX_COUNTS)
    with LedgerStore.open(copy, chain_id=CHAIN) as store:
        assert store.damage is None
        assert store.height == len(TX_COUNTS) - 1
        assert store.tail_dropped == size - 10 - caught.value.offset
    assert last.stat().st_size == caught.value.offset


def _resign(payload: bytes, replace) -> bytes:
    """Re-encode a block record after ``replace(signer_ids, signatures, statement)``."""
    value = cbor_decode(payload)
    cert = value[4]
    ids = parse_certificate(cert).signer_ids
    signers, signatures = replace(ids, list(cert[4]), cert[2])
    value[4] = [0x01, 1, cert[2], signers, signatures]
    return cbor_encode(value)


def test_signature_from_the_wrong_key_is_rejected(built: Built, copy: Path) -> None:
    from crypto.keyfiles import load_committee as project_load_committee
    from ledger import BlockError
    from ledger.store import LedgerStore

    outsider = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))

    def forge(ids, signatures, statement):
        signatures[1] = outsider.sign(statement)
        return bytes([sum(1 << i for i in ids)]), signatures

    rewrite_record(segments_of(copy)[0], 1, lambda p: _resign(p, forge))
    committee = load_committee(built.committee_file)
    read_blocks(copy)  # the records themselves are sound
    with pytest.raises(Rejected, match="height 2: invalid signature from replica 1"):
        verify_ledger(copy, committee, protocol="pbft")
    # The project's verifier refuses it too.
    project_committee = project_load_committee(built.committee_file)
    with (
        LedgerStore.open(copy, chain_id=CHAIN, readonly=True) as store,
        pytest.raises(BlockError, match="invalid signature from replica 1"),
    ):
        store.verify(project_committee)


def test_signature_of_another_member_in_the_wrong_slot_is_rejected(
    built: Built, copy: Path
) -> None:
    def swap(ids, signatures, statement):
        signatures[0], signatures[1] = signatures[1], signatures[0]
        return bytes([sum(1 << i for i in ids)]), signatures

    rewrite_record(segments_of(copy)[0], 0, lambda p: _resign(p, swap))
    with pytest.raises(Rejected, match="height 1: invalid signature"):
        verify_ledger(copy, load_committee(built.committee_file), protocol="pbft")


def test_too_few_signers_are_rejected(built: Built, copy: Path) -> None:
    def drop(ids, signatures, statement):
        return bytes([sum(1 << i for i in ids[:2])]), signatures[:2]

    rewrite_record(segments_of(copy)[0], 0, lambda p: _resign(p, drop))
    with pytest.raises(Rejected, match="2 signers, 3 required"):
        verify_ledger(copy, load_committee(built.committee_file), protocol="pbft")


@pytest.mark.parametrize(
    ("bitmap", "reason"),
    [(b"\x0b\x00", "does not fit the committee"), (b"\x13", "names an unknown replica")],
)
def test_malformed_signer_bitmaps_are_rejected(
    built: Built, copy: Path, bitmap: bytes, reason: str
) -> None:
    rewrite_record(segments_of(copy)[0], 0, lambda p: _resign(p, lambda i, s, _: (bitmap, s)))
    with pytest.raises(Rejected, match=reason):
        verify_ledger(copy, load_committee(built.committee_file), protocol="pbft")


def _receipt_with_path(built: Built) -> bytes:
    """The receipt of a first transaction whose path has at least two hashes."""
    return next(
        r
        for r in built.receipts.values()
        if parse_receipt(r).index == 0 and len(parse_receipt(r).path) >= 2
    )


def test_receipt_with_a_wrong_path_element_is_rejected(built: Built) -> None:
    committee = load_committee(built.committee_file)
    receipt = _receipt_with_path(built)
    verify_receipt(receipt, committee, protocol="pbft")
    for k in range(len(parse_receipt(receipt).path)):
        value = cbor_decode(receipt)
        path = value[6]
        path[k] = path[k][:5] + bytes([path[k][5] ^ 0x80]) + path[k][6:]
        with pytest.raises(Rejected, match="Merkle path"):
            verify_receipt(cbor_encode(value), committee, protocol="pbft")


def test_receipt_with_a_wrong_index_or_foreign_certificate_is_rejected(built: Built) -> None:
    committee = load_committee(built.committee_file)
    receipt = _receipt_with_path(built)
    value = cbor_decode(receipt)
    value[5] ^= 1
    with pytest.raises(Rejected, match="Merkle path"):
        verify_receipt(cbor_encode(value), committee, protocol="pbft")
    other = next(r for r in built.receipts.values() if r[:200] != receipt[:200])
    value = cbor_decode(receipt)
    value[3] = cbor_decode(other)[3]
    with pytest.raises(Rejected, match="another statement"):
        verify_receipt(cbor_encode(value), committee, protocol="pbft")


def _forged_raft_receipt(chain_id: str) -> bytes:
    """A receipt anyone can write: a 'raft' header with an unsigned acknowledgement set."""
    tx = cbor_encode([0x12, 1, b"mallory", 1, b"I was never ordered", b""])
    header = Header(chain_id, 99, bytes(32), merkle_root([tx]), 1, "raft", 0, 0)
    cert = [0x01, 1, commit_statement(header), bytes([0b0111]), []]
    return cbor_encode(
        [0x13, 1, cbor_decode(header.encode()), cert, tx, 0, []]  # index 0, empty path
    )


def test_raft_labelled_receipt_is_rejected_by_a_bft_committee(built: Built) -> None:
    committee = load_committee(built.committee_file)
    forged = _forged_raft_receipt(CHAIN)
    with pytest.raises(Rejected, match="the committee runs 'pbft'"):
        verify_receipt(forged, committee)
    # What the document says a raft acknowledgement set is worth: with a raft committee file,
    # anyone's unsigned set passes every rule.
    verify_receipt(forged, CommitteeFile(committee.chain_id, committee.keys, "raft"))


def test_project_rejects_a_raft_labelled_receipt_against_a_bft_committee(built: Built) -> None:
    from crypto.keyfiles import load_committee as project_load_committee
    from ledger import Receipt, ReceiptError

    receipt = Receipt.decode(_forged_raft_receipt(CHAIN))
    with pytest.raises(ReceiptError):
        receipt.verify(project_load_committee(built.committee_file))


# ---- The decoder and the key rules


@pytest.mark.parametrize(
    "data",
    [
        b"\x18\x05",  # 5 in a long form
        b"\x19\x00\xff",  # 255 in a long form
        b"\x59\x00\x01x",  # a byte-string length in a long form
        b"\x5f\x41x\xff",  # indefinite byte string
        b"\x9f\x00\xff",  # indefinite array
        b"\xc0\x00",  # a tag
        b"\xa0",  # a map
        b"\x20",  # a negative integer
        b"\xf4",  # false
        b"\xf9\x00\x00",  # a float
        b"\x1c",  # reserved additional information
        b"\x00\x00",  # trailing byte
        b"\x58\x20" + bytes(31),  # truncated
        b"\x62\xc3\x28",  # invalid UTF-8
        b"\x63\xed\xa0\x80",  # an encoded surrogate
        b"\x81" * 17 + b"\x00",  # too deep
    ],
)
def test_decoder_refuses_what_the_profile_excludes(data: bytes) -> None:
    with pytest.raises(Rejected):
        cbor_decode(data)


def test_decoder_and_encoder_agree_with_the_project() -> None:
    from crypto import encode_value

    values = [0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1, b"", b"x" * 300,
              "demo", ["bft-sig", 1, "demo", "block/commit"], [[[b"\x00"]], 7, ""]]  # fmt: skip
    for value in values:
        encoded = encode_value(value)
        assert cbor_encode(value) == encoded
        assert cbor_decode(encoded) == (list(value) if isinstance(value, tuple) else value)


def test_key_rules_agree_with_the_project() -> None:
    from crypto import InvalidKey, PublicKey, SigningKey

    def encode(point: tuple) -> bytes:
        zi = pow(point[2], -1, _P)
        x, y = point[0] * zi % _P, point[1] * zi % _P
        return (y | (x & 1) << 255).to_bytes(32, "little")

    good = SigningKey(bytes(range(32))).public_key.raw
    torsion = None
    for y in range(2, 50):  # a point of order 8, from the cofactor part of some curve point
        point = _decode_point(y.to_bytes(32, "little"))
        if point is not None and not _is_identity(_point_mul(4, _point_mul(_L, point))):
            torsion = _point_mul(_L, point)
            break
    assert torsion is not None
    mixed = encode(_point_add(_decode_point(good), torsion))
    non_canonical = (_P + 1).to_bytes(32, "little")  # y = p + 1, that is 1: the identity
    cases = {
        good: True,
        bytes([1]) + bytes(31): False,  # the identity
        encode(torsion): False,  # small order
        mixed: False,  # on the curve, outside the prime-order subgroup
        non_canonical: False,
    }
    for raw, expected in cases.items():
        assert valid_public_key(raw) is expected
        try:
            PublicKey(raw)
            accepted = True
        except InvalidKey:
            accepted = False
        assert accepted is expected, raw.hex()


# ---- The worked example of the document (section 13), byte for byte
# These constants are copied from docs/ledger-format.md, section 13 "Worked example";
# test_doc_holds_the_worked_example checks that the document still shows them.

EX_TAG_COMMIT = "84676266742d736967016464656d6f6c626c6f636b2f636f6d6d6974"
EX_TAG_TX = "84676266742d736967016464656d6f69636c69656e742f7478"
EX_GENESIS = "8b339ccb38218f4bdc36fc2df888cb792dc842ad9d49c251cbc8a6becd04af77"
EX_REPLICA_KEYS = (
    "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c",
    "8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394",
    "ed4928c628d1c2c6eae90338905995612959273a5c63f93636c14614ac8737d1",
    "ca93ac1705187071d67b83c7ff0efe8108e8ec4530575d7726879333dbdabe7c",
)
EX_CLIENT_KEY = "acdcc8494d458f44a7aaac1d6a84ec624daee88436db2ae26e67ba645a106228"
EX_TX = (
    "86120145616c696365014568656c6c6f40",
    "86120143626f62074040",
    "8612015820acdcc8494d458f44a7aaac1d6a84ec624daee88436db2ae26e67ba"
    "645a106228014570617920355840cce6fb381551e68457f60d733a4676b1d8eb"
    "b0be9f33e9f6765b5ac5eead0228ea8ed3e005eda354b819eda9dece4f9edda3"
    "be0722327df97dfffe5f508fb00d",
)
EX_TX2_DIGEST = "a665c490b15339a43fddd6cf7d4567a8a57099a8c08abd88845073207bef14ae"
EX_LEAVES = (
    "86e521166cbfa5ff733f3ee09243ffe980760d5c7620fa398d937d927f042ed1",
    "3c25c20583c8dc5507d47e2ef7115882e6fd7f67c1583e35244571e7dfdc53e1",
    "1e2e84df85d83b3980045e6d99c9c47b12b2a2325d92f2b8a76e3e1396b0a2b7",
)
EX_NODE01 = "4ef8af6d7d5e09a5730c77f3885155e05eb347ef08e89722afd778614855d5dc"
EX_ROOT = "83236c096bb8fd7f40b593f2773f576331c3d771704a8f0f4408292e7efe8901"
EX_HEADER = (
    "8a10016464656d6f0158208b339ccb38218f4bdc36fc2df888cb792dc842ad9d"
    "49c251cbc8a6becd04af77582083236c096bb8fd7f40b593f2773f576331c3d7"
    "71704a8f0f4408292e7efe89010364706266740001"
)
EX_BLOCK_HASH = "fa5a3c3932caeddcc5279b540e4b711f044439097d54161d14393a859e9d7ce4"
EX_COMMIT_PAYLOAD = (
    "84647062667400015820fa5a3c3932caeddcc5279b540e4b711f044439097d54161d14393a859e9d7ce4"
)
EX_STATEMENT = "fdb2dc44517300e2e13e0003583416fa96ac6fcf05ea7ea32e7db9dff407c16d"
EX_SEGMENT = (
    "4246544c53454731000000000000000142465452000001d4565a87158511018a"
    "10016464656d6f0158208b339ccb38218f4bdc36fc2df888cb792dc842ad9d49"
    "c251cbc8a6becd04af77582083236c096bb8fd7f40b593f2773f576331c3d771"
    "704a8f0f4408292e7efe89010364706266740001835186120145616c69636501"
    "4568656c6c6f404a86120143626f62074040586e8612015820acdcc8494d458f"
    "44a7aaac1d6a84ec624daee88436db2ae26e67ba645a10622801457061792035"
    "5840cce6fb381551e68457f60d733a4676b1d8ebb0be9f33e9f6765b5ac5eead"
    "0228ea8ed3e005eda354b819eda9dece4f9edda3be0722327df97dfffe5f508f"
    "b00d8501015820fdb2dc44517300e2e13e0003583416fa96ac6fcf05ea7ea32e"
    "7db9dff407c16d410b835840001e8cb2d2cfb3867e34b49796508fb525493b77"
    "f3d884dd0f88cb50bfa999ab3cff6f5fb110dab16503cb443a9ab9f140d4d246"
    "f20feb8eabdf060dbb953c0f5840c9fdd37f8528cb5ba1d79a36c4f7274c2bf6"
    "706685c36f1238abc7e526d16786f7912c0b35118f321f9c8756ce96a6b92a91"
    "163be492479688f323388461ec0d584000fc1052cba39e2ab89cdc2ed24aade1"
    "7f2c4f5c12c471844469575d1b6cb93d0cdba2abf1d7bf87453d15b82364a865"
    "db8d1e802c5074dcd350e7617da9e208"
)
EX_MANIFEST = b'format = "bft-ledger-v1"\nchain_id = "demo"\n'


def _committee_toml(chain_id: str, keys: tuple[str, ...]) -> str:
    lines = ['format = "bft-committee-v1"', f'chain_id = "{chain_id}"', 'protocol = "pbft"']
    for i, key in enumerate(keys):
        lines += ["", "[[replica]]", f"id = {i}", f'public_key = "{key}"']
    return "\n".join(lines) + "\n"


def test_doc_holds_the_worked_example() -> None:
    text = DOC.read_text("utf-8")
    stream = re.sub(r"\s+", "", text)
    constants = [EX_TAG_COMMIT, EX_TAG_TX, EX_GENESIS, *EX_REPLICA_KEYS, EX_CLIENT_KEY, *EX_TX,
                 EX_TX2_DIGEST, *EX_LEAVES, EX_NODE01, EX_ROOT, EX_HEADER, EX_BLOCK_HASH,
                 EX_COMMIT_PAYLOAD, EX_STATEMENT, EX_SEGMENT]  # fmt: skip
    for constant in constants:
        assert constant in stream, constant[:16]
    assert EX_MANIFEST.decode() in text
    assert "0xcbf43926" in text and zlib.crc32(b"123456789") == 0xCBF43926


def test_worked_example_computed_independently(tmp_path: Path) -> None:
    assert domain_tag("demo", "block/commit").hex() == EX_TAG_COMMIT
    assert domain_tag("demo", "client/tx").hex() == EX_TAG_TX
    assert genesis_hash("demo").hex() == EX_GENESIS
    txs = [bytes.fromhex(t) for t in EX_TX]
    assert [leaf_hash(t).hex() for t in txs] == list(EX_LEAVES)
    leaves = [bytes.fromhex(h) for h in EX_LEAVES]
    assert node_hash(leaves[0], leaves[1]).hex() == EX_NODE01
    assert merkle_root(txs).hex() == EX_ROOT
    proofs = {0: (leaves[1], leaves[2]), 1: (leaves[0], leaves[2]), 2: (bytes.fromhex(EX_NODE01),)}
    for index, path in proofs.items():
        assert verify_inclusion(txs[index], index, 3, path, bytes.fromhex(EX_ROOT))
    tx2 = parse_tx(txs[2])
    body = cbor_encode([tx2.client, tx2.seq, tx2.payload])
    assert statement_digest("demo", "client/tx", body).hex() == EX_TX2_DIGEST
    assert verify_transaction(txs[2], "demo") is True

    segment = bytes.fromhex(EX_SEGMENT)
    assert segment[:28].hex() == (
        "4246544c53454731" "0000000000000001" "42465452" "000001d4" "565a8715"
    )  # fmt: skip
    payload = _record_at(segment, 16)
    assert len(payload) == 468 and len(segment) == 496
    block = parse_block(cbor_decode(payload))
    assert block.header.encode().hex() == EX_HEADER
    assert payload[:3] == b"\x85\x11\x01"
    assert payload[3 : 3 + len(EX_HEADER) // 2].hex() == EX_HEADER  # the slice is the header
    assert block.header.hash().hex() == EX_BLOCK_HASH
    payload_hex = cbor_encode(["pbft", 0, 1, block.header.hash()]).hex()
    assert payload_hex == EX_COMMIT_PAYLOAD
    assert commit_statement(block.header).hex() == EX_STATEMENT
    assert block.certificate.signers == b"\x0b" and block.certificate.signer_ids == [0, 1, 3]

    ledger = tmp_path / "ledger"
    ledger.mkdir()
    (ledger / "LEDGER").write_bytes(EX_MANIFEST)
    (ledger / "00000000000000000001.seg").write_bytes(segment)
    committee_file = tmp_path / "committee.toml"
    committee_file.write_text(_committee_toml("demo", EX_REPLICA_KEYS))
    committee = load_committee(committee_file)
    summary = verify_ledger(ledger, committee, protocol="pbft")
    assert (summary.height, summary.last_hash.hex()) == (1, EX_BLOCK_HASH)
    assert (summary.transactions, summary.signed_transactions) == (3, 1)

    receipt = cbor_encode(
        [0x13, 1, cbor_decode(bytes.fromhex(EX_HEADER)), cbor_decode(payload)[4], txs[2], 2,
         [bytes.fromhex(EX_NODE01)]]
    )  # fmt: skip
    assert len(receipt) == 474
    assert verify_receipt(receipt, committee, protocol="pbft") == (leaves[2], 1, 2)


def build_worked_example(root: Path) -> tuple[bytes, bytes, str, bytes]:
    """The worked example made with the project's code: manifest, segment, committee, receipt."""
    from crypto import Committee, QuorumCertificate, SigningKey
    from crypto.keyfiles import committee_toml
    from ledger import Block, Transaction, genesis_hash, make_header
    from ledger.store import LedgerStore

    keys = [SigningKey(bytes([i + 1]) * 32) for i in range(4)]
    client = SigningKey(bytes([0xC1]) * 32)
    txs = [
        Transaction(client=b"alice", seq=1, payload=b"hello", signature=b"").encode(),
        Transaction(client=b"bob", seq=7, payload=b"", signature=b"").encode(),
        Transaction.signed(client, "demo", 1, b"pay 5").encode(),
    ]
    header = make_header(
        chain_id="demo",
        height=1,
        prev_hash=genesis_hash("demo"),
        txs=txs,
        protocol="pbft",
        view=0,
        proposer=1,
    )
    st = header.commit_statement()
    cert = QuorumCertificate.from_votes(st, [(i, keys[i].sign_digest(st)) for i in (0, 1, 3)], 4)
    with LedgerStore.open(root / "ledger", chain_id="demo") as store:
        store.extend([Block(header=header, txs=tuple(txs), certificate=cert)])
        receipt = store.receipt(hashlib.sha256(b"\x00" + txs[2]).digest()).encode()
    committee = committee_toml(Committee("demo", [k.public_key for k in keys]))
    manifest = (root / "ledger" / "LEDGER").read_bytes()
    segment = (root / "ledger" / "00000000000000000001.seg").read_bytes()
    return manifest, segment, committee, receipt


def test_project_reproduces_the_worked_example(tmp_path: Path) -> None:
    manifest, segment, committee, receipt = build_worked_example(tmp_path)
    assert manifest == EX_MANIFEST
    assert segment.hex() == EX_SEGMENT
    assert committee.endswith(_committee_toml("demo", EX_REPLICA_KEYS))
    doc = tomllib.loads(committee)
    assert [r["public_key"] for r in doc["replica"]] == list(EX_REPLICA_KEYS)
    parsed = parse_receipt(receipt)
    assert parsed.path == (bytes.fromhex(EX_NODE01),) and parsed.index == 2
    assert receipt[:3] == b"\x87\x13\x01" and len(receipt) == 474
