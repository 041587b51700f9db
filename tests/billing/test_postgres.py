"""The ledger, idempotency, webhooks and the outbox on PostgreSQL (production's database).

The session's throwaway PostgreSQL (tests/postgres.py, the ``postgres_url``
fixture) serves them; without its binaries, or without ``asyncpg``
(``pip install -e '.[postgres]'``), these tests are skipped: SQLite runs the same
cases in the other files.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

import billing
from api.database import create_database, create_schema, session_factory
from billing import (
    Billing,
    Catalogue,
    InsufficientCredits,
    MemoryGateway,
    StoredResponse,
)
from tests.billing.stripe_server import event
from tests.postgres import new_database


@pytest.fixture
async def pg(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_database(await new_database(postgres_url))
    await create_schema(engine, auto_migrate=True)  # built as production builds it: by migrations
    yield engine
    await engine.dispose()


@pytest.fixture
def stack(pg: AsyncEngine) -> Billing:
    catalogue = Catalogue.build({"free": {"monthly_credits": 0}, "payg": {"monthly_credits": 0}})
    return Billing.build(session_factory(pg), catalogue=catalogue, gateway=MemoryGateway())


async def test_16_parallel_charges_on_10_credits(stack: Billing) -> None:
    key, _ = await stack.keys.create("busy", credits=10_000)

    async def one() -> bool:
        try:
            async with stack.metering.call(key, operation="clip") as call:
                await asyncio.sleep(0.01)
                await call.succeed(lambda charge: StoredResponse(200))
            return True
        except InsufficientCredits:
            return False

    assert sum(await asyncio.gather(*(one() for _ in range(16)))) == 10
    assert (await stack.ledger.balance(key.account_id)).prepaid == 0
    assert (await stack.accounts.usage(key.account_id)).requests == 10


async def test_idempotency_under_concurrency(stack: Billing) -> None:
    key, _ = await stack.keys.create("app", credits=5000)

    async def attempt() -> str:
        try:
            async with stack.metering.call(key, operation="clip", idempotency_key="k", fingerprint="f") as call:
                if call.replay is not None:
                    return "replay"
                await asyncio.sleep(0.05)
                await call.succeed(lambda charge: StoredResponse(200, body=b"x"))
                return "ran"
        except billing.IdempotencyKeyInUse:
            return "in use"

    outcomes = await asyncio.gather(*(attempt() for _ in range(8)))
    assert outcomes.count("ran") == 1
    assert (await stack.ledger.balance(key.account_id)).prepaid == 4000


async def test_a_webhook_delivered_twice_at_once_credits_once(stack: Billing) -> None:
    account = await stack.accounts.create("shop")
    completed = event(
        "checkout.session.completed",
        {"id": "cs_pg", "mode": "payment", "payment_status": "paid",
         "metadata": {"arclip_account": account.id, "arclip_pack": "starter"}},
    )

    async def deliver() -> str:
        try:
            return await stack.webhooks.handle(completed)
        except Exception as exc:  # the loser of the race: Stripe retries it, and it is then a replay
            return type(exc).__name__

    outcomes = await asyncio.gather(*(deliver() for _ in range(4)))
    assert outcomes.count("credited") == 1
    assert await stack.webhooks.handle(completed) == "replayed"
    assert (await stack.accounts.get(account.id)).balance.credits == 1_000_000


async def test_outbox_replicas_on_postgres(stack: Billing, pg: AsyncEngine) -> None:
    from billing import UsageReporter

    key, _ = await stack.keys.create("metered", plan="payg")
    for _ in range(10):
        async with stack.metering.call(key, operation="clip") as call:
            await call.succeed(lambda charge: StoredResponse(200))
    gateway = stack.gateway
    other = UsageReporter(session_factory(pg), gateway, stack.checkout.customer_of)
    done = await asyncio.gather(stack.reporter.run_once(), other.run_once())
    assert sum(done) == 10 and len(gateway.events) == 10
    assert len(gateway.customers) == 1
