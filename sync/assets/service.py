"""AssetService: clipped images of a pairing, stored, signed, and deleted on time.

An asset's bytes live in the object store under ``assets/<pairing>/<asset>.png``;
its metadata is a row in the ``assets`` table. Bytes are written first and the
row second, so a row never points at nothing; a crash in between leaves an
orphan object that the pairing's deletion removes.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from segmentation.errors import echo
from sync.db import AssetRow
from sync.storage import ObjectNotFound, ObjectStore

from .errors import AssetNotFound
from .models import Asset, BBox
from .signing import UrlSigner

log = logging.getLogger("arclip.assets")

ASSET_PREFIX = "ast_"
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SWEEP_BATCH = 500


def utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything we store is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def pairing_folder(pairing_id: str) -> str:
    """A storage path segment for a pairing: its id when safe, else a digest of it."""
    if _SAFE_ID.match(pairing_id):
        return pairing_id
    return "h" + hashlib.sha256(pairing_id.encode()).hexdigest()[:40]


def _asset(row: AssetRow) -> Asset:
    return Asset(
        id=row.id,
        pairing_id=row.pairing_id,
        storage_key=row.storage_key,
        content_type=row.content_type,
        width=row.width,
        height=row.height,
        bbox=BBox(row.bbox_left, row.bbox_top, row.bbox_width, row.bbox_height),
        size_bytes=row.size_bytes,
        created_at=_aware(row.created_at),
        expires_at=_aware(row.expires_at),
    )


class AssetService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        store: ObjectStore,
        signer: UrlSigner,
        *,
        retention: timedelta = timedelta(hours=24),
        url_ttl: timedelta = timedelta(minutes=15),
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._sessions = sessions
        self._store = store
        self._signer = signer
        self.retention = retention
        self.url_ttl = url_ttl
        self._clock = clock

    async def create(
        self, pairing_id: str, data: bytes, *, width: int, height: int, bbox: BBox, content_type: str = "image/png"
    ) -> Asset:
        asset_id = ASSET_PREFIX + secrets.token_hex(12)
        now = self._clock()
        key = f"assets/{pairing_folder(pairing_id)}/{asset_id}.png"
        await self._store.put(key, data, content_type)
        row = AssetRow(
            id=asset_id,
            pairing_id=pairing_id,
            storage_key=key,
            content_type=content_type,
            width=width,
            height=height,
            bbox_left=bbox.left,
            bbox_top=bbox.top,
            bbox_width=bbox.width,
            bbox_height=bbox.height,
            size_bytes=len(data),
            created_at=now,
            expires_at=now + self.retention,
        )
        try:
            async with self._sessions.begin() as session:
                session.add(row)
        except BaseException:
            await self._forget_object(key)
            raise
        return _asset(row)

    async def get(self, asset_id: str, pairing_id: str | None = None) -> Asset:
        """The asset, if it exists, has not expired, and (when given) belongs to ``pairing_id``."""
        async with self._sessions() as session:
            row = await session.get(AssetRow, asset_id)
        if row is None or (pairing_id is not None and row.pairing_id != pairing_id):
            raise AssetNotFound(f"No asset {echo(asset_id)!r} in this pairing.")
        asset = _asset(row)
        if asset.expires_at <= self._clock():
            raise AssetNotFound(f"Asset {echo(asset_id)!r} has expired.")
        return asset

    async def snapshot(self, pairing_id: str) -> dict[str, Any]:
        """The pairing's live assets, oldest first, for a hub resync snapshot.

        URLs are signed paths (no host): a client that missed ``asset.created``
        messages resolves them against the origin it already talks to.
        """
        now = self._clock()
        async with self._sessions() as session:
            rows = (
                await session.scalars(
                    select(AssetRow)
                    .where(AssetRow.pairing_id == pairing_id, AssetRow.expires_at > now)
                    .order_by(AssetRow.created_at)
                )
            ).all()
        assets = [_asset(row) for row in rows]
        return {"items": [self._snapshot_item(asset) for asset in assets]}

    def _snapshot_item(self, asset: Asset) -> dict[str, Any]:
        # created_at (ISO 8601, UTC): a client can tell a clip cut a moment ago, perhaps about to
        # be pasted, from an old one.
        created_at = asset.created_at.isoformat(timespec="milliseconds")
        return {**asset.to_json(), "url": self.signed_path(asset), "created_at": created_at}

    async def get_signed(self, asset_id: str, expires: str | None, sig: str | None) -> Asset:
        """The asset a signed URL names; ``SignatureError`` unless the URL is valid now."""
        self._signer.verify(asset_id, expires, sig)
        return await self.get(asset_id)

    async def read(self, asset: Asset) -> bytes:
        try:
            return await self._store.get(asset.storage_key)
        except ObjectNotFound:
            raise AssetNotFound(f"Asset {asset.id!r} is gone.") from None

    def signed_path(self, asset: Asset) -> str:
        """``/v1/assets/<id>?expires=…&sig=…``: valid for ``url_ttl``, never past the asset's own expiry."""
        signature = self._signer.sign(asset.id, self.url_ttl.total_seconds(), asset.expires_at.timestamp())
        return f"/v1/assets/{asset.id}?{signature.query()}"

    async def delete(self, asset: Asset) -> None:
        await self._store.delete(asset.storage_key)
        async with self._sessions.begin() as session:
            await session.execute(delete(AssetRow).where(AssetRow.id == asset.id))

    async def delete_pairing(self, pairing_id: str) -> int:
        """Delete every asset of a pairing (its close listener); returns how many objects went."""
        async with self._sessions.begin() as session:
            await session.execute(delete(AssetRow).where(AssetRow.pairing_id == pairing_id))
        return await self._store.delete_prefix(f"assets/{pairing_folder(pairing_id)}/")

    async def sweep(self) -> int:
        """Delete assets past their retention; returns how many."""
        total = 0
        while True:
            now = self._clock()
            async with self._sessions() as session:
                rows = (
                    await session.execute(
                        select(AssetRow.id, AssetRow.storage_key).where(AssetRow.expires_at <= now).limit(_SWEEP_BATCH)
                    )
                ).all()
            if not rows:
                return total
            for _, key in rows:
                await self._store.delete(key)
            async with self._sessions.begin() as session:
                await session.execute(delete(AssetRow).where(AssetRow.id.in_([asset_id for asset_id, _ in rows])))
            total += len(rows)
            if len(rows) < _SWEEP_BATCH:
                return total

    async def _forget_object(self, key: str) -> None:
        try:
            await self._store.delete(key)
        except Exception:  # the original error matters more; the sweep of the pairing catches the rest
            log.warning("could not remove orphan object %s", key, exc_info=True)
