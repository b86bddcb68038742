"""Key and committee files: modes, validation, and one-line errors that name the file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from crypto import Committee, SigningKey
from crypto.errors import KeyFileError
from crypto.keyfiles import (
    load_committee,
    load_secret_key,
    write_committee,
    write_secret_key,
)

KEYS = [SigningKey(bytes([i + 1]) * 32) for i in range(4)]


def test_secret_key_round_trip_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "replica-0.key"
    write_secret_key(path, KEYS[0], chain_id="alpha", role="replica", id=0)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_secret_key(path)
    assert loaded.key.public_key == KEYS[0].public_key
    assert (loaded.chain_id, loaded.role, loaded.id) == ("alpha", "replica", 0)


def test_client_key(tmp_path: Path) -> None:
    path = tmp_path / "client-ann.key"
    write_secret_key(path, KEYS[1], chain_id="alpha", role="client", id="ann")
    loaded = load_secret_key(path)
    assert (loaded.role, loaded.id) == ("client", "ann")


def test_secret_key_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    write_secret_key(path, KEYS[0], chain_id="alpha", role="replica", id=0)
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        write_secret_key(path, KEYS[1], chain_id="alpha", role="replica", id=0)
    assert load_secret_key(path).key.public_key == KEYS[0].public_key


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_readable_secret_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "k.key"
    write_secret_key(path, KEYS[0], chain_id="alpha", role="replica", id=0)
    os.chmod(path, mode)
    with pytest.raises(KeyFileError) as err:
        load_secret_key(path)
    message = str(err.value)
    assert str(path) in message and "chmod 600" in message and "\n" not in message


BAD_SECRETS = {
    "not toml": ("seed = [", "not valid TOML"),
    "no seed": (
        'format = "bft-secret-key-v1"\nchain_id = "a"\nrole = "replica"\nid = 0\n',
        "missing key 'seed'",
    ),
    "short seed": (
        'format = "bft-secret-key-v1"\nchain_id = "a"\nrole = "replica"\nid = 0\nseed = "abcd"\n',
        "'seed' must be 64 hex digits",
    ),
    "bad role": (
        'format = "bft-secret-key-v1"\nchain_id = "a"\nrole = "king"\nid = 0\nseed = "00"\n',
        "'role' must be one of",
    ),
    "wrong format": ('format = "other"\n', "'format' is 'other'"),
    "id not int": (
        'format = "bft-secret-key-v1"\nchain_id = "a"\nrole = "replica"\nid = "0"\nseed = "00"\n',
        "'id' must be an integer",
    ),
    "binary": ("\udcff", "not"),
}


@pytest.mark.parametrize("name", sorted(BAD_SECRETS))
def test_malformed_secret_key_files(tmp_path: Path, name: str) -> None:
    text, words = BAD_SECRETS[name]
    path = tmp_path / "bad.key"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    os.chmod(path, 0o600)
    with pytest.raises(KeyFileError) as err:
        load_secret_key(path)
    assert str(err.value).startswith(f"{path}: ")
    assert words in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="no such file"):
        load_secret_key(tmp_path / "nope.key")
    with pytest.raises(KeyFileError, match="no such file"):
        load_committee(tmp_path / "nope.toml")


@pytest.mark.parametrize("protocol", ["pbft", "hotstuff", "raft"])
def test_committee_round_trip(tmp_path: Path, protocol: str) -> None:
    committee = Committee("alpha", [k.public_key for k in KEYS], protocol)
    path = tmp_path / "committee.toml"
    write_committee(path, committee)
    loaded = load_committee(path)
    assert loaded == committee and loaded.protocol == protocol


def _committee_text(keys: list[str], ids: list[int] | None = None, chain: str = "alpha") -> str:
    ids = ids if ids is not None else list(range(len(keys)))
    out = f'format = "bft-committee-v1"\nchain_id = "{chain}"\nprotocol = "pbft"\n'
    for i, k in zip(ids, keys, strict=True):
        out += f'\n[[replica]]\nid = {i}\npublic_key = "{k}"\n'
    return out


GOOD_HEX = [k.public_key.hex() for k in KEYS]
BAD_COMMITTEES = {
    "gap in ids": (_committee_text(GOOD_HEX, [0, 1, 3, 4]), "replica[2].id"),
    "bad key": (_committee_text([GOOD_HEX[0], "zz"]), "replica[1].public_key"),
    "small order key": (_committee_text([GOOD_HEX[0], "01" + "00" * 31]), "small order"),
    "duplicate key": (_committee_text([GOOD_HEX[0], GOOD_HEX[0]]), "same public key"),
    "no replicas": (
        'format = "bft-committee-v1"\nchain_id = "alpha"\nprotocol = "raft"\n',
        "missing key 'replica'",
    ),
    "no protocol": ('format = "bft-committee-v1"\nchain_id = "alpha"\n', "missing key 'protocol'"),
    "unknown protocol": (
        _committee_text(GOOD_HEX).replace('"pbft"', '"paxos"'),
        "'protocol' must be one of",
    ),
    "spaced hex key": (
        _committee_text([GOOD_HEX[0][:10] + " " + GOOD_HEX[0][11:]]),
        "64 hex digits",
    ),
    "bad chain": (_committee_text(GOOD_HEX, chain="no spaces"), "chain_id"),
}


@pytest.mark.parametrize("name", sorted(BAD_COMMITTEES))
def test_malformed_committee_files(tmp_path: Path, name: str) -> None:
    text, words = BAD_COMMITTEES[name]
    path = tmp_path / "committee.toml"
    path.write_text(text)
    with pytest.raises(KeyFileError) as err:
        load_committee(path)
    assert str(err.value).startswith(f"{path}: ")
    assert words in str(err.value)
    assert "\n" not in str(err.value)
