"""ScreenService: the latest screen picture of each pairing, and locating phone photos in it.

The companion uploads its screen/canvas picture now and then; phones paste against it
many times. So the picture is indexed once (features, markers: ``sync.locate.ScreenIndex``)
when it arrives, and the index is kept in a small LRU keyed by pairing and picture
version. The picture itself goes to the object store and its version to the ``screens``
table, so after a restart (or on another replica) the first paste rebuilds the index
from storage and the next ones hit the cache.

Decoding, indexing and locating are CPU work: they run on this service's own thread
pool, behind a bounded admission so a burst of pastes is refused early (``LocatorBusy``)
rather than queued without end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Protocol, TypeVar

import numpy as np
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from segmentation.decode import ImageInfo, ImageLimits, decode, probe
from sync.db import ScreenRow
from sync.locate import Location
from sync.storage import ObjectNotFound, ObjectStore

from .errors import InvalidScreen, LocatorBusy, NoScreen
from .models import ScreenInfo
from .service import pairing_folder

log = logging.getLogger("arclip.screens")

T = TypeVar("T")

HINT_NO_SCREEN = "the companion has not sent its screen yet: open the canvas on the laptop"
_MEDIA = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "heif": "image/heif"}


class Locator(Protocol):
    """What ``sync.locate.ScreenLocator`` offers; tests may pass a stand-in."""

    def index(self, screen: np.ndarray, fiducials: bool | None = None) -> Any: ...

    def locate(self, view_bgr: np.ndarray, index: Any) -> Location: ...


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _decode_bgr(data: bytes, limits: ImageLimits, long_side: int | None = None) -> tuple[np.ndarray, ImageInfo]:
    """BGR pixels upright per EXIF, reduced (JPEG DCT scaling) to about ``long_side`` when given,
    and the original's header (displayed size, format)."""
    info = probe(data, limits)
    min_size = None
    if long_side is not None and max(info.width, info.height) > long_side:
        f = long_side / max(info.width, info.height)
        min_size = (max(1, round(info.width * f)), max(1, round(info.height * f)))
    image = decode(data, info, min_size=min_size)
    return np.ascontiguousarray(image.rgb[:, :, ::-1]), info


def _index_info(pairing_id: str, version: str, width: int, height: int, updated: datetime, index: Any) -> ScreenInfo:
    return ScreenInfo(
        pairing_id=pairing_id,
        version=version,
        width=width,
        height=height,
        updated_at=updated,
        features=int(getattr(index, "n_features", 0)),
        markers=len(getattr(index, "markers", {}) or {}),
        locatable=bool(getattr(index, "locatable", True)),
    )


