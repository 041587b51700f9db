"""A micro-batcher: concurrent requests share one model run.

Requests queue up; a single worker takes the first, waits at most
``max_wait`` for more (up to the model's ``max_batch``) and runs them
together on a dedicated inference thread. On a GPU this multiplies
throughput. On a CPU ``max_batch`` is 1 (a batch is no cheaper per image)
and the model can run *lean* (one thread): a lone inference gets every core
(lowest latency), but while other requests have CPU work, or another
inference is running, it runs on one core, up to one run per core, which
costs ~10% less CPU per image and keeps every core busy under load.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .session import SegmentationModel


@dataclass
class _Job:
    tensor: np.ndarray  # (3, H, W): the preset's square, or another size for the "aspect" pass
    future: asyncio.Future[np.ndarray] = field(repr=False)
    lean: bool = False  # asked to run on one thread (a caller with runs for every lane at once)


class MicroBatcher:
    def __init__(
        self,
        model: SegmentationModel,
        *,
        max_batch: int | None = None,
        max_wait: float = 0.004,
        busy: Callable[[], bool] | None = None,
    ) -> None:
        self.model = model
        self.max_batch = max(1, min(max_batch or model.max_batch, model.max_batch))
        self.max_wait = max_wait
        # ``busy()``: other requests are using the CPU right now; a model that can
        # (``can_run_lean``) then infers on one thread instead of all of them.
        self._busy = busy if getattr(model, "can_run_lean", False) else None
        # Lanes: model runs at once. One, except for a lean-capable (CPU) model:
        # then up to one single-threaded run per core, so that two requests
        # reaching inference together use both cores instead of queueing.
        # A remote model says how many runs it keeps in flight (``lanes``): its server batches across them.
        self.lanes = getattr(model, "lanes", None) or (max(1, os.cpu_count() or 1) if self._busy is not None else 1)
        self.lean_runs = 0  # inferences run lean, for tests and /readyz
        self._queue: asyncio.Queue[_Job] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._free_lanes: asyncio.Semaphore | None = None
        self._in_flight = 0
        self._runs: set[asyncio.Task[None]] = set()
        self._executor = ThreadPoolExecutor(max_workers=self.lanes, thread_name_prefix="arclip-infer")
        self.batch_sizes: list[int] = []  # recent batch sizes, for /readyz and tests

    @property
    def can_run_lean(self) -> bool:
        """Whether its runs may go on one thread (a CPU model that has a lean session)."""
        return self._busy is not None

    async def start(self) -> None:
        if self._worker is None:
            self._queue = asyncio.Queue()
            self._free_lanes = asyncio.Semaphore(self.lanes)
            self._worker = asyncio.create_task(self._run(), name="arclip-batcher")

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        for run in list(self._runs):
            run.cancel()
        if self._runs:
            await asyncio.gather(*self._runs, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def infer(self, tensor: np.ndarray, *, lean: bool = False) -> np.ndarray:
        """One (3, H, W) input in, its (H, W) saliency out.

        ``lean``: run on one thread even alone (for a caller that sends one run per lane at once).
        """
        if self._queue is None:
            await self.start()
        assert self._queue is not None
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Job(tensor, future, lean))
        return await future

    async def _collect(self) -> list[_Job]:
        assert self._queue is not None
        jobs = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while len(jobs) < self.max_batch:
            if not self._queue.empty():
                jobs.append(self._queue.get_nowait())
                continue
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                jobs.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return [job for job in jobs if not job.future.cancelled()]

    async def _run(self) -> None:
        assert self._free_lanes is not None
        while True:
            await self._free_lanes.acquire()
            try:
                jobs = await self._collect()
            except BaseException:
                self._free_lanes.release()
                raise
            if not jobs:
                self._free_lanes.release()
                continue
            # Every core for a lone inference; one when another inference or
            # other requests' CPU stages are running alongside it.
            lean = self._busy is not None and (self._in_flight > 0 or self._busy() or any(j.lean for j in jobs))
            self._in_flight += 1
            run = asyncio.create_task(self._execute(jobs, lean))
            self._runs.add(run)
            run.add_done_callback(self._runs.discard)

    async def _execute(self, jobs: list[_Job], lean: bool) -> None:
        assert self._free_lanes is not None
        try:
            predict = self.model.predict
            if lean:
                predict = functools.partial(self.model.predict, lean=True)  # type: ignore[call-arg]
                self.lean_runs += 1
            # One model run per input size: only same-sized inputs stack into a batch.
            groups: dict[tuple[int, ...], list[_Job]] = {}
            for job in jobs:
                groups.setdefault(job.tensor.shape, []).append(job)
            loop = asyncio.get_running_loop()
            for group in groups.values():
                batch = np.stack([job.tensor for job in group])
                try:
                    result = await loop.run_in_executor(self._executor, predict, batch)
                except Exception as exc:  # one bad run fails its own jobs, not the worker
                    for job in group:
                        if not job.future.done():
                            job.future.set_exception(exc)
                    continue
                self.batch_sizes = (self.batch_sizes + [len(group)])[-64:]
                for job, saliency in zip(group, result):
                    if not job.future.done():
                        job.future.set_result(saliency)
        finally:
            self._in_flight -= 1
            self._free_lanes.release()
