"""Batched verification handed to a worker thread in one hop."""

from __future__ import annotations

import threading

import pytest
import trio

from crypto import Committee, Domain, InvalidCertificate, QuorumCertificate, SigningKey
from network import verify_off_loop

KEYS = [SigningKey(bytes([i + 1]) * 32) for i in range(31)]
COMMITTEE = Committee("alpha", [k.public_key for k in KEYS])
STATEMENT = Domain("alpha", "hotstuff/vote").digest(b"block")


def qc(signers: range) -> QuorumCertificate:
    return QuorumCertificate.from_votes(
        STATEMENT, [(i, KEYS[i].sign_digest(STATEMENT)) for i in signers], 31
    )


async def test_large_certificate_is_verified_on_one_worker_thread() -> None:
    cert = qc(range(21))
    threads: list[str] = []

    def check() -> None:
        threads.append(threading.current_thread().name)
        cert.verify(COMMITTEE, threshold=COMMITTEE.quorum, statement=STATEMENT)

    await verify_off_loop(check, signatures=len(cert.signatures))
    assert threads and threads[0] != threading.main_thread().name


async def test_small_batch_stays_on_the_loop() -> None:
    seen: list[bool] = []
    await verify_off_loop(
        lambda: seen.append(threading.current_thread() is threading.main_thread()), signatures=3
    )
    assert seen == [True]


async def test_failures_propagate() -> None:
    cert = qc(range(5))
    with pytest.raises(InvalidCertificate, match="5 signers, 21 required"):
        await verify_off_loop(
            lambda: cert.verify(COMMITTEE, threshold=COMMITTEE.quorum, statement=STATEMENT),
            signatures=20,
        )


async def test_loop_stays_responsive_while_verifying() -> None:
    cert = qc(range(31))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        for _ in range(5):
            await verify_off_loop(
                lambda: cert.verify(COMMITTEE, threshold=21, statement=STATEMENT), signatures=31
            )
        nursery.cancel_scope.cancel()
    assert ticks > 0
