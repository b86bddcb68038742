"""Key and committee files (TOML). The one module of ``crypto`` that touches the file system.

Secret key file (mode 0600; refused when group or others may read it, as ssh does)::

    # Ed25519 secret key of replica 0 of chain "demo". Keep private.
    format = "bft-secret-key-v1"
    chain_id = "demo"
    role = "replica"          # or "client"
    id = 0                    # replica id, or the client's name
    seed = "<64 hex digits>"

Committee file (public)::

    format = "bft-committee-v1"
    chain_id = "demo"
    protocol = "pbft"         # or "hotstuff", "raft": what certificates must look like

    [[replica]]
    id = 0
    public_key = "<64 hex digits>"

Every loading error is a :class:`KeyFileError` whose message is one line naming the file and,
where there is one, the key at fault.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .committee import PROTOCOLS, Committee
from .errors import InvalidKey, KeyFileError
from .keys import PublicKey, SigningKey, check_chain_id

SECRET_FORMAT = "bft-secret-key-v1"
COMMITTEE_FORMAT = "bft-committee-v1"
ROLES = ("replica", "client")


@dataclass(frozen=True, slots=True)
class SecretKeyFile:
    """A loaded secret key with what the file says it is for."""

    key: SigningKey
    chain_id: str
    role: str
    id: int | str


def _toml_str(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def write_private_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600, atomically and durably. Never overwrites."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise KeyFileError(path, "already exists; refusing to overwrite a key") from None
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def write_public_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (replacing any previous file) and durably."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_secret_key(
    path: Path, key: SigningKey, *, chain_id: str, role: str, id: int | str
) -> None:
    """Write a secret key file (mode 0600). Refuses to overwrite an existing file."""
    check_chain_id(chain_id)
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    who = f"replica {id}" if role == "replica" else f"client {id}"
    ident = str(id) if isinstance(id, int) else _toml_str(id)
    text = (
        f"# Ed25519 secret key of {who} of chain {_toml_str(chain_id)}. Keep private.\n"
        f"format = {_toml_str(SECRET_FORMAT)}\n"
        f"chain_id = {_toml_str(chain_id)}\n"
        f"role = {_toml_str(role)}\n"
        f"id = {ident}\n"
        f"seed = {_toml_str(key.seed.hex())}\n"
    )
    write_private_file(Path(path), text)


def committee_toml(committee: Committee) -> str:
    lines = [
        f"# Committee of chain {_toml_str(committee.chain_id)}: the replicas' public keys.",
        "# Public: give it to every replica and client of the chain.",
        f"format = {_toml_str(COMMITTEE_FORMAT)}",
        f"chain_id = {_toml_str(committee.chain_id)}",
        f"protocol = {_toml_str(committee.protocol)}",
    ]
    for i, key in enumerate(committee.members):
        lines += ["", "[[replica]]", f"id = {i}", f"public_key = {_toml_str(key.hex())}"]
    return "\n".join(lines) + "\n"


def write_committee(path: Path, committee: Committee) -> None:
    write_public_file(Path(path), committee_toml(committee))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise KeyFileError(path, "no such file") from None
    except PermissionError:
        raise KeyFileError(path, "permission denied") from None
    except IsADirectoryError:
        raise KeyFileError(path, "is a directory, not a file") from None
    except UnicodeDecodeError:
        raise KeyFileError(path, "not a text file") from None
    except tomllib.TOMLDecodeError as exc:
        raise KeyFileError(path, f"not valid TOML: {exc}") from None


def _require(doc: dict[str, Any], key: str, kind: type, path: Path, where: str = "") -> Any:
    name = f"{where}{key}"
    if key not in doc:
        raise KeyFileError(path, f"missing key '{name}'")
    value = doc[key]
    if kind is int and type(value) is not int:
        raise KeyFileError(path, f"'{name}' must be an integer")
    if kind is not int and not isinstance(value, kind):
        raise KeyFileError(path, f"'{name}' must be a {kind.__name__}")
    return value


def load_secret_key(path: Path) -> SecretKeyFile:
    """Load a secret key file, refusing one that group or others may read."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyFileError(path, "no such file") from None
    if not stat.S_ISREG(mode):
        raise KeyFileError(path, "not a regular file")
    if mode & 0o077:
        raise KeyFileError(
            path,
            f"permissions {stat.S_IMODE(mode):04o} let others read this secret key; "
            f"run: chmod 600 {path}",
        )
    doc = _read_toml(path)
    fmt = _require(doc, "format", str, path)
    if fmt != SECRET_FORMAT:
        raise KeyFileError(path, f"'format' is {fmt!r}, expected {SECRET_FORMAT!r}")
    chain_id = _require(doc, "chain_id", str, path)
    try:
        check_chain_id(chain_id)
    except ValueError as exc:
        raise KeyFileError(path, f"'chain_id': {exc}") from None
    role = _require(doc, "role", str, path)
    if role not in ROLES:
        raise KeyFileError(path, f"'role' must be one of {', '.join(ROLES)}")
    ident = _require(doc, "id", int if role == "replica" else str, path)
    seed_hex = _require(doc, "seed", str, path)
    if not re.fullmatch(r"[0-9a-fA-F]{64}", seed_hex):
        raise KeyFileError(path, "'seed' must be 64 hex digits (a 32-byte Ed25519 seed)")
    key = SigningKey(bytes.fromhex(seed_hex))
    return SecretKeyFile(key=key, chain_id=chain_id, role=role, id=ident)


def load_committee(path: Path) -> Committee:
    """Load and validate a committee file."""
    path = Path(path)
    doc = _read_toml(path)
    fmt = _require(doc, "format", str, path)
    if fmt != COMMITTEE_FORMAT:
        raise KeyFileError(path, f"'format' is {fmt!r}, expected {COMMITTEE_FORMAT!r}")
    chain_id = _require(doc, "chain_id", str, path)
    try:
        check_chain_id(chain_id)
    except ValueError as exc:
        raise KeyFileError(path, f"'chain_id': {exc}") from None
    protocol = _require(doc, "protocol", str, path)
    if protocol not in PROTOCOLS:
        raise KeyFileError(path, f"'protocol' must be one of {', '.join(PROTOCOLS)}")
    replicas = _require(doc, "replica", list, path)
    if not replicas:
        raise KeyFileError(path, "no [[replica]] entries")
    keys = []
    for position, entry in enumerate(replicas):
        where = f"replica[{position}]."
        if not isinstance(entry, dict):
            raise KeyFileError(path, f"replica[{position}] must be a table")
        rid = _require(entry, "id", int, path, where)
        if rid != position:
            raise KeyFileError(path, f"'{where}id' is {rid}; replica ids must be 0, 1, 2, ...")
        try:
            keys.append(PublicKey.from_hex(_require(entry, "public_key", str, path, where)))
        except InvalidKey as exc:
            raise KeyFileError(path, f"'{where}public_key': {exc}") from None
    try:
        return Committee(chain_id, keys, protocol)
    except ValueError as exc:
        raise KeyFileError(path, str(exc)) from None
