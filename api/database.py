"""The SQLAlchemy engine: built in the lifespan, disposed at shutdown."""

from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from . import migrations


def create_database(url: str, *, busy_timeout_s: float = 5.0) -> AsyncEngine:
    """The engine for ``url``; a SQLite writer waits ``busy_timeout_s`` for the lock, then fails (answered 503)."""
    engine = create_async_engine(url, pool_pre_ping=True)
    busy_timeout_ms = max(0, int(busy_timeout_s * 1000))
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            # WAL lets readers run beside the writer; a busy timeout instead of "database is locked".
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()
            # Let SQLAlchemy, not the driver, open transactions (see _begin_immediate).
            dbapi_connection.isolation_level = None

        @event.listens_for(engine.sync_engine, "begin")
        def _begin_immediate(conn):  # type: ignore[no-untyped-def]
            # A deferred transaction that reads and then writes cannot wait on
            # busy_timeout under WAL: it fails at once with "database is locked".
            # Taking the write lock up front makes concurrent writers queue instead.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


async def create_schema(engine: AsyncEngine, *, auto_migrate: bool = False) -> None:
    """Bring the schema to this release's revision by migrations (api.migrations), at start-up.

    SQLite (one process's own file) always upgrades itself; a shared PostgreSQL is
    upgraded only with ``auto_migrate``, else an older or empty schema is refused
    (SchemaOutOfDate) so that replicas never change it behind an operator's back.
    A schema newer than this code is always refused (SchemaTooNew).
    """
    await migrations.prepare(engine, migrate=auto_migrate or engine.dialect.name == "sqlite")


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
