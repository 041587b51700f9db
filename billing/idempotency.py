"""``Idempotency-Key``: the first response to a key is kept and replayed, never charged twice.

Keys are scoped to an account and mode (live/test) and live for ``ttl`` (24 h).
A request carries a fingerprint of its input (the caller computes it); the same key
with another fingerprint is refused (``IdempotencyKeyMismatch``), and while the first
request runs a second one is refused too (``IdempotencyKeyInUse``: retry shortly).
Only successes are kept: after an error the key is free again, so a retry runs anew.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .accounts import Clock
from .db import IdempotencyRecord
from .errors import IdempotencyKeyInUse, IdempotencyKeyMismatch, InvalidIdempotencyKey

_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # visible ASCII, as Stripe allows


@dataclass(frozen=True)
class StoredResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    media_type: str | None = None


def check_key(key: str) -> str:
    if not _KEY.match(key):
        raise InvalidIdempotencyKey("An Idempotency-Key is 1 to 255 visible ASCII characters.")
    return key


class IdempotencyStore:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        ttl: float = 24 * 3600,
        pending_ttl: float = 15 * 60,
        clock: Clock = time.time,
    ) -> None:
        self._sessions = sessions
        self.ttl = ttl
        self.pending_ttl = pending_ttl  # a pending record older than this belonged to a dead process
        self._clock = clock

    async def begin(self, scope: str, key: str, fingerprint: str) -> StoredResponse | None:
        """None: the key is now ours (pending). A response: replay it."""
        check_key(key)
        for _ in range(3):
            now = self._clock()
            try:
                async with self._sessions.begin() as session:
                    session.add(
                        IdempotencyRecord(
                            scope=scope, key=key, fingerprint=fingerprint, state="pending", created=now,
                            expires=now + self.ttl,
                        )
                    )
                return None
            except IntegrityError:
                pass
            async with self._sessions() as session:
                row = await session.scalar(
                    select(IdempotencyRecord).where(IdempotencyRecord.scope == scope, IdempotencyRecord.key == key)
                )
            if row is None:
                continue  # it expired and was deleted in between
            if row.expires <= now or (row.state == "pending" and row.created <= now - self.pending_ttl):
                async with self._sessions.begin() as session:
                    await session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.id == row.id))
                continue
            if row.fingerprint != fingerprint:
                raise IdempotencyKeyMismatch(
                    "This Idempotency-Key was used with a different request; use a new key for a new request."
                )
            if row.state == "pending":
                raise IdempotencyKeyInUse("The first request with this Idempotency-Key is still running.")
            return StoredResponse(
                status=row.status_code or 200,
                headers=json.loads(row.headers or "{}"),
                body=row.body or b"",
                media_type=row.media_type,
            )
        raise IdempotencyKeyInUse("This Idempotency-Key is busy; retry shortly.")

    async def complete(self, session: AsyncSession, scope: str, key: str, response: StoredResponse) -> None:
        """Keep the response, inside the caller's transaction (the one that charged)."""
        await session.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.scope == scope, IdempotencyRecord.key == key, IdempotencyRecord.state == "pending")
            .values(
                state="done",
                status_code=response.status,
                headers=json.dumps(response.headers),
                body=response.body,
                media_type=response.media_type,
            )
        )

    async def abandon(self, scope: str, key: str) -> None:
        """Free a pending key (the request failed): a retry runs anew."""
        async with self._sessions.begin() as session:
            await session.execute(
                delete(IdempotencyRecord).where(
                    IdempotencyRecord.scope == scope, IdempotencyRecord.key == key, IdempotencyRecord.state == "pending"
                )
            )

    async def sweep(self) -> int:
        now = self._clock()
        async with self._sessions.begin() as session:
            result = await session.execute(
                delete(IdempotencyRecord).where(
                    (IdempotencyRecord.expires <= now)
                    | ((IdempotencyRecord.state == "pending") & (IdempotencyRecord.created <= now - self.pending_ttl))
                )
            )
            return int(result.rowcount or 0)
