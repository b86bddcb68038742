"""Where a replica keeps evidence of equivocation: ``<data_dir>/evidence/``, one file each.

A file holds one canonical :class:`~bft.core.evidence.Evidence` record and is written to a
temporary name, fsynced, renamed into place and the directory fsynced, so a crash leaves either
the whole file or none. The name is ``<signer>-<digest>.evidence``, the digest of the pair, so
the same pair seen twice is kept once. At most ``max_kept`` files are kept: the first ones (the
earliest proof is as good as any later one), and later ones are counted, not saved.

Anyone can check a file offline: ``bft evidence verify FILE --committee committee.toml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bft.core.evidence import Evidence
from crypto import sha256
from crypto.codec import CodecError
from ledger.durable import replace_durably

SUFFIX = ".evidence"
MAX_FILE = 40 * 1024 * 1024


@dataclass(frozen=True)
class StoredEvidence:
    path: Path
    evidence: Evidence | None
    error: str = ""
    """Why the file could not be read (then ``evidence`` is ``None``)."""


def evidence_name(evidence: Evidence) -> str:
    digest = sha256(evidence.first + b"\x00" + evidence.second).hex()[:24]
    return f"{evidence.signer}-{digest}{SUFFIX}"


class EvidenceStore:
    def __init__(self, directory: Path, max_kept: int = 1000) -> None:
        self.directory = Path(directory)
        self.max_kept = max_kept
        self.directory.mkdir(parents=True, exist_ok=True)
        self._names = {p.name for p in self.directory.glob(f"*{SUFFIX}")}
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._names)

    def save(self, evidence: Evidence) -> Path | None:
        """Make ``evidence`` durable; ``None`` when it is already kept or the store is full."""
        name = evidence_name(evidence)
        if name in self._names:
            return None
        if len(self._names) >= self.max_kept:
            self.dropped += 1
            return None
        path = self.directory / name
        replace_durably(path, evidence.encode())
        self._names.add(name)
        return path


def read_evidence_file(path: Path) -> StoredEvidence:
    try:
        size = path.stat().st_size
        if size > MAX_FILE:
            return StoredEvidence(path, None, f"{size} bytes: too large for evidence")
        return StoredEvidence(path, Evidence.decode(path.read_bytes()))
    except OSError as exc:
        return StoredEvidence(path, None, f"cannot read: {exc.strerror or exc}")
    except CodecError as exc:
        return StoredEvidence(path, None, f"not an evidence record: {exc}")


def list_evidence(directory: Path) -> list[StoredEvidence]:
    """Every evidence file in ``directory`` (a missing directory holds none), oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    files = sorted(directory.glob(f"*{SUFFIX}"), key=lambda p: (p.stat().st_mtime, p.name))
    return [read_evidence_file(p) for p in files]
