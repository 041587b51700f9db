"""The clipping engine: bytes in, cut-out bytes out, under a bounded work queue.

Pipeline for one image (CPU stages on a thread pool, inference on the batcher):

    probe header ──► reduced decode (working size) ──► model input ──► batcher ──┐
                 └─► full decode (only when the output needs it) ──────────────────┴─► alpha ─► compose ─► encode

With ``extra_passes`` (``passes.py``; ``ARCLIP_EXTRA_PASSES``; the engine's own
default is none, the server's is chosen by ``passes.choose_passes``) the model runs
first on the photo at its own aspect ratio (``aspect_first``), and also on the mirrored
input ("flip"), on the photo squeezed into the model's square ("aspect"),
either only when the first map is unsure ("-uncertain"), and/or on the crop around the
first pass's object ("zoom"), and the maps are merged before refinement. A request's
``quality`` picks among them: "fast" none, "balanced" the configured ones, "best" every one.
"balanced" runs its extra views only while the engine has idle capacity
(``load_aware_passes``): under load it sheds views, not throughput. Each result says
which passes ran (``passes``: "base", then "flip", "aspect", "zoom").

The full-size decode runs while the model works, so a 12 MP photo costs little
more than its inference. Where the CPU goes for a 12 MP JPEG (2 cores, ~0.42 CPU s
in all): inference ~0.25, JPEG decodes (libjpeg-turbo, reduced + full) ~0.06,
alpha, RGBA composition (OpenCV) ~0.01, PNG (strip-wise Up filter + ISA-L) ~0.03.
Throughput under load comes from three things: glibc keeps freed image buffers
for reuse (``tune_malloc``: no page-faulting 0.5 GB back in per image), the
model runs lean (one thread per inference) whenever other work shares the
cores (see ``batching``), and each request keeps its slot until its bytes are
encoded, so at most ``concurrency`` full-size images are alive at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import math
import os
import platform
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np

from .alpha import AlphaParams, refine_alpha
from .batching import MicroBatcher
from .cutout import Box, compose, crop_window, foreground_box
from .decode import DecodedImage, ImageInfo, ImageLimits, decode, probe
from .encode import encode
from .errors import Overloaded
from .matting import estimate_foreground
from .options import ClipOptions
from .passes import (
    EVERY_VIEW,
    Pass,
    View,
    ZoomParams,
    crop,
    is_unsure,
    merge_views,
    plan_views,
    zoom_merge,
    zoom_window,
)
from .preprocess import ASPECT_SCALE, aspect_view_size, flipped_input, to_model_input, working_size
from .session import SegmentationModel

MEDIA_TYPES = {"png": "image/png", "webp": "image/webp"}


@dataclass(frozen=True)
class EngineConfig:
    limits: ImageLimits = field(default_factory=ImageLimits)
    # Requests processed at once (CPU stages); more wait in the queue.
    concurrency: int = field(default_factory=lambda: os.cpu_count() or 1)
    # Requests admitted in all (processing + waiting); beyond it: Overloaded.
    max_queue: int = 16
    max_batch: int | None = None
    max_batch_wait: float = 0.004
    # Longest side of the working image used for refinement and the model input.
    work_side: int = 1024
    alpha: AlphaParams = field(default_factory=AlphaParams)
    # Extra model runs per image for a better mask (``passes``): "flip" (+1 run),
    # "aspect" (+1, +2 with flip), their "-uncertain" kinds (only when the first map
    # is unsure), "zoom" (all of that again on the object's crop). Off by default:
    # on a CPU each run costs about as much as the rest of the pipeline together.
    extra_passes: tuple[Pass, ...] = ()
    zoom: ZoomParams = field(default_factory=ZoomParams)
    # The aspect views' shorter side, as a fraction of the model's square side
    # (``preprocess.aspect_view_size``).
    aspect_scale: float = ASPECT_SCALE
    # The first model view is the photo at its own aspect (what ``fast``, a shedding
    # ``balanced`` and the unsure rule get), not the model's squeezed square: alone it is
    # better and cheaper (benchmarks/quality/README.md, "The photo's aspect first").
    aspect_first: bool = True
    # "balanced" runs its extra views only while the engine has idle capacity (``idle``):
    # under load a request gets the base view instead of slowing every other one down.
    # Off: every request gets the views its quality asks for (offline, deterministic).
    load_aware_passes: bool = False
    # glibc only: keep freed big arrays in one heap for reuse instead of
    # unmapping them (see ``tune_malloc``). Process-wide; off for embedders
    # who manage their own allocator.
    tune_malloc: bool = True


@dataclass(frozen=True)
class ClipResult:
    data: bytes
    media_type: str
    width: int
    height: int
    foreground: Box  # in the output image's pixels
    source: ImageInfo
    passes: tuple[str, ...] = ("base",)  # the model passes that ran: "base", then "flip", "aspect", "zoom"


@dataclass
class Cutout:
    """The un-encoded result, for callers that want pixels (CLI, benchmarks)."""

    pixels: np.ndarray
    alpha: np.ndarray  # full output-size alpha, before cropping
    foreground: Box
    source: ImageInfo
    passes: tuple[str, ...] = ("base",)


def _always() -> bool:
    return True


class ClipEngine:
    def __init__(self, model: SegmentationModel, config: EngineConfig | None = None) -> None:
        self.model = model
        self.config = config or EngineConfig()
        if self.config.tune_malloc:
            tune_malloc()
        self._cpu_demand = 0  # CPU stages running or queued on the pool right now
        self.batcher = MicroBatcher(
            model,
            max_batch=self.config.max_batch,
            max_wait=self.config.max_batch_wait,
            # Inference takes every core unless other requests have CPU work to
            # do meanwhile; then it runs on one and leaves them the rest.
            busy=lambda: self._cpu_demand > 0,
        )
        self._pool = ThreadPoolExecutor(max_workers=self.config.concurrency, thread_name_prefix="arclip-cpu")
        self._slots = asyncio.Semaphore(self.config.concurrency)
        self._admitted = 0
        self._requests = 0  # in ``cut``/``clip`` now: running or waiting for a slot
        self._seconds_per_image = 1.0  # running estimate, for Retry-After
        # The passes each ``quality`` runs (same price): "balanced" is the configured set,
        # "fast" none, "best" each pass on every image (a square-only model skips "aspect" itself).
        self._passes: dict[str, tuple[Pass, ...]] = {
            "fast": (), "balanced": self.config.extra_passes, "best": EVERY_VIEW,
        }
        self._views = {quality: plan_views(passes) for quality, passes in self._passes.items()}

    async def start(self) -> None:
        await self.batcher.start()

    async def close(self) -> None:
        await self.batcher.close()
        self._pool.shutdown(wait=True)

    @property
    def queued(self) -> int:
        return self._admitted

    def idle(self) -> bool:
        """Whether a request may spend more model runs: nothing waits for a place and one is free.

        Counts the admitted requests (whose uploads may still be arriving) as well as
        those already inside; an engine of one slot is idle while it holds one request.
        """
        return max(self._admitted, self._requests) <= max(1, self.config.concurrency - 1)

    @contextlib.asynccontextmanager
    async def admission(self) -> AsyncIterator[None]:
        """Hold a place in the bounded queue; raise Overloaded when it is full.

        Callers enter this *before* reading the upload so an overloaded server
        never buffers bodies it cannot process.
        """
        if self._admitted >= self.config.max_queue:
            waves = self._admitted / max(self.config.concurrency, 1)
            retry = min(30, max(1, math.ceil(waves * self._seconds_per_image)))
            raise Overloaded("The clipping queue is full; retry shortly.", retry_after=retry)
        self._admitted += 1
        try:
            yield
        finally:
            self._admitted -= 1

    async def _cpu(self, fn, *args, demand: int = 1):  # type: ignore[no-untyped-def]
        """Run a CPU stage on the pool; ``demand`` 0 keeps it out of the busy count."""
        self._cpu_demand += demand
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        finally:
            self._cpu_demand -= demand

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        """One of ``concurrency`` places in the CPU pipeline; also times it for Retry-After."""
        self._requests += 1
        try:
            async with self._slots:
                started = time.perf_counter()
                yield
                elapsed = time.perf_counter() - started
                self._seconds_per_image = 0.8 * self._seconds_per_image + 0.2 * elapsed
        finally:
            self._requests -= 1

    async def cut(self, data: bytes, options: ClipOptions) -> Cutout:
        async with self._slot():
            return await self._cut(data, options)

    async def clip(self, data: bytes, options: ClipOptions) -> ClipResult:
        # Encoding stays inside the slot: a finished 12 MP cut-out (48 MB) never
        # waits in a queue for the encoder while new images are decoded.
        async with self._slot():
            cutout = await self._cut(data, options)
            encoded = await self._cpu(encode, cutout.pixels, options.format)
        height, width = cutout.pixels.shape[:2]
        return ClipResult(
            data=encoded,
            media_type=MEDIA_TYPES[options.format],
            width=width,
            height=height,
            foreground=cutout.foreground,
            source=cutout.source,
            passes=cutout.passes,
        )

    async def _cut(self, data: bytes, options: ClipOptions) -> Cutout:
        info: ImageInfo = await self._cpu(probe, data, self.config.limits)
        out_w, out_h = options.output_size(info.width, info.height)
        # Only a full-size output is decoded at the JPEG's own size, where its DCT scales apply.
        full_size = (out_w, out_h) == (info.width, info.height)
        work_w, work_h = working_size(out_w, out_h, self.config.work_side, jpeg=info.format == "jpeg" and full_size)

        full_task: asyncio.Future[DecodedImage] | None = None

        def decode_full() -> asyncio.Future[DecodedImage]:
            # Short, and beside this request's own work: not a reason for a lean inference.
            return asyncio.ensure_future(self._cpu(_decode_resized, data, info, (out_w, out_h), demand=0))

        # A JPEG's full-size decode runs beside the small one when the pool has room, so it
        # is (nearly) done before the model starts: overlapping the model, it slows the
        # inference on the core they share (12 MP, in process: 0.19 s against 0.14 s alone).
        separate_full = info.format == "jpeg" and (work_w, work_h) != (out_w, out_h)
        if separate_full and self.config.concurrency > 1:
            full_task = decode_full()
        try:
            work, full = await self._decode(data, info, (work_w, work_h), (out_w, out_h))
            if separate_full and full_task is None:
                full_task = decode_full()
            views = self._views[options.quality]
            # "balanced" asks again before each extra run whether the engine has room for it.
            may_add = self.idle if self.config.load_aware_passes and options.quality == "balanced" else _always
            ran = {"base"}
            saliency = await self._saliency(work.rgb, views, may_add, ran)
            if full_task is not None:
                full = await full_task
        finally:
            if full_task is not None and not full_task.done():
                full_task.cancel()
            elif full_task is not None and not full_task.cancelled():
                full_task.exception()  # seen here, so a failed decode is not logged as never retrieved
        assert full is not None
        if "zoom" in self._passes[options.quality] and may_add():
            saliency = await self._zoom(saliency, work.rgb, views, may_add, ran)
        cutout = await self._cpu(self._finish, saliency, work, full, options, info)
        cutout.passes = tuple(p for p in ("base", "flip", "aspect", "zoom") if p in ran)
        return cutout

    async def _saliency(
        self,
        rgb: np.ndarray,
        views: tuple[list[View], list[View]],
        may_add: Callable[[], bool] = _always,
        ran: set[str] | None = None,
    ) -> np.ndarray:
        """The model's map of ``rgb``, with the extra views merged in.

        The first view is the photo at its own aspect (``aspect_first``; the square where the
        photo is about square or the model takes only its square). The views of "flip"/"aspect"
        run with it; those of the -uncertain passes follow only when the first map is unsure of
        itself (``passes.is_unsure``). Either runs only when ``may_add()`` says so; ``ran``
        collects the passes that did.
        """
        now, later = views
        ran = set() if ran is None else ran
        if now and not may_add():
            now, later = [], []
        wide: asyncio.Future[np.ndarray | None] | None = None
        square: asyncio.Future[np.ndarray] | None = None

        def wide_input() -> asyncio.Future[np.ndarray | None]:
            nonlocal wide  # made once, for every view at the photo's aspect
            if wide is None:
                wide = asyncio.ensure_future(self._aspect_input(rgb))
            return wide

        def square_input() -> asyncio.Future[np.ndarray]:
            nonlocal square  # made once, and only where a view needs it
            if square is None:
                # Short, and this request's own: not a reason for its next view to run lean
                # (made beside the first extra view, it used to halve that view's threads).
                square = asyncio.ensure_future(self._cpu(to_model_input, rgb, self.model.preset, demand=0))
            return square

        first = await wide_input() if self.config.aspect_first else None
        first_is_aspect = first is not None

        async def infer(view: View, lean: bool = False) -> np.ndarray | None:
            """One view's map, mirrored back where it was mirrored; None where it adds nothing."""
            seen = await (wide_input() if view.at_aspect(first_is_aspect) else square_input())
            if seen is None:
                return None
            ran.add("aspect" if view.aspect else "flip")
            if not view.mirrored:
                return await self.batcher.infer(seen, lean=lean)
            return (await self.batcher.infer(flipped_input(seen), lean=lean))[..., ::-1]

        base = first if first is not None else await square_input()
        plain, *extra = await self._each(
            [functools.partial(self.batcher.infer, base), *(functools.partial(infer, view) for view in now)]
        )
        if later and is_unsure(plain) and may_add():
            if any(view.aspect for view in later):
                # The other shape's input, made while the first extra view runs.
                (square_input if first_is_aspect else wide_input)()
            extra += await self._each([functools.partial(infer, view) for view in later])
        return merge_views([plain, *(m for m in extra if m is not None)])

    async def _each(self, runs: list[Callable[..., Awaitable[np.ndarray | None]]]) -> list[np.ndarray | None]:
        """One request's model runs (each called with ``lean=``): together where the model batches
        them or where there is one for every lane, else one after another.

        On a CPU (batches of one) a lone request's runs take every core one after another:
        three views queued together would share two cores unevenly (measured in process at
        12 MP: 0.61 s together, 0.57 s one by one). As many runs as lanes go side by side on
        one thread each (the int8 graph, two views on two cores: 0.87-0.90 of the time one
        after the other on both). Other requests' runs still share the lanes.
        """
        if self.batcher.max_batch > 1:
            return list(await asyncio.gather(*(run(lean=False) for run in runs)))
        lanes = self.batcher.lanes
        if self.batcher.can_run_lean and len(runs) > 1 and len(runs) % lanes == 0:
            return list(await asyncio.gather(*(run(lean=True) for run in runs)))
        return [await run(lean=False) for run in runs]

    async def _aspect_input(self, rgb: np.ndarray) -> np.ndarray | None:
        """The model input at the photo's own aspect; None for a square-only model or a square photo."""
        size = aspect_view_size(rgb.shape[1], rgb.shape[0], self.model.preset.input_size, self.config.aspect_scale)
        if not self.model.any_size or size is None:
            return None
        return await self._cpu(to_model_input, rgb, self.model.preset, size, demand=0)

    async def _zoom(
        self,
        saliency: np.ndarray,
        work_rgb: np.ndarray,
        views: tuple[list[View], list[View]],
        may_add: Callable[[], bool],
        ran: set[str],
    ) -> np.ndarray:
        """The "zoom" pass: the model again on the crop around the object, merged in."""
        work_size = (work_rgb.shape[1], work_rgb.shape[0])
        window = zoom_window(saliency, work_size, self.config.zoom)
        if window is None:
            return saliency
        ran.add("zoom")
        cropped = crop(work_rgb, window)
        zoomed = await self._saliency(cropped, views, may_add, ran)
        return zoom_merge(saliency, zoomed, window, work_size, self.model.preset.input_size, self.config.zoom)

    async def _decode(
        self, data: bytes, info: ImageInfo, work_size: tuple[int, int], out_size: tuple[int, int]
    ) -> tuple[DecodedImage, DecodedImage | None]:
        """The working image, and the output-size image when one decode gives both."""
        if info.format == "jpeg":
            # DCT scaling makes a small decode cheap; the caller decodes the full one beside it.
            work = await self._cpu(_decode_resized, data, info, work_size)
            return work, (work if work_size == out_size else None)
        full = await self._cpu(_decode_resized, data, info, out_size)
        work = full if work_size == out_size else await self._cpu(_resize, full, work_size)
        return work, full

    def _finish(
        self, saliency: np.ndarray, work: DecodedImage, full: DecodedImage, options: ClipOptions, info: ImageInfo
    ) -> Cutout:
        alpha, work_alpha = refine_alpha(saliency, work.rgb, full.rgb, self.config.alpha)
        if full.alpha is not None:
            # A transparent input stays transparent, whatever the model thinks.
            alpha = np.minimum(alpha, full.alpha)
        rgb = full.rgb
        if options.channels == "rgba":
            # Soft edge pixels take the object's colour, not the old background's.
            rgb = estimate_foreground(full.rgb, alpha, work.rgb, work_alpha, inplace=True)
        box = foreground_box(alpha)
        cropped_alpha = alpha
        if options.crop:
            window = crop_window(box, options, alpha.shape[1], alpha.shape[0])
            ys = slice(window.top, window.top + window.height)
            xs = slice(window.left, window.left + window.width)
            rgb, cropped_alpha = rgb[ys, xs], alpha[ys, xs]
            box = Box(box.left - window.left, box.top - window.top, box.width, box.height) if box.width else box
        pixels = compose(rgb, cropped_alpha, options)
        return Cutout(pixels=pixels, alpha=alpha, foreground=box, source=info)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
