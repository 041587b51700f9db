"""The retention sweep: a background task that deletes what has outlived its retention."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("arclip.retention")


class Sweeper:
    """Runs ``sweep()`` every ``interval`` seconds (first right away) until closed.

    A failing sweep is logged and retried next time; it never stops the loop.
    """

    def __init__(self, sweep: Callable[[], Awaitable[int]], interval: float) -> None:
        self._sweep = sweep
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self.runs = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="arclip-retention-sweep")

    async def _loop(self) -> None:
        while True:
            try:
                removed = await self._sweep()
                if removed:
                    log.info("retention sweep removed %d item(s)", removed)
            except Exception:
                log.exception("retention sweep failed; retrying in %.0f s", self.interval)
            self.runs += 1
            await asyncio.sleep(self.interval)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
