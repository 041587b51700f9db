"""The fast paths behave exactly like the straightforward code they replace.

- JPEG through libjpeg-turbo (simplejpeg) gives Pillow's pixels; odd JPEGs fall back to Pillow.
- EXIF orientation with OpenCV transposes equals Pillow's ``exif_transpose`` for all 8 values.
- The OpenCV RGBA composition equals ``cutout.compose`` (colour zeroed where alpha is 0).
- The strip-wise PNG writer emits the same stream as filtering the whole image at once.
- glibc malloc tuning applies and the engine still returns upright, full-size cut-outs.
"""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

from segmentation import ClipEngine, ClipOptions, EngineConfig
from segmentation import decode as decode_module
from segmentation.cutout import compose
from segmentation.decode import (
    DecodedImage,
    ImageLimits,
    _orient_array,
    decode,
    orient,
    probe,
)
from segmentation.encode import _up_filtered, encode_png
from segmentation.engine import tune_malloc
from segmentation.errors import UnreadableImage
from tests.conftest import disk_model, encode_image, exif_jpeg, photo

LIMITS = ImageLimits()


def _pillow_displayed(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(ImageOps.exif_transpose(img).convert("RGB"))


# --- EXIF orientation ------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pillow_exif_transpose(orientation: int) -> None:
    rng = np.random.default_rng(orientation)
    stored = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(stored).save(buffer, "PNG", exif=exif.tobytes())
    with Image.open(io.BytesIO(buffer.getvalue())) as img:
        expected = np.asarray(ImageOps.exif_transpose(img))
    assert np.array_equal(_orient_array(stored, orientation), expected)
    # 2-D planes (an input's alpha) turn the same way.
    assert np.array_equal(_orient_array(stored[:, :, 0], orientation), expected[:, :, 0])


def test_orient_turns_rgb_and_alpha_together() -> None:
    rgb = np.zeros((4, 6, 3), np.uint8)
    alpha = np.zeros((4, 6), np.uint8)
    rgb[0, 0] = 255
    alpha[0, 0] = 255
    turned = orient(DecodedImage(rgb=rgb, alpha=alpha), 6)
    assert turned.rgb.shape == (6, 4, 3) and turned.alpha is not None and turned.alpha.shape == (6, 4)
    assert turned.rgb[0, -1, 0] == 255 and turned.alpha[0, -1] == 255  # top-left goes top-right


# --- JPEG decode ---------------------------------------------------------------------


@pytest.mark.skipif(decode_module._simplejpeg is None, reason="simplejpeg not installed")
@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_fast_jpeg_decode_equals_pillow(orientation: int) -> None:
    data = exif_jpeg(photo(640, 480, seed=orientation), orientation, quality=90)
    info = probe(data, LIMITS)
    image = decode(data, info)
    expected = _pillow_displayed(data)
    assert image.rgb.shape == expected.shape == (480, 640, 3)
    assert np.abs(image.rgb.astype(int) - expected).max() <= 1
    assert image.alpha is None


@pytest.mark.skipif(decode_module._simplejpeg is None, reason="simplejpeg not installed")
def test_fast_path_is_used_for_plain_jpeg(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode_image(photo(320, 240), "JPEG")
    info = probe(data, LIMITS)
    monkeypatch.setattr(decode_module, "_open", lambda *a: pytest.fail("Pillow used for a plain JPEG"))
    assert decode(data, info).rgb.shape == (240, 320, 3)
    assert decode(data, info, min_size=(80, 60)).rgb.shape[1] < 320


@pytest.mark.parametrize("orientation", [1, 6])
def test_scaled_jpeg_decode_is_at_least_asked_in_displayed_axes(orientation: int) -> None:
    data = exif_jpeg(photo(1600, 1200), orientation, quality=90)
    info = probe(data, LIMITS)
    image = decode(data, info, min_size=(500, 375))
    h, w = image.rgb.shape[:2]
    assert w >= 500 and h >= 375 and w < 1600
    assert abs(w / h - 4 / 3) < 0.02


def test_greyscale_jpeg_fast_path_gives_rgb() -> None:
    grey = np.zeros((48, 64), np.uint8)
    grey[:, 32:] = 200
    data = encode_image(grey, "JPEG", quality=95)
    image = decode(data, probe(data, LIMITS))
    assert image.rgb.shape == (48, 64, 3)
    assert abs(int(image.rgb[24, 56, 0]) - 200) <= 8 and image.rgb[24, 8].max() <= 8


def test_cmyk_jpeg_falls_back_to_pillow() -> None:
    cmyk = Image.new("CMYK", (64, 48), (0, 255, 255, 0))
    data = encode_image(cmyk, "JPEG", quality=95)
    info = probe(data, LIMITS)
    assert decode_module._decode_jpeg_fast(data, info, None) is None
    image = decode(data, info)
    assert image.rgb.shape == (48, 64, 3) and image.rgb[24, 32, 0] > 200


def test_truncated_jpeg_still_refused() -> None:
    data = encode_image(photo(320, 240, seed=5), "JPEG")
    truncated = data[: len(data) // 2]
    with pytest.raises(UnreadableImage):
        decode(truncated, probe(truncated, LIMITS))


def test_jpeg_with_trailing_garbage_decodes_like_pillow() -> None:
    """libjpeg warnings (strict) hand the image to Pillow, which tolerates them."""
    data = encode_image(photo(320, 240, seed=6), "JPEG")
    odd = data[:-2] + b"\x00\x00junk" + data[-2:]
    image = decode(odd, probe(odd, LIMITS))
    assert image.rgb.shape == (240, 320, 3)


# --- composition ---------------------------------------------------------------------


def _rgba_reference(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The definition, in plain numpy: RGB plus alpha, colour zeroed where alpha is 0."""
    rgba = np.empty((*alpha.shape, 4), dtype=np.uint8)
    rgba[:, :, :3] = rgb
    rgba[:, :, 3] = alpha
    rgba[alpha == 0] = 0
    return rgba


@pytest.mark.parametrize("shape", [(300, 400), (1, 1), (1, 7), (9, 1)])
def test_rgba_composition_equals_its_definition(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    rgb = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, shape, dtype=np.uint8)
    alpha[alpha < 90] = 0
    for ys, xs in [(slice(None), slice(None)), (slice(0, max(1, shape[0] // 2)), slice(1 if shape[1] > 1 else 0, None))]:
        got = compose(rgb[ys, xs], alpha[ys, xs], ClipOptions())
        want = _rgba_reference(rgb[ys, xs], alpha[ys, xs])
        assert got.shape == want.shape and np.array_equal(got, want)


# --- PNG -----------------------------------------------------------------------------


def _idat(png: bytes) -> bytes:
    pos, data = 8, b""
    while pos < len(png):
        length = int.from_bytes(png[pos : pos + 4], "big")
        kind = png[pos + 4 : pos + 8]
        if kind == b"IDAT":
            data += png[pos + 8 : pos + 8 + length]
        pos += 12 + length
    return data


@pytest.mark.parametrize("shape", [(1, 1), (3, 2, 3), (257, 33, 2), (700, 1100, 4), (2000, 3, 4), (64, 48)])
def test_strip_png_round_trips_and_matches_whole_image_filtering(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(len(shape) * 1000 + shape[0])
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    png = encode_png(pixels)
    with Image.open(io.BytesIO(png)) as img:
        assert np.array_equal(np.asarray(img), pixels)
    assert zlib.decompress(_idat(png)) == _up_filtered(pixels).tobytes()


def test_png_of_a_cropped_view() -> None:
    pixels = np.random.default_rng(1).integers(0, 256, (500, 600, 4), dtype=np.uint8)
    view = pixels[17:401, 33:555]
    with Image.open(io.BytesIO(encode_png(view))) as img:
        assert np.array_equal(np.asarray(img), view)


# --- engine --------------------------------------------------------------------------


def test_tune_malloc_is_harmless_to_call_twice() -> None:
    first = tune_malloc()
    assert tune_malloc() == first


@pytest.mark.parametrize("orientation", [1, 6])
async def test_engine_cut_out_is_upright_full_size_and_clean(orientation: int) -> None:
    data = exif_jpeg(photo(900, 600, seed=orientation), orientation, quality=90)
    engine = ClipEngine(disk_model(), EngineConfig(concurrency=2))
    await engine.start()
    try:
        result = await engine.clip(data, ClipOptions())
        cut = await engine.cut(data, ClipOptions())
    finally:
        await engine.close()
    assert (result.width, result.height) == (900, 600)
    with Image.open(io.BytesIO(result.data)) as img:
        assert img.mode == "RGBA" and img.size == (900, 600)
        rgba = np.asarray(img)
    assert np.array_equal(rgba, cut.pixels)
    transparent = rgba[:, :, 3] == 0
    assert transparent.any() and (rgba[transparent][:, :3] == 0).all()
    assert rgba[300, 450, 3] == 255  # the centred disk is kept


# --- lean (single-thread) inference while busy ---------------------------------------


class _LeanRecorder:
    """A model that can run lean; records which way each batch ran."""

    def __init__(self) -> None:
        self.inner = disk_model(max_batch=1)
        self.preset = self.inner.preset
        self.provider = "test"
        self.max_batch = 1
        self.any_size = self.inner.any_size
        self.can_run_lean = True
        self.runs: list[bool] = []

    def predict(self, batch: np.ndarray, *, lean: bool = False) -> np.ndarray:
        self.runs.append(lean)
        return self.inner.predict(batch)


async def test_inference_runs_on_all_threads_alone_and_lean_when_busy() -> None:
    import asyncio

    model = _LeanRecorder()
    engine = ClipEngine(model, EngineConfig(concurrency=2))
    await engine.start()
    try:
        data = encode_image(photo(400, 300), "JPEG")
        await engine.clip(data, ClipOptions())
        assert model.runs == [False], "a lone request gets every inference thread"
        await asyncio.gather(*(engine.clip(data, ClipOptions()) for _ in range(4)))
        assert any(model.runs[1:]), "concurrent requests should run lean"
    finally:
        await engine.close()


def test_onnx_model_lean_session_gives_the_same_output(u2netp_model) -> None:
    from segmentation.preprocess import to_model_input

    x = to_model_input(photo(320, 320), u2netp_model.preset)[None]
    full = u2netp_model.predict(x)
    lean = u2netp_model.predict(x, lean=True)
    assert np.allclose(full, lean, atol=1e-5)


async def test_lean_model_runs_one_inference_per_core_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio
    import threading
    import time

    from segmentation.batching import MicroBatcher

    monkeypatch.setattr("os.cpu_count", lambda: 2)
    model = _LeanRecorder()
    lock = threading.Lock()
    running = {"now": 0, "most": 0}

    def slow_predict(batch: np.ndarray, *, lean: bool = False) -> np.ndarray:
        with lock:
            running["now"] += 1
            running["most"] = max(running["most"], running["now"])
        time.sleep(0.2)
        with lock:
            running["now"] -= 1
        model.runs.append(lean)
        return model.inner.predict(batch)

    model.predict = slow_predict  # type: ignore[method-assign]
    batcher = MicroBatcher(model, busy=lambda: False)
    assert batcher.lanes == 2
    await batcher.start()
    try:
        x = np.zeros((3, 320, 320), np.float32)
        await asyncio.gather(*(batcher.infer(x) for _ in range(4)))
    finally:
        await batcher.close()
    assert running["most"] == 2, "two inferences should overlap, never more than the cores"
    assert model.runs.count(True) >= 2, "an inference alongside another runs lean"


async def test_a_lone_request_runs_an_odd_number_of_views_one_by_one_on_every_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Three runs on two cores: queued together, one would get a core and the other two share one.
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    model = _LeanRecorder()
    engine = ClipEngine(model, EngineConfig(concurrency=2, extra_passes=("flip", "aspect-flip")))
    await engine.start()
    try:
        result = await engine.clip(encode_image(photo(400, 300), "JPEG"), ClipOptions())
    finally:
        await engine.close()
    assert result.passes == ("base", "flip", "aspect")
    assert model.runs == [False, False, False]


async def test_as_many_extra_views_as_cores_run_side_by_side_on_one_thread_each(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    from segmentation.session import FunctionModel
    from tests.segmentation.test_passes import PRESET, _uncertain_redness

    monkeypatch.setattr("os.cpu_count", lambda: 2)
    model = _LeanRecorder()
    model.inner = FunctionModel(PRESET, _uncertain_redness, max_batch=1)  # every first map is unsure
    lock = threading.Lock()
    running = {"now": 0, "most": 0}
    record = model.predict

    def slow_predict(batch: np.ndarray, *, lean: bool = False) -> np.ndarray:
        with lock:
            running["now"] += 1
            running["most"] = max(running["most"], running["now"])
        time.sleep(0.05)
        with lock:
            running["now"] -= 1
        return record(batch, lean=lean)

    model.predict = slow_predict  # type: ignore[method-assign]
    # The CPU default: where unsure, the first view's mirror and the other shape's mirror.
    config = EngineConfig(concurrency=2, extra_passes=("flip-uncertain", "aspect-flip-uncertain"))
    engine = ClipEngine(model, config)
    await engine.start()
    try:
        result = await engine.clip(encode_image(photo(400, 300), "PNG"), ClipOptions())
    finally:
        await engine.close()
    assert result.passes == ("base", "flip", "aspect")
    assert model.runs == [False, True, True]  # the first view on both threads, then two at once, one each
    assert running["most"] == 2


# --- working size ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((4032, 3024), (1008, 756)),  # 1/4
        ((3024, 4032), (756, 1008)),
        ((1600, 1200), (1000, 750)),  # 5/8
        ((3000, 2000), (1024, 683)),  # 3/8 is 1125 wide, 1/4 only 750: plain fit
        ((800, 600), (800, 600)),  # small enough already
    ],
)
def test_jpeg_work_size_is_a_dct_scale_just_under_the_side(size: tuple[int, int], expected: tuple[int, int]) -> None:
    from segmentation.preprocess import jpeg_work_size

    assert jpeg_work_size(*size, 1024) == expected


async def test_a_big_jpeg_s_working_image_comes_straight_from_a_scaled_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    from segmentation import engine as engine_module

    resized: list[tuple[tuple[int, ...], tuple[int, int]]] = []
    real_resize = engine_module._resize

    def recording_resize(image: DecodedImage, size: tuple[int, int]) -> DecodedImage:
        resized.append((image.rgb.shape[:2], size))
        return real_resize(image, size)

    monkeypatch.setattr(engine_module, "_resize", recording_resize)
    engine = ClipEngine(disk_model(max_batch=1), EngineConfig(concurrency=1))
    await engine.start()
    try:
        await engine.clip(encode_image(photo(2016, 1512), "JPEG"), ClipOptions())
    finally:
        await engine.close()
    assert ((756, 1008), (1008, 756)) in resized, "the 1/2-scale decode is the working image as it is"


async def test_the_full_size_decode_starts_before_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    # Beside the model it would slow the inference on the core they share.
    from segmentation import engine as engine_module

    events: list[str] = []
    real_decode = engine_module._decode_resized

    def recording_decode(data: bytes, info, size: tuple[int, int]) -> DecodedImage:  # type: ignore[no-untyped-def]
        if size == (info.width, info.height):
            events.append("full decode")
        return real_decode(data, info, size)

    model = disk_model(max_batch=1)
    real_predict = model.predict

    def recording_predict(batch: np.ndarray) -> np.ndarray:
        events.append("model")
        return real_predict(batch)

    real_input = engine_module.to_model_input

    def recording_input(*args, **kwargs) -> np.ndarray:  # type: ignore[no-untyped-def]
        events.append("model input")
        return real_input(*args, **kwargs)

    model.predict = recording_predict  # type: ignore[method-assign]
    monkeypatch.setattr(engine_module, "_decode_resized", recording_decode)
    monkeypatch.setattr(engine_module, "to_model_input", recording_input)
    engine = ClipEngine(model, EngineConfig(concurrency=2))
    await engine.start()
    try:
        result = await engine.clip(encode_image(photo(2016, 1512), "JPEG"), ClipOptions())
    finally:
        await engine.close()
    assert (result.width, result.height) == (2016, 1512)
    assert events == ["full decode", "model input", "model"]
