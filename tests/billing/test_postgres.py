"""The ledger, idempotency, webhooks and the outbox on PostgreSQL (production's database).

A throwaway PostgreSQL is started on a free loopback port from the machine's own
binaries (Debian's ``postgresql`` package); without them, or without ``asyncpg``
(``pip install -e '.[postgres]'``), these tests are skipped: SQLite runs the same
cases in the other files.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

import billing
from api.database import create_database, session_factory
from billing import (
    Billing,
    Catalogue,
    InsufficientCredits,
    MemoryGateway,
    StoredResponse,
)
from tests.billing.stripe_server import event, free_port, wait_for_port


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    return next((str(v / name) for v in versions if (v / name).exists()), None)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    pytest.importorskip("asyncpg")
    initdb, postgres = _binary("initdb"), _binary("postgres")
    if not initdb or not postgres:
        pytest.skip("PostgreSQL binaries are not installed (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="arclip-pg-"))
    os.chmod(root, 0o777)
    # PostgreSQL refuses to run as root: run it as nobody then.
    as_user = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 and shutil.which("runuser") else []
    data = root / "data"
    done = subprocess.run(
        [*as_user, initdb, "-D", str(data), "-A", "trust", "-U", "arclip", "--no-sync"],
        capture_output=True, text=True, timeout=120,
    )
    if done.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"initdb failed: {done.stderr[-300:]}")
    port = free_port()
    server = subprocess.Popen(
        [*as_user, postgres, "-D", str(data), "-p", str(port), "-h", "127.0.0.1", "-k", str(root),
         "-c", "fsync=off", "-c", "max_connections=60"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=30, process=server)
        yield f"postgresql+asyncpg://arclip@127.0.0.1:{port}/postgres"
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def pg(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_database(postgres_url)
    for _ in range(50):  # the port opens a moment before connections are accepted
        try:
            async with engine.begin() as conn:
                await conn.run_sync(billing.Base.metadata.drop_all)
                await conn.run_sync(billing.Base.metadata.create_all)
            break
        except Exception:
            await asyncio.sleep(0.2)
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
