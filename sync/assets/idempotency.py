"""``Idempotency-Key`` for captures: a phone that retries after a lost answer gets the same asset.

The same conventions as the public API's keys (``billing/idempotency.py``; sync may not
import billing, so this is sync's own small store): a key is 1 to 255 visible ASCII
characters, scoped to its pairing, and bound to a fingerprint of the request (the
options and the photo's bytes). Per key::

    (none) ──begin──▶ pending ──complete──▶ done ──ttl──▶ (none)
                        │
                        └──abandon (the capture failed) / pending_ttl (its process died)──▶ (none)

``begin`` on a ``done`` key with the same fingerprint hands back the asset to replay; with
another fingerprint it raises ``IdempotencyKeyMismatch``; on a ``pending`` one
``IdempotencyKeyInUse`` (the first request still runs: retry shortly). Only successes are
kept, so a retry after an error runs anew. A replay is rebuilt from the asset (a fresh
signed URL), so it lives no longer than the asset: a key whose asset is gone runs anew.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from segmentation import ClipOptions
from sync.db import CaptureKeyRow, utcnow

from .errors import AssetError

_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # visible ASCII, as Stripe (and /v1/clip) allow

PENDING = "pending"
DONE = "done"


class IdempotencyError(AssetError):
    code = "idempotency_error"


class InvalidIdempotencyKey(IdempotencyError):
    code = "invalid_idempotency_key"


class IdempotencyKeyMismatch(IdempotencyError):
    """The key was first used with another request: refused, never replayed."""

    code = "idempotency_key_mismatch"


class IdempotencyKeyInUse(IdempotencyError):
    """The first request with this key is still running."""

    code = "idempotency_key_in_use"
    retry_after = 1


def check_key(key: str) -> str:
    if not _KEY.match(key):
        raise InvalidIdempotencyKey("An Idempotency-Key is 1 to 255 visible ASCII characters.")
    return key


def capture_fingerprint(options: ClipOptions, photo: bytes) -> str:
    """What a key is bound to: the parsed options and the photo's bytes."""
    digest = hashlib.sha256()
    digest.update(f"POST /v1/captures\n{options!r}\n".encode())
    digest.update(hashlib.sha256(photo).digest())
    return digest.hexdigest()


class CaptureKeys:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        ttl: timedelta = timedelta(hours=24),
        pending_ttl: timedelta = timedelta(minutes=5),
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._sessions = sessions
        self.ttl = ttl
        self.pending_ttl = pending_ttl  # a pending key older than this belonged to a process that died
        self._clock = clock

    async def begin(self, pairing_id: str, key: str, fingerprint: str) -> str | None:
        """None: the key is now ours (pending), run the capture. An asset id: replay that capture."""
        check_key(key)
        for _ in range(3):
            now = self._clock()
            try:
                async with self._sessions.begin() as session:
                    session.add(
                        CaptureKeyRow(
                            pairing_id=pairing_id, key=key, fingerprint=fingerprint, state=PENDING,
                            created_at=now, expires_at=now + self.ttl,
                        )
                    )
                return None
            except IntegrityError:
                pass
            async with self._sessions() as session:
                row = await session.get(CaptureKeyRow, (pairing_id, key))
            if row is None:
                continue  # it expired and was deleted in between
            if row.expires_at <= now or (row.state == PENDING and row.created_at <= now - self.pending_ttl):
                await self._delete(pairing_id, key, row.state, row.created_at)
                continue
            if row.fingerprint != fingerprint:
                raise IdempotencyKeyMismatch(
                    "This Idempotency-Key was used with a different capture; use a new key for a new photo."
                )
            if row.state == PENDING or row.asset_id is None:
                raise IdempotencyKeyInUse("The first capture with this Idempotency-Key is still running.")
            return row.asset_id
        raise IdempotencyKeyInUse("This Idempotency-Key is busy; retry shortly.")

    async def complete(self, pairing_id: str, key: str, asset_id: str) -> None:
        """The capture succeeded (and was announced): keep it for replays."""
        async with self._sessions.begin() as session:
            await session.execute(
                update(CaptureKeyRow)
                .where(CaptureKeyRow.pairing_id == pairing_id, CaptureKeyRow.key == key, CaptureKeyRow.state == PENDING)
                .values(state=DONE, asset_id=asset_id)
            )

    async def abandon(self, pairing_id: str, key: str) -> None:
        """Free a pending key (the capture failed): a retry runs anew."""
        async with self._sessions.begin() as session:
            await session.execute(
                delete(CaptureKeyRow).where(
                    CaptureKeyRow.pairing_id == pairing_id, CaptureKeyRow.key == key, CaptureKeyRow.state == PENDING
                )
            )

    async def forget(self, pairing_id: str, key: str) -> None:
        """Drop a done key whose asset is gone: the next request with it runs anew."""
        async with self._sessions.begin() as session:
            await session.execute(
                delete(CaptureKeyRow).where(
                    CaptureKeyRow.pairing_id == pairing_id, CaptureKeyRow.key == key, CaptureKeyRow.state == DONE
                )
            )

    async def delete_pairing(self, pairing_id: str) -> None:
        """The pairing closed (its close listener): its keys go with its assets."""
        async with self._sessions.begin() as session:
            await session.execute(delete(CaptureKeyRow).where(CaptureKeyRow.pairing_id == pairing_id))

    async def sweep(self) -> int:
        now = self._clock()
        async with self._sessions.begin() as session:
            result = await session.execute(
                delete(CaptureKeyRow).where(
                    (CaptureKeyRow.expires_at <= now)
                    | ((CaptureKeyRow.state == PENDING) & (CaptureKeyRow.created_at <= now - self.pending_ttl))
                )
            )
            return int(result.rowcount or 0)

    async def _delete(self, pairing_id: str, key: str, state: str, created_at: datetime) -> None:
        # Only the row we judged stale: another request may have replaced it meanwhile.
        async with self._sessions.begin() as session:
            await session.execute(
                delete(CaptureKeyRow).where(
                    CaptureKeyRow.pairing_id == pairing_id,
                    CaptureKeyRow.key == key,
                    CaptureKeyRow.state == state,
                    CaptureKeyRow.created_at == created_at,
                )
            )
