"""API keys: random secrets shown once, stored hashed, checked in constant time, revocable.

A key reads ``arc_live_`` (or ``arc_test_``), then 256 random bits as 43 base62
characters, then a 6-character base62 CRC32 of everything before it::

    arc_live_2Bf0…Qz7k9a1Bc

The checksum lets a secret scanner (or ``looks_valid``) recognise a real key
offline, and lets us refuse a mistyped one without a database lookup. Only the
sha256 of the key is stored, with its prefix and last 4 characters to show.
Test-mode keys (``arc_test_``) work like live ones but are never billed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .accounts import Clock, aware, grant_entry, new_account, new_id
from .db import Account, ApiKey
from .errors import (
    AccountNotFound,
    AccountSuspended,
    ApiKeyNotFound,
    InsufficientScope,
    InvalidApiKey,
    MissingApiKey,
    RevokedApiKey,
    echo,
)
from .plans import Catalogue

PREFIXES = {"live": "arc_live_", "test": "arc_test_"}
KEY_PREFIX = PREFIXES["live"]
SCOPES = ("clip", "account:read", "account:write")

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BODY_LEN = 43  # 62**43 > 2**256
_CHECK_LEN = 6  # 62**6 > 2**32
_SHAPE = re.compile(rf"^arc_(live|test)_[0-9A-Za-z]{{{_BODY_LEN + _CHECK_LEN}}}$")


def _base62(number: int, width: int) -> str:
    digits = []
    while number:
        number, rest = divmod(number, 62)
        digits.append(_ALPHABET[rest])
    return "".join(reversed(digits)).rjust(width, "0")


def _checksum(text: str) -> str:
    return _base62(zlib.crc32(text.encode()), _CHECK_LEN)


def new_secret(mode: str = "live") -> str:
    head = PREFIXES[mode] + _base62(secrets.randbits(256), _BODY_LEN)
    return head + _checksum(head)


def looks_valid(secret: str | None) -> bool:
    """Whether ``secret`` has a key's shape and checksum: no database, no network."""
    if not secret or not _SHAPE.match(secret):
        return False
    head, check = secret[:-_CHECK_LEN], secret[-_CHECK_LEN:]
    return hmac.compare_digest(_checksum(head), check)


def key_mode(secret: str) -> str | None:
    """``"live"`` or ``"test"`` for a well-formed key, else None."""
    if not looks_valid(secret):
        return None
    return "test" if secret.startswith(PREFIXES["test"]) else "live"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _scopes(scopes: Iterable[str] | None) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(scopes)) if scopes is not None else SCOPES
    unknown = [s for s in chosen if s not in SCOPES]
    if unknown or not chosen:
        raise InsufficientScope(f"Unknown scope {echo(unknown[0])!r}; scopes: {', '.join(SCOPES)}." if unknown
                                else "A key needs at least one scope.", echo(unknown[0]) if unknown else "")
    return chosen


@dataclass(frozen=True)
class KeyInfo:
    id: str
    name: str
    plan: str
    display: str  # prefix…last4, safe to show
    created_at: datetime
    last_used_at: datetime | None
    revoked: bool
    account_id: str = ""
    mode: str = "live"
    scopes: tuple[str, ...] = SCOPES

    @property
    def test(self) -> bool:
        return self.mode == "test"

    def require(self, scope: str) -> KeyInfo:
        if scope not in self.scopes:
            raise InsufficientScope(f"This API key lacks the {scope!r} scope.", scope)
        return self


def _info(row: ApiKey, plan: str) -> KeyInfo:
    return KeyInfo(
        id=row.id,
        name=row.name,
        plan=plan,
        display=f"{row.prefix}…{row.last4}",
        created_at=aware(row.created_at),  # type: ignore[arg-type]
        last_used_at=aware(row.last_used_at),
        revoked=row.revoked_at is not None,
        account_id=row.account_id,
        mode=row.mode,
        scopes=tuple(row.scopes.split()),
    )


