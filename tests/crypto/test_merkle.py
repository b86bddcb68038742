"""Merkle trees against the recursive definition of RFC 6962, and inclusion proofs."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crypto import EMPTY_ROOT, MerkleTree, leaf_hash, merkle_root, node_hash, verify_inclusion


def rfc6962_root(leaves: list[bytes]) -> bytes:
    """MTH from RFC 6962 section 2.1, written as the RFC states it."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + rfc6962_root(leaves[:k]) + rfc6962_root(leaves[k:])).digest()


def rfc6962_path(m: int, leaves: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) from RFC 6962 section 2.1.1."""
    n = len(leaves)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return rfc6962_path(m, leaves[:k]) + [rfc6962_root(leaves[k:])]
    return rfc6962_path(m - k, leaves[k:]) + [rfc6962_root(leaves[:k])]


LEAVES = [f"tx-{i}".encode() for i in range(70)]


@pytest.mark.parametrize("n", range(0, 70))
def test_root_matches_rfc(n: int) -> None:
    assert merkle_root(LEAVES[:n]) == rfc6962_root(LEAVES[:n])
    assert MerkleTree(LEAVES[:n]).root == rfc6962_root(LEAVES[:n])


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 8, 9, 16, 17, 33])
def test_every_proof_matches_rfc_and_verifies(n: int) -> None:
    tree = MerkleTree(LEAVES[:n])
    for i in range(n):
        proof = tree.proof(i)
        assert list(proof) == rfc6962_path(i, LEAVES[:n])
        assert verify_inclusion(LEAVES[i], i, n, proof, tree.root)


@pytest.mark.parametrize("n", [2, 3, 6, 11])
def test_tampered_proofs_fail(n: int) -> None:
    tree = MerkleTree(LEAVES[:n])
    root = tree.root
    for i in range(n):
        proof = tree.proof(i)
        assert not verify_inclusion(LEAVES[i] + b"!", i, n, proof, root)
        assert not verify_inclusion(LEAVES[i], (i + 1) % n, n, proof, root)
        # The size is certified in the header, so a path is only ever checked against the
        # right one; RFC 9162 paths can coincide for two sizes (leaf 0 of 3 and of 4), and then
        # they are that size's correct path too.
        bigger = LEAVES[:n] + [b"extra"]
        if verify_inclusion(LEAVES[i], i, n + 1, proof, MerkleTree(bigger).root):
            assert list(proof) == rfc6962_path(i, bigger)
        assert not verify_inclusion(LEAVES[i], i, n, proof[:-1], root)
        assert not verify_inclusion(LEAVES[i], i, n, (*proof, proof[-1]), root)
        for j in range(len(proof)):
            bad = list(proof)
            bad[j] = bytes(32)
            assert not verify_inclusion(LEAVES[i], i, n, bad, root)
        assert not verify_inclusion(LEAVES[i], i, n, proof, bytes(32))
    assert not verify_inclusion(LEAVES[0], -1, n, [], root)
    assert not verify_inclusion(LEAVES[0], n, n, [], root)


def test_inner_node_cannot_pass_for_a_leaf() -> None:
    a, b = LEAVES[0], LEAVES[1]
    inner = leaf_hash(a) + leaf_hash(b)
    # The root of [a, b] is H(1 || H(0||a) || H(0||b)); the one-leaf tree of `inner` differs.
    assert merkle_root([a, b]) == node_hash(leaf_hash(a), leaf_hash(b))
    assert merkle_root([inner]) != merkle_root([a, b])


def test_odd_node_is_carried_not_duplicated() -> None:
    a, b, c = LEAVES[:3]
    assert merkle_root([a, b, c]) != merkle_root([a, b, c, c])
    assert merkle_root([]) == EMPTY_ROOT


@given(st.lists(st.binary(max_size=40), min_size=1, max_size=40), st.data())
def test_random_trees(leaves: list[bytes], data: st.DataObject) -> None:
    tree = MerkleTree(leaves)
    assert tree.root == rfc6962_root(leaves)
    i = data.draw(st.integers(min_value=0, max_value=len(leaves) - 1))
    assert verify_inclusion(leaves[i], i, len(leaves), tree.proof(i), tree.root)


def test_remembered_trees_are_the_trees_of_their_transactions() -> None:
    """Tuples share a remembered tree; lists do not; either way the tree is the RFC one, and a
    caller that changes what it was given does not change what others get."""
    from crypto.merkle import RECENT_TREES, leaf_hashes

    blocks = [tuple(b"tx %d of %d" % (i, b) for i in range(5 + b)) for b in range(RECENT_TREES + 3)]
    for _ in range(2):  # the second round finds some remembered and some evicted
        for txs in blocks:
            expected = rfc6962_root(list(txs))
            assert merkle_root(txs) == merkle_root(list(txs)) == expected
            assert MerkleTree(txs).root == MerkleTree(list(txs)).root == expected
    txs = blocks[0]
    hashes = leaf_hashes(txs)
    hashes[0] = b"\0" * 32
    assert leaf_hashes(txs)[0] == leaf_hash(txs[0])
    assert merkle_root(txs) == rfc6962_root(list(txs))
    # Equal contents, different tuple objects: the same tree; one transaction changed: another.
    again = tuple(bytes(t) for t in txs)
    assert merkle_root(again) == merkle_root(txs)
    changed = (*txs[:-1], txs[-1] + b"!")
    assert merkle_root(changed) == rfc6962_root(list(changed)) != merkle_root(txs)
    assert merkle_root(()) == EMPTY_ROOT and MerkleTree(()).root == EMPTY_ROOT
