"""Alembic's environment: run by every migration command, never imported by us.

arclip hands it a connection already inside a transaction (``config.attributes``),
so a migration commits or rolls back with the caller's transaction, and on
PostgreSQL under the caller's advisory lock. Without one (``python -m
api.migrations`` for writing revisions) it connects to ``ARCLIP_DATABASE_URL``.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from api.migrations import target_metadata


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata(),
        # SQLite alters a table by copying it: batch mode does that for us.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_own_connection() -> None:
    from api.offline import with_database
    from api.settings import Settings

    async with with_database(Settings()) as engine, engine.begin() as conn:
        await conn.run_sync(run)


if context.is_offline_mode():
    raise SystemExit("arclip's migrations run against a database, not as SQL scripts (--sql)")

connection = context.config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    asyncio.run(run_own_connection())
