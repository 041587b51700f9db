"""API keys: random secrets shown once, stored hashed, revocable."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .db import ApiKey, utcnow
from .errors import ApiKeyNotFound, InvalidApiKey, MissingApiKey, RevokedApiKey

KEY_PREFIX = "arc_live_"


@dataclass(frozen=True)
class KeyInfo:
    id: str
    name: str
    plan: str
    display: str  # prefix…last4, safe to show
    created_at: datetime
    last_used_at: datetime | None
    revoked: bool


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(
        id=row.id,
        name=row.name,
        plan=row.plan,
        display=f"{row.prefix}…{row.last4}",
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked=row.revoked_at is not None,
    )


class ApiKeyService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def create(self, name: str, plan: str = "free") -> tuple[KeyInfo, str]:
        """Return the key's info and its secret: the only time the secret exists in clear."""
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        row = ApiKey(
            id="key_" + secrets.token_hex(8),
            name=name,
            secret_hash=_hash(secret),
            prefix=KEY_PREFIX,
            last4=secret[-4:],
            plan=plan,
            created_at=utcnow(),
        )
        async with self._sessions.begin() as session:
            session.add(row)
        return _info(row), secret

    async def list(self) -> list[KeyInfo]:
        async with self._sessions() as session:
            rows = (await session.scalars(select(ApiKey).order_by(ApiKey.created_at))).all()
        return [_info(r) for r in rows]

    async def revoke(self, key_id: str) -> KeyInfo:
        async with self._sessions.begin() as session:
            row = await session.get(ApiKey, key_id)
            if row is None:
                raise ApiKeyNotFound(f"No API key with id {key_id!r}.")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
            return _info(row)

    async def authenticate(self, secret: str | None) -> KeyInfo:
        if not secret:
            raise MissingApiKey("Send your API key in the X-Api-Key header.")
        digest = _hash(secret)
        async with self._sessions.begin() as session:
            row = await session.scalar(select(ApiKey).where(ApiKey.secret_hash == digest))
            # The lookup is by hash; compare again in constant time so timing
            # reveals nothing about near-misses.
            if row is None or not hmac.compare_digest(row.secret_hash, digest):
                raise InvalidApiKey("The API key is not valid.")
            if row.revoked_at is not None:
                raise RevokedApiKey("The API key has been revoked.")
            await session.execute(update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=utcnow()))
            return _info(row)
