"""Billing fixtures: a fresh SQLite database (with the app's settings) and a settable clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api.database import create_database, create_schema, session_factory


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
