"""Billing fixtures: a fresh SQLite database (with the app's settings), a settable clock, a plan catalogue
(one free plan of 5 credits; a module may override ``catalogue``) and the key service over them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api.database import create_database, create_schema, session_factory
from billing import ApiKeyService, Catalogue


class Clock:
    """Epoch seconds that move only when told to."""

    def __init__(self, now: float = 1_750_000_000.0) -> None:  # 2025-06-15 UTC
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    database = create_database(f"sqlite+aiosqlite:///{tmp_path / 'billing.db'}")
    await create_schema(database)
    yield database
    await database.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(engine)


@pytest.fixture
def catalogue() -> Catalogue:
    return Catalogue.build({"free": {"monthly_credits": 5}})


@pytest.fixture
def keys(sessions: async_sessionmaker[AsyncSession], catalogue: Catalogue, clock: Clock) -> ApiKeyService:
    return ApiKeyService(sessions, catalogue, clock=clock)