class ApiKeyService:
    """Keys, and the accounts created with them (``arclip keys create``).

    ``touch_interval`` (seconds) spares a database write per request: ``last_used_at``
    moves only when it is older than that.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        catalogue: Catalogue | None = None,
        *,
        clock: Clock = time.time,
        touch_interval: float = 0.0,
    ) -> None:
        self._sessions = sessions
        self.catalogue = catalogue or Catalogue()
        self._clock = clock
        self._touch_interval = touch_interval

    async def create(
        self,
        name: str,
        plan: str = "free",
        *,
        account_id: str | None = None,
        credits: int = 0,
        mode: str = "live",
        scopes: Iterable[str] | None = None,
    ) -> tuple[KeyInfo, str]:
        """Return the key's info and its secret: the only time the secret exists in clear.

        Without ``account_id`` a new account named ``name`` is created on ``plan`` with
        ``credits`` (millicredits) granted; with it, the key joins that account
        (``plan`` and ``credits`` then do not apply).
        """
        if mode not in PREFIXES:
            raise InvalidApiKey(f"A key's mode is 'live' or 'test', not {echo(mode)!r}.")
        chosen = _scopes(scopes)
        secret = new_secret(mode)
        now = self._clock()
        async with self._sessions.begin() as session:
            if account_id is None:
                account = new_account(name, self.catalogue.plan(plan), credits, now)
                session.add(account)
                await session.flush()
                if credits:
                    session.add(grant_entry(account.id, credits, now, operation="initial"))
            else:
                found = await session.get(Account, account_id)
                if found is None:
                    raise AccountNotFound(f"No account with id {account_id!r}.")
                account = found
            row = ApiKey(
                id=new_id("key"),
                account_id=account.id,
                name=name,
                secret_hash=_hash(secret),
                prefix=PREFIXES[mode],
                last4=secret[-4:],
                mode=mode,
                scopes=" ".join(chosen),
                created_at=datetime.fromtimestamp(now, UTC),
            )
            session.add(row)
            return _info(row, account.plan), secret

    async def list(self, account_id: str | None = None) -> list[KeyInfo]:
        query = select(ApiKey, Account.plan).join(Account, Account.id == ApiKey.account_id)
        if account_id is not None:
            query = query.where(ApiKey.account_id == account_id)
        async with self._sessions() as session:
            rows = (await session.execute(query.order_by(ApiKey.created_at, ApiKey.id))).all()
        return [_info(key, plan) for key, plan in rows]

    async def get(self, key_id: str) -> KeyInfo:
        async with self._sessions() as session:
            found = (
                await session.execute(
                    select(ApiKey, Account.plan).join(Account, Account.id == ApiKey.account_id).where(ApiKey.id == key_id)
                )
            ).first()
        if found is None:
            raise ApiKeyNotFound(f"No API key with id {echo(key_id)!r}.")
        return _info(found[0], found[1])

    async def revoke(self, key_id: str) -> KeyInfo:
        """Revoke a key named by its id (``key_…``) or by the key itself (``arc_…``)."""
        if looks_valid(key_id):
            which = ApiKey.secret_hash == _hash(key_id)
            missing = "No API key matches that key (it was never issued here)."
        else:
            which = ApiKey.id == key_id
            missing = (f"{echo(key_id)!r} is not a well-formed API key (a typo?)." if key_id.startswith("arc_")
                       else f"No API key with id {echo(key_id)!r}.")
        async with self._sessions.begin() as session:
            await session.execute(update(ApiKey).where(which, ApiKey.revoked_at.is_(None)).values(revoked_at=self._now()))
            found = (
                await session.execute(
                    select(ApiKey, Account.plan)
                    .join(Account, Account.id == ApiKey.account_id)
                    .where(which)
                    .execution_options(populate_existing=True)
                )
            ).first()
            if found is None:
                raise ApiKeyNotFound(missing)
            return _info(found[0], found[1])

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def authenticate(self, secret: str | None) -> KeyInfo:
        if not secret:
            raise MissingApiKey("Send your API key in the X-Api-Key header.")
        if not looks_valid(secret):
            # Wrong shape or checksum: a typo or a made-up key, refused without a lookup.
            raise InvalidApiKey("The API key is not valid.")
        digest = _hash(secret)
        async with self._sessions() as session:
            found = (
                await session.execute(
                    select(ApiKey, Account).join(Account, Account.id == ApiKey.account_id).where(
                        ApiKey.secret_hash == digest
                    )
                )
            ).first()
        # The lookup is by hash; compare again in constant time so timing
        # reveals nothing about near-misses.
        if found is None or not hmac.compare_digest(found[0].secret_hash, digest):
            raise InvalidApiKey("The API key is not valid.")
        row, account = found
        if row.revoked_at is not None:
            raise RevokedApiKey("The API key has been revoked.")
        if account.suspended_at is not None:
            raise AccountSuspended(
                "The account is suspended because a payment failed; it is restored as soon as the invoice is paid."
            )
        now = self._now()
        last = aware(row.last_used_at)
        if last is None or (now - last).total_seconds() >= self._touch_interval:
            async with self._sessions.begin() as session:
                await session.execute(update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=now))
            row.last_used_at = now
        return _info(row, account.plan)
