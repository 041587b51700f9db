"""Readiness: can this replica do its work right now? Each backing service probed for what requests need of it.

- database: a write transaction can start (SQLite: the write lock; PostgreSQL: not a
  read-only standby) and, for a database file, its disk has room;
- storage: an object can be written and removed, and the disk (where there is one) has room;
- redis (when configured): it answers a PING;
- inference: the model is loaded and the engine's queue is open.

Every probe has a deadline, so a locked database or a hung server makes the
replica "not ready" quickly instead of making the probe hang.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from sync.storage import ObjectStore
from sync.storage.files import free_bytes_at

from .faults import classify_fault
from .warmup import WarmingEngine

if TYPE_CHECKING:
    from redis.asyncio import Redis

PROBE_KEY = "readyz/probe"


@dataclass
class Check:
    """One service's readiness: ``status`` is ``ok``, ``not_configured``, ``starting`` or ``error``."""

    status: str = "ok"
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "not_configured")

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, **self.detail}


class LowDisk(Exception):
    def __init__(self, free: int, minimum: int) -> None:
        super().__init__(f"{free} bytes free, below the {minimum}-byte minimum")
        self.free = free


@dataclass
class Readiness:
    database: AsyncEngine
    store: ObjectStore
    clipper: WarmingEngine
    redis: Redis | None
    min_free_bytes: int
    timeout_s: float

    async def check(self) -> dict[str, Check]:
        names = ("database", "storage", "redis", "inference")
        checks = await asyncio.gather(
            self._run(self._database()), self._run(self._storage()), self._run(self._redis()), self._run(self._inference())
        )
        return dict(zip(names, checks, strict=True))

    async def _run(self, probe: Awaitable[Check]) -> Check:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await probe
        except TimeoutError:
            return Check("error", {"error": "timeout", "detail": f"no answer within {self.timeout_s:g} s"})
        except LowDisk as exc:
            return Check("error", {"error": "low_disk", "detail": str(exc), "free_bytes": exc.free})
        except Exception as exc:  # any driver or storage error means "not ready", with the reason
            fault = classify_fault(exc)
            return Check("error", {"error": fault.code if fault else exc.__class__.__name__, "detail": _first_line(exc)})

    async def _database(self) -> Check:
        detail: dict[str, Any] = {"dialect": self.database.dialect.name}
        async with self.database.begin() as conn:  # SQLite: BEGIN IMMEDIATE, the write lock (api.database)
            if self.database.dialect.name == "postgresql":
                read_only = await conn.scalar(
                    text("SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'")
                )
                if read_only:
                    raise RuntimeError("the database is read-only (a standby, or default_transaction_read_only)")
            else:
                await conn.execute(text("SELECT 1"))
            await conn.rollback()
        path = self.database.url.database if self.database.dialect.name == "sqlite" else None
        if path and path != ":memory:":
            detail["free_bytes"] = self._require_room(await asyncio.to_thread(free_bytes_at, Path(path).parent))
        return Check("ok", detail)

    async def _storage(self) -> Check:
        await self.store.put(PROBE_KEY, b"ok", "text/plain")
        await self.store.delete(PROBE_KEY)
        free = await self.store.free_bytes()
        return Check("ok", {} if free is None else {"free_bytes": self._require_room(free)})

    async def _redis(self) -> Check:
        if self.redis is None:
            return Check("not_configured")
        await self.redis.ping()
        return Check("ok")

    async def _inference(self) -> Check:
        if not self.clipper.ready:
            elapsed = round(time.monotonic() - self.clipper.started_at, 1)
            if self.clipper.phase == "failed":
                return Check("error", {"error": "inference_unavailable", "detail": str(self.clipper.engine_failure)})
            return Check("starting", {"phase": self.clipper.phase, "seconds": elapsed})
        model = self.clipper.model
        describe = getattr(model, "describe", None)
        if describe is not None:  # a remote model: its server says (segmentation.remote)
            return Check("ok", await describe())
        return Check(
            "ok",
            {
                "model": getattr(getattr(model, "spec", None), "name", model.preset.family),
                "provider": model.provider,
                "location": "in-process",
            },
        )

    def _require_room(self, free: int) -> int:
        if free < self.min_free_bytes:
            raise LowDisk(free, self.min_free_bytes)
        return free


def _first_line(exc: BaseException) -> str:
    text_ = str(exc).strip().splitlines()
    return (text_[0] if text_ else exc.__class__.__name__)[:200]