# Arrays up to this size come from the reused heap: every plane of a 12 MP photo
# (48 MB as float32 or RGBA). Bigger ones (photos over ~16 MP) are still mapped
# and returned on free, so one huge image does not stay resident for ever.
_HEAP_ARRAY_LIMIT = 64 * 1024 * 1024
_TRIM_LIMIT = 1024 * 1024 * 1024


def tune_malloc() -> bool:
    """Make glibc reuse freed image buffers instead of returning them to the kernel.

    Every 12 MP stage allocates 12-48 MB arrays. By default glibc serves those
    with a fresh ``mmap`` (or a per-thread heap it trims) and unmaps them on
    free, so the next request page-faults all of it back in: measured 0.15-0.2
    CPU s of kernel time per 12 MP image, a third of our total. With one arena,
    a high mmap threshold and no trimming, freed blocks are reused: faults drop
    ~50x and resident memory settles at the working set of ``concurrency``
    requests, flat (the speed benchmark's soak checks it).

    Called before the pipeline's threads start (threads bind an arena on their
    first allocation). Returns whether it applied.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(_M_ARENA_MAX, 1)
    ok &= mallopt(_M_MMAP_THRESHOLD, _HEAP_ARRAY_LIMIT)
    ok &= mallopt(_M_TRIM_THRESHOLD, _TRIM_LIMIT)
    return bool(ok)


def _decode_resized(data: bytes, info: ImageInfo, size: tuple[int, int]) -> DecodedImage:
    reduce = size != (info.width, info.height)
    image = decode(data, info, min_size=size if reduce else None)
    return _resize(image, size)


def _resize(image: DecodedImage, size: tuple[int, int]) -> DecodedImage:
    height, width = image.rgb.shape[:2]
    if (width, height) == size:
        return image
    interpolation = cv2.INTER_AREA if size[0] <= width else cv2.INTER_LINEAR
    rgb = cv2.resize(image.rgb, size, interpolation=interpolation)
    alpha = None if image.alpha is None else cv2.resize(image.alpha, size, interpolation=interpolation)
    return DecodedImage(rgb=rgb, alpha=alpha)
