"""The clipping engine while its model loads: the server answers at once, and clips once the model is ready.

Loading the ONNX model can take half a minute on a first start (the int8 graph is
built and proven, then cached). Until it is done, ``/healthz`` answers, ``/readyz``
says ``starting`` and what it is doing, and clipping routes answer
``503 starting`` with ``Retry-After`` (``api.faults``), instead of the port
staying closed with nothing said.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from segmentation import ClipEngine

log = logging.getLogger("arclip")


class EngineStarting(Exception):
    """The model is still loading; retry shortly."""

    code = "starting"

    def __init__(self, phase: str, retry_after: int = 5) -> None:
        super().__init__(f"The clipping model is not ready yet: {phase}. Retry shortly.")
        self.detail = str(self)
        self.phase = phase
        self.retry_after = retry_after


class EngineFailed(Exception):
    """The model could not be loaded: no clip can be served until the configuration is fixed."""

    code = "inference_unavailable"

    def __init__(self, reason: str) -> None:
        super().__init__(f"The clipping model could not be loaded: {reason}")
        self.detail = str(self)


class WarmingEngine:
    """Stands in for the ``ClipEngine`` from the start; delegates to it once it is built and started.

    Any use before then raises ``EngineStarting`` (a fault: 503 ``starting``); a load that
    failed raises ``EngineFailed``. ``started_at``/``loaded_in`` say how long it took.
    """

    def __init__(self) -> None:
        self._engine: ClipEngine | None = None
        self._failure: EngineFailed | None = None
        self._task: asyncio.Task[None] | None = None
        self.phase = "not started"
        self.started_at = time.monotonic()
        self.loaded_in: float | None = None

    async def load(self, build: Callable[[], ClipEngine], *, background: bool) -> None:
        """Build with ``build`` (blocking: it runs on a thread) and start the engine; in the background if asked."""
        self.started_at = time.monotonic()
        self.phase = "loading the model; a first start also builds and checks its int8 graph"
        if background:
            self._task = asyncio.create_task(self._load(build), name="arclip-model-load")
        else:
            await self._load(build, fail=True)

    async def _load(self, build: Callable[[], ClipEngine], fail: bool = False) -> None:
        try:
            engine = await asyncio.to_thread(build)
            self.phase = "starting the batcher"
            await engine.start()
        except Exception as exc:
            if fail:
                raise
            log.error("the clipping model could not be loaded: %s", exc, exc_info=exc)
            self._failure = EngineFailed(f"{exc.__class__.__name__}: {exc}")
            self.phase = "failed"
            return
        self._engine = engine
        self.loaded_in = time.monotonic() - self.started_at
        self.phase = "ready"
        log.info(
            "clipping with %s (%s), extra passes: %s; model ready in %.1f s",
            engine.model.provider, getattr(engine.model, "precision", "fp32"),
            ",".join(engine.config.extra_passes) or "none", self.loaded_in,
        )

    @property
    def ready(self) -> bool:
        return self._engine is not None

    @property
    def engine_failure(self) -> EngineFailed | None:
        return self._failure

    @property
    def engine(self) -> ClipEngine:
        if self._engine is not None:
            return self._engine
        if self._failure is not None:
            raise self._failure
        raise EngineStarting(self.phase)

    def __getattr__(self, name: str) -> Any:
        # Only names this class lacks get here: the engine's own (clip, admission, model, config …).
        return getattr(self.engine, name)

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            # The loading thread cannot be interrupted; the process exits once it ends.
            self._task.cancel()
        if self._engine is not None:
            await self._engine.close()