class ScreenService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        store: ObjectStore,
        locator: Locator,
        *,
        limits: ImageLimits | None = None,
        workers: int = 2,
        max_queue: int = 16,
        cache_size: int = 32,
        view_side: int = 1600,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._sessions = sessions
        self._store = store
        self.locator = locator
        self.limits = limits or ImageLimits()
        self.workers = max(1, workers)
        self.max_queue = max(1, max_queue)
        self.cache_size = max(1, cache_size)
        self.view_side = view_side
        self._clock = clock
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="arclip-locate")
        self._slots = asyncio.Semaphore(self.workers)
        self._admitted = 0
        self._indexes: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._building: dict[tuple[str, str], asyncio.Future[Any]] = {}
        self.index_builds = 0  # how many indexes were built (tests and benchmarks watch it)

    async def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._indexes.clear()

    # -- admission and the pool ----------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def admission(self) -> AsyncIterator[None]:
        """A place in the bounded queue of locate/index work; ``LocatorBusy`` when full.

        Routes enter it before reading the upload, like the clipper's.
        """
        if self._admitted >= self.max_queue:
            raise LocatorBusy("Too many pastes are being located; retry shortly.", retry_after=1)
        self._admitted += 1
        try:
            yield
        finally:
            self._admitted -= 1

    async def _cpu(self, fn: Callable[..., T], *args: Any) -> T:
        async with self._slots:
            return await asyncio.get_running_loop().run_in_executor(self._pool, partial(fn, *args))

    # -- screen pictures -------------------------------------------------------------------------
    async def put(self, pairing_id: str, data: bytes, fiducials: bool | None = None) -> ScreenInfo:
        """Make ``data`` the pairing's latest screen picture; index it now so pastes are fast."""
        fmt, width, height, index = await self._cpu(self._build_from_bytes, data, fiducials)
        version = secrets.token_hex(8)
        key = f"screens/{pairing_folder(pairing_id)}/{version}.{fmt}"
        await self._store.put(key, data, _MEDIA.get(fmt, "application/octet-stream"))
        now = self._clock()
        async with self._sessions() as session:
            old_key = await session.scalar(select(ScreenRow.storage_key).where(ScreenRow.pairing_id == pairing_id))
        values = {
            "version": version, "storage_key": key, "content_type": _MEDIA.get(fmt, ""),
            "width": width, "height": height, "fiducials": fiducials, "updated_at": now,
        }
        await self._save(pairing_id, values)
        if old_key and old_key != key:
            with contextlib.suppress(Exception):  # an orphan goes with the pairing's folder
                await self._store.delete(old_key)
        self._drop(pairing_id)
        self._remember((pairing_id, version), index)
        return _index_info(pairing_id, version, width, height, now, index)

    async def _save(self, pairing_id: str, values: dict[str, Any]) -> None:
        """Upsert the pairing's row in a transaction whose first statement writes.

        (Read-then-write transactions cannot wait for SQLite's lock; they fail with "database is locked".)
        """
        for attempt in (1, 2):
            try:
                async with self._sessions.begin() as session:
                    updated = await session.execute(
                        update(ScreenRow).where(ScreenRow.pairing_id == pairing_id).values(**values)
                    )
                    if not updated.rowcount:
                        session.add(ScreenRow(pairing_id=pairing_id, **values))
                return
            except IntegrityError:  # a concurrent first upload inserted it: update that one
                if attempt == 2:
                    raise

    def _build_from_bytes(self, data: bytes, fiducials: bool | None) -> tuple[str, int, int, Any]:
        screen, info = _decode_bgr(data, self.limits)
        try:
            index = self.locator.index(screen, fiducials=fiducials)
        except ValueError as exc:
            raise InvalidScreen(f"The screen picture cannot be used: {exc}.") from exc
        return info.format, info.width, info.height, index

    async def latest(self, pairing_id: str) -> ScreenInfo:
        row = await self._row(pairing_id)
        index = await self._index_for(row)
        return _index_info(pairing_id, row.version, row.width, row.height, _aware(row.updated_at), index)

    async def _row(self, pairing_id: str) -> ScreenRow:
        async with self._sessions() as session:
            row = await session.get(ScreenRow, pairing_id)
        if row is None:
            raise NoScreen("No screen picture has been uploaded for this pairing.", HINT_NO_SCREEN)
        return row

    async def _index_for(self, row: ScreenRow) -> Any:
        key = (row.pairing_id, row.version)
        if key in self._indexes:
            self._indexes.move_to_end(key)
            return self._indexes[key]
        pending = self._building.get(key)
        if pending is not None:  # one build per picture, however many pastes wait for it
            return await asyncio.shield(pending)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._building[key] = future
        try:
            try:
                data = await self._store.get(row.storage_key)
            except ObjectNotFound:
                raise NoScreen("The screen picture is gone; upload it again.", HINT_NO_SCREEN) from None
            *_, index = await self._cpu(self._build_from_bytes, data, row.fiducials)
            self._remember(key, index)
            future.set_result(index)
            return index
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it; nobody else needs to
            raise
        finally:
            del self._building[key]

    def _remember(self, key: tuple[str, str], index: Any) -> None:
        self.index_builds += 1
        self._indexes[key] = index
        self._indexes.move_to_end(key)
        while len(self._indexes) > self.cache_size:
            self._indexes.popitem(last=False)

    def _drop(self, pairing_id: str) -> None:
        for key in [k for k in self._indexes if k[0] == pairing_id]:
            del self._indexes[key]

    # -- pastes ----------------------------------------------------------------------------------
    async def locate(self, pairing_id: str, view: bytes) -> Location:
        """Where the centre of the phone's photo ``view`` lands on the latest screen picture.

        ``scale`` is screen pixels per pixel of the photo as sent (whatever size it was decoded at).
        """
        index = await self._index_for(await self._row(pairing_id))
        return await self._cpu(self._locate, view, index)

    def _locate(self, view: bytes, index: Any) -> Location:
        pixels, info = _decode_bgr(view, self.limits, self.view_side)
        location = self.locator.locate(pixels, index)
        if location.found and location.scale is not None and pixels.shape[1] != info.width:
            factor = pixels.shape[1] / info.width  # decoded pixels per original pixel
            location = replace(location, scale=location.scale * factor)
        return location

    # -- lifetime ----------------------------------------------------------------------------------
    async def delete_pairing(self, pairing_id: str) -> int:
        async with self._sessions.begin() as session:
            await session.execute(delete(ScreenRow).where(ScreenRow.pairing_id == pairing_id))
        self._drop(pairing_id)
        return await self._store.delete_prefix(f"screens/{pairing_folder(pairing_id)}/")

    async def sweep(self, older_than: timedelta) -> int:
        """Delete screen pictures not replaced for ``older_than``; returns how many."""
        cutoff = self._clock() - older_than
        async with self._sessions() as session:
            stale = (await session.scalars(select(ScreenRow.pairing_id).where(ScreenRow.updated_at <= cutoff))).all()
        swept = 0
        for pairing_id in stale:
            async with self._sessions.begin() as session:
                gone = await session.execute(
                    delete(ScreenRow).where(ScreenRow.pairing_id == pairing_id, ScreenRow.updated_at <= cutoff)
                )
            if gone.rowcount:  # not replaced since the query
                self._drop(pairing_id)
                await self._store.delete_prefix(f"screens/{pairing_folder(pairing_id)}/")
                swept += 1
        return swept
