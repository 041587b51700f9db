"""API keys: random secrets shown once, stored hashed, authenticated, revocable."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from billing import (
    ApiKeyNotFound,
    ApiKeyService,
    Base,
    InvalidApiKey,
    MissingApiKey,
    RevokedApiKey,
)


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    yield engine
    await engine.dispose()


@pytest.fixture
def keys(database: AsyncEngine) -> ApiKeyService:
    return ApiKeyService(async_sessionmaker(database, expire_on_commit=False))


async def all_rows(database: AsyncEngine) -> list[dict]:
    async with database.connect() as conn:
        result = await conn.execute(text("SELECT * FROM api_keys"))
        return [dict(row._mapping) for row in result]


async def test_create_returns_secret_once_and_stores_only_its_hash(keys: ApiKeyService, database: AsyncEngine) -> None:
    info, secret = await keys.create("my app", plan="payg")
    assert secret.startswith("arc_live_") and len(secret) >= 40
    assert info.name == "my app" and info.plan == "payg" and not info.revoked
    assert info.id.startswith("key_")
    assert secret not in info.display and info.display.endswith(secret[-4:])

    rows = await all_rows(database)
    assert len(rows) == 1
    row = rows[0]
    assert row["secret_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    body = secret[len("arc_live_") :]
    for value in row.values():
        assert body not in str(value), "the secret is stored in clear"


async def test_secrets_are_random(keys: ApiKeyService) -> None:
    created = [await keys.create(f"k{i}") for i in range(5)]
    assert len({secret for _, secret in created}) == 5
    assert len({info.id for info, _ in created}) == 5


async def test_authenticate_ok(keys: ApiKeyService) -> None:
    info, secret = await keys.create("app")
    authenticated = await keys.authenticate(secret)
    assert authenticated.id == info.id and authenticated.name == "app"


@pytest.mark.parametrize("secret", [None, ""])
async def test_authenticate_missing(keys: ApiKeyService, secret) -> None:
    with pytest.raises(MissingApiKey):
        await keys.authenticate(secret)


async def test_authenticate_invalid(keys: ApiKeyService) -> None:
    _, secret = await keys.create("app")
    for wrong in ("arc_live_nothing", secret + "x", secret[:-1], secret.upper(), " " + secret):
        with pytest.raises(InvalidApiKey):
            await keys.authenticate(wrong)


async def test_the_stored_hash_is_not_a_key(keys: ApiKeyService, database: AsyncEngine) -> None:
    await keys.create("app")
    stolen = (await all_rows(database))[0]["secret_hash"]
    with pytest.raises(InvalidApiKey):
        await keys.authenticate(stolen)


async def test_revoked_key_is_refused(keys: ApiKeyService) -> None:
    info, secret = await keys.create("app")
    other, other_secret = await keys.create("other")
    revoked = await keys.revoke(info.id)
    assert revoked.revoked and revoked.id == info.id
    with pytest.raises(RevokedApiKey):
        await keys.authenticate(secret)
    assert (await keys.authenticate(other_secret)).id == other.id  # others unaffected


async def test_revoke_is_idempotent_and_keeps_the_first_time(keys: ApiKeyService, database: AsyncEngine) -> None:
    info, _ = await keys.create("app")
    await keys.revoke(info.id)
    first = (await all_rows(database))[0]["revoked_at"]
    await asyncio.sleep(0.01)
    again = await keys.revoke(info.id)
    assert again.revoked
    assert (await all_rows(database))[0]["revoked_at"] == first


async def test_revoke_unknown(keys: ApiKeyService) -> None:
    with pytest.raises(ApiKeyNotFound):
        await keys.revoke("key_doesnotexist")


async def test_last_used_at_is_set_by_authenticate(keys: ApiKeyService) -> None:
    info, secret = await keys.create("app")
    assert info.last_used_at is None
    assert (await keys.list())[0].last_used_at is None
    await keys.authenticate(secret)
    first = (await keys.list())[0].last_used_at
    assert first is not None
    await asyncio.sleep(0.01)
    await keys.authenticate(secret)
    assert (await keys.list())[0].last_used_at > first


async def test_failed_authentication_does_not_touch_last_used(keys: ApiKeyService) -> None:
    info, secret = await keys.create("app")
    await keys.revoke(info.id)
    with pytest.raises(RevokedApiKey):
        await keys.authenticate(secret)
    assert (await keys.list())[0].last_used_at is None


async def test_list_never_shows_secrets(keys: ApiKeyService) -> None:
    created = [await keys.create(name) for name in ("a", "b", "c")]
    listed = await keys.list()
    assert [k.name for k in listed] == ["a", "b", "c"]
    for (info, secret), shown in zip(created, listed):
        assert shown.id == info.id
        assert secret not in repr(shown)
        assert shown.display == info.display


async def test_concurrent_authentication(keys: ApiKeyService) -> None:
    info, secret = await keys.create("busy")
    results = await asyncio.gather(*(keys.authenticate(secret) for _ in range(20)))
    assert {r.id for r in results} == {info.id}


# --- the key format, accounts, modes and scopes ----------------------------------------------

from billing import (
    AccountService,
    AccountSuspended,
    InsufficientScope,
    key_mode,
    looks_valid,
)
from billing.keys import new_secret


def test_key_format_and_offline_checksum() -> None:
    for mode, prefix in (("live", "arc_live_"), ("test", "arc_test_")):
        secret = new_secret(mode)
        assert secret.startswith(prefix) and len(secret) == len(prefix) + 43 + 6
        assert secret[len(prefix):].isalnum()
        assert looks_valid(secret) and key_mode(secret) == mode
    secret = new_secret()
    # one changed character anywhere breaks the CRC32 checksum
    for i in range(len("arc_live_"), len(secret)):
        swapped = secret[:i] + ("A" if secret[i] != "A" else "B") + secret[i + 1 :]
        assert not looks_valid(swapped), i
    assert not looks_valid("arc_test_" + secret[len("arc_live_"):])  # the prefix is covered too
    for junk in (None, "", "arc_live_", "sk_live_" + secret[9:], secret + "0", secret[:-1], " " + secret):
        assert not looks_valid(junk)


def test_secrets_carry_256_random_bits() -> None:
    bodies = {new_secret()[9:-6] for _ in range(200)}
    assert len(bodies) == 200
    assert max(int.from_bytes(b.encode(), "big") for b in bodies)  # not constant
    assert len(set("".join(bodies))) > 55  # the whole base62 alphabet shows up


async def test_a_wellformed_but_unknown_key_is_invalid(keys: ApiKeyService) -> None:
    with pytest.raises(InvalidApiKey):
        await keys.authenticate(new_secret())


async def test_create_makes_an_account_and_more_keys_can_join_it(keys: ApiKeyService, database: AsyncEngine) -> None:
    accounts = AccountService(async_sessionmaker(database, expire_on_commit=False))
    first, _ = await keys.create("shop", plan="prepaid", credits=5_000)
    assert first.account_id.startswith("acct_") and first.plan == "prepaid"
    account = await accounts.get(first.account_id)
    assert account.name == "shop" and account.balance.credits == 5_000
    second, secret = await keys.create("shop ci", account_id=first.account_id, mode="test")
    assert second.account_id == first.account_id and second.mode == "test" and secret.startswith("arc_test_")
    assert (await keys.authenticate(secret)).test
    assert [k.id for k in await keys.list(first.account_id)] == [first.id, second.id]
    assert len(await accounts.list()) == 1


async def test_scopes(keys: ApiKeyService) -> None:
    _, secret = await keys.create("reader", scopes=["account:read"])
    authenticated = await keys.authenticate(secret)
    assert authenticated.scopes == ("account:read",)
    authenticated.require("account:read")
    with pytest.raises(InsufficientScope):
        authenticated.require("clip")
    with pytest.raises(InsufficientScope):
        await keys.create("bad", scopes=["admin"])
    full, _ = await keys.create("all")
    assert set(full.scopes) == {"clip", "account:read", "account:write"}


async def test_suspended_account_keys_are_refused(keys: ApiKeyService, database: AsyncEngine) -> None:
    _, secret = await keys.create("app")
    async with database.begin() as conn:
        await conn.execute(text("UPDATE billing_accounts SET suspended_at = CURRENT_TIMESTAMP, suspended_reason = 'payment_failed'"))
    with pytest.raises(AccountSuspended):
        await keys.authenticate(secret)


async def test_last_used_at_is_written_at_most_every_touch_interval(database: AsyncEngine) -> None:
    now = [1_750_000_000.0]
    keys = ApiKeyService(async_sessionmaker(database, expire_on_commit=False), clock=lambda: now[0], touch_interval=60)
    _, secret = await keys.create("app")
    await keys.authenticate(secret)
    first = (await keys.list())[0].last_used_at
    now[0] += 30
    await keys.authenticate(secret)
    assert (await keys.list())[0].last_used_at == first
    now[0] += 31
    await keys.authenticate(secret)
    assert (await keys.list())[0].last_used_at > first


async def test_unknown_plan_is_refused(keys: ApiKeyService) -> None:
    from billing import UnknownPlan

    with pytest.raises(UnknownPlan):
        await keys.create("x", plan="platinum")
