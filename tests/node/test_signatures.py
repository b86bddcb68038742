"""Each client signature is checked once per replica, whichever path brings it first."""

from __future__ import annotations

import threading

import pytest
import trio

from bft.core.admission import AdmissionPolicy, VerifiedCache
from bft.node.signatures import SignatureChecks
from crypto import SigningKey
from ledger import Transaction, txid_of
from ledger import tx as tx_module

CHAIN = "sig-test"


def signed_batch(count: int, start: int = 0) -> list[bytes]:
    key = SigningKey(bytes(range(32)))
    return [
        Transaction.signed(key, CHAIN, seq, b"payload %d" % seq).encode()
        for seq in range(start, start + count)
    ]


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the real signature checks (the real check still runs)."""
    calls = [0]
    real = tx_module.Transaction.verify_signature

    def counting(self: Transaction, chain_id: str) -> bool:
        calls[0] += 1
        return real(self, chain_id)

    monkeypatch.setattr(tx_module.Transaction, "verify_signature", counting)
    return calls


async def from_client_and_in_proposal(
    checks: SignatureChecks, batch: list[bytes], *, proposal_first: bool = False
) -> tuple[tuple[list, list], list[bytes]]:
    """The same batch through both paths at once: what admission and the proposal check gave."""
    results: dict[str, object] = {}

    async def from_client() -> None:
        results["admitted"] = await checks.admit(batch, AdmissionPolicy(CHAIN))

    async def in_proposal() -> None:
        results["good"] = await checks.proposal(batch)

    async with trio.open_nursery() as nursery:
        first, second = (in_proposal, from_client) if proposal_first else (from_client, in_proposal)
        nursery.start_soon(first)
        nursery.start_soon(second)
    return results["admitted"], results["good"]  # type: ignore[return-value]


async def test_a_transaction_from_its_client_and_in_a_proposal_is_checked_once(
    verifications: list[int],
) -> None:
    checks = SignatureChecks(CHAIN, VerifiedCache())
    batch = signed_batch(40)
    (admitted, refused), good = await from_client_and_in_proposal(checks, batch)
    assert len(admitted) == 40 and refused == []
    assert sorted(good) == sorted(txid_of(raw) for raw in batch)
    assert verifications[0] == 40
    assert checks.stats["waited_for_another_check"] == 1
    assert checks.under_way == 0


async def test_overlapping_batches_check_only_what_is_new(verifications: list[int]) -> None:
    checks = SignatureChecks(CHAIN, VerifiedCache())
    first, second = signed_batch(30), signed_batch(30, start=20)  # 10 in common
    async with trio.open_nursery() as nursery:
        nursery.start_soon(checks.proposal, first)
        nursery.start_soon(checks.admit, second, AdmissionPolicy(CHAIN))
    assert verifications[0] == 50
    # Once in the cache, a signature is not checked again on either path.
    await checks.proposal(second)
    await checks.admit(first, AdmissionPolicy(CHAIN))
    assert verifications[0] == 50


async def test_a_bad_signature_is_refused_on_both_paths() -> None:
    checks = SignatureChecks(CHAIN, VerifiedCache())
    batch = signed_batch(12)
    forged = bytearray(batch[5])
    forged[-1] ^= 1  # the last byte of the signature
    batch[5] = bytes(forged)
    (admitted, refused), good = await from_client_and_in_proposal(
        checks, batch, proposal_first=True
    )
    assert [index for index, _ in refused] == [5]
    assert "invalid client signature" in refused[0][1]
    assert len(admitted) == 11
    assert txid_of(batch[5]) not in good
    assert len(good) == 11
    assert txid_of(batch[5]) not in checks.cache


async def test_the_same_transaction_twice_in_one_batch_does_not_wait_for_itself() -> None:
    checks = SignatureChecks(CHAIN, VerifiedCache())
    batch = signed_batch(10)
    with trio.fail_after(5):
        good = await checks.proposal(batch + batch)
    assert len(set(good)) == 10


@pytest.mark.parametrize("on_thread", [True, False])
async def test_a_large_batch_is_checked_on_a_worker_thread_only_when_configured(
    monkeypatch: pytest.MonkeyPatch, on_thread: bool
) -> None:
    threads: set[int] = set()
    real = tx_module.Transaction.verify_signature

    def noting(self: Transaction, chain_id: str) -> bool:
        threads.add(threading.get_ident())
        return real(self, chain_id)

    monkeypatch.setattr(tx_module.Transaction, "verify_signature", noting)
    checks = SignatureChecks(CHAIN, VerifiedCache(), on_thread=on_thread)
    admitted, refused = await checks.admit(signed_batch(20), AdmissionPolicy(CHAIN))
    good = await checks.proposal(signed_batch(20, start=100))
    assert len(admitted) == 20 and refused == [] and len(good) == 20
    loop = threading.get_ident()
    assert threads, "no signature was checked"
    if on_thread:
        assert loop not in threads
    else:
        assert threads == {loop}
