"""One paid call: charged on success only; an Idempotency-Key replays without a second charge."""

from __future__ import annotations

import asyncio

import pytest

from billing import (
    IdempotencyKeyInUse,
    IdempotencyKeyMismatch,
    IdempotencyStore,
    InsufficientCredits,
    InvalidIdempotencyKey,
    Ledger,
    Metering,
    StoredResponse,
)


@pytest.fixture
def store(sessions, clock) -> IdempotencyStore:
    return IdempotencyStore(sessions, ttl=24 * 3600, pending_ttl=600, clock=clock)


@pytest.fixture
def metering(sessions, catalogue, clock, store) -> Metering:
    return Metering(Ledger(sessions, catalogue, clock), store)


def render(body: bytes):
    def build(charge):
        return StoredResponse(200, {"X-Credits-Charged": str(charge.amount)}, body, "image/png")

    return build


async def remaining(metering: Metering, key) -> int:
    return (await metering.ledger.balance(key.account_id)).remaining


async def test_success_is_charged(keys, metering) -> None:
    key, _ = await keys.create("app")
    async with metering.call(key, operation="clip") as call:
        assert call.replay is None
        response = await call.succeed(render(b"img"))
    assert response.headers == {"X-Credits-Charged": "1000"} and call.charge.remaining == 4000
    assert await remaining(metering, key) == 4000


async def test_an_error_is_never_charged(keys, metering) -> None:
    key, _ = await keys.create("app")
    with pytest.raises(RuntimeError):
        async with metering.call(key, operation="clip"):
            raise RuntimeError("the model failed")
    assert await remaining(metering, key) == 5000


async def test_a_cancelled_call_gives_its_credits_back(keys, metering) -> None:
    key, _ = await keys.create("app")
    started = asyncio.Event()

    async def slow():
        async with metering.call(key, operation="clip"):
            started.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(slow())
    await started.wait()
    assert await remaining(metering, key) == 4000
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await remaining(metering, key) == 5000


async def test_idempotent_replay_is_not_charged_again(keys, metering) -> None:
    key, _ = await keys.create("app")
    async with metering.call(key, operation="clip", idempotency_key="k1", fingerprint="f") as call:
        first = await call.succeed(render(b"one"))
    for _ in range(3):
        async with metering.call(key, operation="clip", idempotency_key="k1", fingerprint="f") as call:
            assert call.replay == first
    assert await remaining(metering, key) == 4000


async def test_same_key_other_input_is_refused(keys, metering) -> None:
    key, _ = await keys.create("app")
    async with metering.call(key, operation="clip", idempotency_key="k1", fingerprint="image A") as call:
        await call.succeed(render(b"A"))
    with pytest.raises(IdempotencyKeyMismatch):
        async with metering.call(key, operation="clip", idempotency_key="k1", fingerprint="image B"):
            pass
    assert await remaining(metering, key) == 4000


async def test_keys_are_scoped_to_the_account_and_mode(keys, metering) -> None:
    one, _ = await keys.create("one")
    other, _ = await keys.create("other")
    test, _ = await keys.create("one test", account_id=one.account_id, mode="test")
    for key in (one, other, test):
        async with metering.call(key, operation="clip", idempotency_key="same", fingerprint=key.id) as call:
            assert call.replay is None
            await call.succeed(render(key.id.encode()))


async def test_while_the_first_runs_a_second_is_refused(keys, metering) -> None:
    key, _ = await keys.create("app")
    async with metering.call(key, operation="clip", idempotency_key="k", fingerprint="f") as call:
        with pytest.raises(IdempotencyKeyInUse):
            async with metering.call(key, operation="clip", idempotency_key="k", fingerprint="f"):
                pass
        await call.succeed(render(b"x"))
    assert await remaining(metering, key) == 4000


async def test_after_an_error_the_key_runs_anew(keys, metering) -> None:
    key, _ = await keys.create("app")
    with pytest.raises(RuntimeError):
        async with metering.call(key, operation="clip", idempotency_key="k", fingerprint="f"):
            raise RuntimeError("boom")
    async with metering.call(key, operation="clip", idempotency_key="k", fingerprint="f") as call:
        assert call.replay is None
        await call.succeed(render(b"x"))
    assert await remaining(metering, key) == 4000


async def test_out_of_credits_frees_the_key(keys, metering) -> None:
    key, _ = await keys.create("app")
    for i in range(5):
        async with metering.call(key, operation="clip") as call:
            await call.succeed(render(b"x"))
    with pytest.raises(InsufficientCredits):
        async with metering.call(key, operation="clip", idempotency_key="k", fingerprint="f"):
            pass
    with pytest.raises(InsufficientCredits):  # not "in use": the key was given back
        async with metering.call(key, operation="clip", idempotency_key="k", fingerprint="f"):
            pass


async def test_responses_are_kept_24_hours(keys, metering, clock, store) -> None:
    key, _ = await keys.create("app")
    async with metering.call(key, operation="clip", idempotency_key="k", fingerprint="f") as call:
        await call.succeed(render(b"x"))
    clock.advance(24 * 3600 - 1)
    async with metering.call(key, operation="clip", idempotency_key="k", fingerprint="f") as call:
        assert call.replay is not None
    clock.advance(2)
    assert await store.sweep() == 1
    async with metering.call(key, operation="clip", idempotency_key="k", fingerprint="f") as call:
        assert call.replay is None  # expired: a new request
        await call.succeed(render(b"y"))
    assert await remaining(metering, key) == 3000


async def test_a_pending_key_of_a_dead_process_is_taken_over(keys, metering, clock, store) -> None:
    assert await store.begin("acct:live", "k", "f") is None  # and the process died
    clock.advance(601)
    assert await store.begin("acct:live", "k", "f") is None


async def test_concurrent_retries_charge_once(keys, metering) -> None:
    key, _ = await keys.create("app")

    async def attempt():
        try:
            async with metering.call(key, operation="clip", idempotency_key="k", fingerprint="f") as call:
                if call.replay is not None:
                    return "replay"
                await asyncio.sleep(0.05)
                await call.succeed(render(b"x"))
                return "ran"
        except IdempotencyKeyInUse:
            return "in use"

    outcomes = await asyncio.gather(*(attempt() for _ in range(8)))
    assert outcomes.count("ran") == 1
    assert await remaining(metering, key) == 4000


@pytest.mark.parametrize("bad", ["", "x" * 256, "has space", "tab\t", "é"])
async def test_malformed_idempotency_keys(store, bad: str) -> None:
    with pytest.raises(InvalidIdempotencyKey):
        await store.begin("s", bad, "f")
