"""A micro-batcher: concurrent requests share one model run.

Requests queue up; a single worker takes the first, waits at most
``max_wait`` for more (up to the model's ``max_batch``) and runs them
together on a dedicated inference thread. On a GPU this multiplies
throughput; on a CPU ``max_batch`` is 1 and it is simply a fair queue that
keeps one inference at a time on the cores.
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .session import SegmentationModel


@dataclass
class _Job:
    tensor: np.ndarray  # (3, S, S)
    future: asyncio.Future[np.ndarray] = field(repr=False)


class MicroBatcher:
    def __init__(self, model: SegmentationModel, *, max_batch: int | None = None, max_wait: float = 0.004) -> None:
        self.model = model
        self.max_batch = max(1, min(max_batch or model.max_batch, model.max_batch))
        self.max_wait = max_wait
        self._queue: asyncio.Queue[_Job] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="arclip-infer")
        self.batch_sizes: list[int] = []  # recent batch sizes, for /readyz and tests

    async def start(self) -> None:
        if self._worker is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._run(), name="arclip-batcher")

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        self._executor.shutdown(wait=True)

    async def infer(self, tensor: np.ndarray) -> np.ndarray:
        """One (3, S, S) input in, its (S, S) saliency out."""
        if self._queue is None:
            await self.start()
        assert self._queue is not None
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Job(tensor, future))
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
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._collect()
            if not jobs:
                continue
            batch = np.stack([job.tensor for job in jobs])
            try:
                result = await loop.run_in_executor(self._executor, self.model.predict, batch)
            except Exception as exc:  # one bad run fails its own jobs, not the worker
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            self.batch_sizes = (self.batch_sizes + [len(jobs)])[-64:]
            for job, saliency in zip(jobs, result):
                if not job.future.done():
                    job.future.set_result(saliency)
