"""POST /v1/clip on the real u2netp model: headers, formats, channels, crop, background, EXIF."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import (
    BACKGROUND_RGB,
    OBJECT_RGB,
    alpha_box,
    decode_response_image,
    encode_image,
    exif_jpeg,
    jpeg,
    photo,
)

W, H = 320, 240


def headers_box(response) -> tuple[int, int, int, int]:
    h = response.headers
    return (
        int(h["X-Foreground-Left"]),
        int(h["X-Foreground-Top"]),
        int(h["X-Foreground-Width"]),
        int(h["X-Foreground-Height"]),
    )


def assert_object_box(box: tuple[int, int, int, int], center: tuple[int, int], radius: int, tol: int = 12) -> None:
    left, top, width, height = box
    cx, cy = center
    assert abs(left - (cx - radius)) <= tol, box
    assert abs(top - (cy - radius)) <= tol, box
    assert abs(width - 2 * radius) <= 2 * tol, box
    assert abs(height - 2 * radius) <= 2 * tol, box


async def test_png_cutout_and_headers(api) -> None:
    response = await api.clip(jpeg(W, H))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["X-Credits-Charged"] == "1"
    assert response.headers["X-Request-Id"]
    assert (int(response.headers["X-Width"]), int(response.headers["X-Height"])) == (W, H)

    img = decode_response_image(response.content)
    assert img.mode == "RGBA" and img.size == (W, H)
    rgba = np.asarray(img)
    alpha = rgba[:, :, 3]
    # the headers' box is exactly the returned alpha's box
    assert headers_box(response) == alpha_box(alpha)
    assert_object_box(headers_box(response), (W // 2, H // 2), min(W, H) // 4)
    # the object is solid and keeps its colour; the background is gone and colourless
    assert alpha[H // 2, W // 2] == 255
    assert np.abs(rgba[H // 2, W // 2, :3].astype(int) - OBJECT_RGB).max() < 20
    assert alpha[5, 5] == 0 and alpha[H - 5, W - 5] == 0
    assert (rgba[alpha == 0] == 0).all()


@pytest.mark.parametrize(("fmt", "content_type"), [("PNG", "image/png"), ("WEBP", "image/webp"), ("HEIF", "image/heic")])
async def test_accepts_png_webp_heic(api, fmt: str, content_type: str) -> None:
    response = await api.clip(encode_image(photo(W, H), fmt, quality=95), "photo.img", content_type)
    assert response.status_code == 200, response.text
    assert (response.headers["X-Width"], response.headers["X-Height"]) == (str(W), str(H))
    alpha = np.asarray(decode_response_image(response.content))[:, :, 3]
    assert_object_box(alpha_box(alpha), (W // 2, H // 2), min(W, H) // 4)


async def test_webp_output_has_alpha(api) -> None:
    response = await api.clip(jpeg(W, H), format="webp")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/webp"
    img = decode_response_image(response.content)
    assert img.format == "WEBP" and img.mode == "RGBA" and img.size == (W, H)
    alpha = np.asarray(img)[:, :, 3]
    assert alpha[H // 2, W // 2] == 255 and alpha[5, 5] == 0


async def test_alpha_channel_is_8bit_grey(api) -> None:
    response = await api.clip(jpeg(W, H), channels="alpha")
    assert response.status_code == 200, response.text
    img = decode_response_image(response.content)
    assert img.mode == "L" and img.size == (W, H)
    alpha = np.asarray(img)
    assert alpha[H // 2, W // 2] == 255 and alpha[5, 5] == 0
    assert headers_box(response) == alpha_box(alpha)


@pytest.mark.parametrize(("margin", "pixels"), [("0", 0), ("10px", 10), ("10%", None)])
async def test_crop_with_margin(api, margin: str, pixels: int | None) -> None:
    full = await api.clip(jpeg(W, H))
    fl, ft, fw, fh = headers_box(full)
    response = await api.clip(jpeg(W, H), crop="true", crop_margin=margin)
    assert response.status_code == 200, response.text
    m = round(max(fw, fh) * 0.10) if pixels is None else pixels
    img = decode_response_image(response.content)
    assert img.size == (fw + 2 * m, fh + 2 * m)
    assert (int(response.headers["X-Width"]), int(response.headers["X-Height"])) == img.size
    # the foreground box is given in the cropped image's pixels
    assert headers_box(response) == (m, m, fw, fh)
    assert headers_box(response) == alpha_box(np.asarray(img)[:, :, 3])


async def test_crop_margin_is_clamped_to_the_image(api) -> None:
    response = await api.clip(jpeg(W, H), crop="1", crop_margin="500px")
    assert response.status_code == 200, response.text
    assert decode_response_image(response.content).size == (W, H)


async def test_bg_color_gives_opaque_image(api) -> None:
    response = await api.clip(jpeg(W, H), bg_color="#00ff00")
    assert response.status_code == 200, response.text
    img = decode_response_image(response.content)
    assert img.mode == "RGB" and img.size == (W, H)
    rgb = np.asarray(img).astype(int)
    assert (rgb[5, 5] == (0, 255, 0)).all() and (rgb[H - 5, W - 5] == (0, 255, 0)).all()
    assert np.abs(rgb[H // 2, W // 2] - OBJECT_RGB).max() < 20
    # none of the photo's grey background survives
    assert not (np.abs(rgb - BACKGROUND_RGB).max(axis=2) < 12).any()


async def test_size_preview_is_cheaper_and_smaller(api) -> None:
    response = await api.clip(jpeg(1000, 800), size="preview")
    assert response.status_code == 200, response.text
    assert response.headers["X-Credits-Charged"] == "0.25"
    width, height = int(response.headers["X-Width"]), int(response.headers["X-Height"])
    assert abs(width * height - 250_000) / 250_000 < 0.02
    assert abs(width / height - 1.25) < 0.01
    assert decode_response_image(response.content).size == (width, height)


async def test_options_as_query_parameters(api) -> None:
    response = await api.client.post(
        "/v1/clip",
        params={"format": "webp", "channels": "alpha", "crop": "true"},
        files={"image_file": ("p.jpg", jpeg(W, H), "image/jpeg")},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/webp"
    img = decode_response_image(response.content)
    assert img.size == (int(response.headers["X-Width"]), int(response.headers["X-Height"]))
    assert img.size[0] < W and img.size[1] < H  # cropped


async def test_the_same_option_in_form_and_query_is_accepted(api) -> None:
    response = await api.client.post(
        "/v1/clip",
        params={"format": "webp"},
        files={"image_file": ("p.jpg", jpeg(W, H), "image/jpeg")},
        data={"format": "WebP "},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/webp"


async def usage_requests(api) -> int:
    return (await api.client.get("/v1/account")).json()["usage"]["requests"]


def image_part(name: str = "image_file") -> tuple[str, tuple[str, bytes, str]]:
    return (name, ("p.jpg", jpeg(W, H), "image/jpeg"))


@pytest.mark.parametrize(
    ("request_kw", "status", "code", "parameter"),
    [
        # SPEC §5: misspelt or unknown options are refused, never silently ignored and charged
        ({"params": {"formt": "webp"}}, 422, "unknown_parameter", "formt"),
        ({"data": {"colour": "red"}}, 422, "unknown_parameter", "colour"),
        ({"files": [image_part(), image_part("mask")]}, 422, "unknown_parameter", "mask"),
        # which of two images, or of two values, was meant cannot be guessed
        ({"files": [image_part(), image_part()]}, 422, "duplicate_parameter", "image_file"),
        ({"params": [("format", "png"), ("format", "webp")]}, 422, "duplicate_parameter", "format"),
        ({"data": {"size": ["full", "preview"]}}, 422, "duplicate_parameter", "size"),
        ({"params": {"format": "webp"}, "data": {"format": "png"}}, 422, "conflicting_parameter", "format"),
    ],
)
async def test_unknown_repeated_or_conflicting_parameters_are_refused_uncharged(
    api, request_kw: dict, status: int, code: str, parameter: str
) -> None:
    from tests.conftest import assert_problem

    kw = {"files": [image_part()], **request_kw}
    before = await usage_requests(api)
    body = assert_problem(await api.client.post("/v1/clip", **kw), status, code)
    assert body["parameter"] == parameter and parameter in body["detail"]
    assert await usage_requests(api) == before


async def test_unknown_parameter_names_the_nearest_option(api) -> None:
    from tests.conftest import assert_problem

    response = await api.client.post("/v1/clip", params={"formt": "webp"}, files=[image_part()])
    body = assert_problem(response, 422, "unknown_parameter")
    assert body["did_you_mean"] == "format" and "'format'" in body["detail"]
    response = await api.client.post("/v1/clip", params={"zzz": "1"}, files=[image_part()])
    body = assert_problem(response, 422, "unknown_parameter")
    assert "did_you_mean" not in body and "bg_color" in body["detail"]  # the known names instead


async def test_a_hostile_parameter_name_is_echoed_only_in_part(api) -> None:
    from tests.conftest import assert_problem

    name = "x" * 5000
    response = await api.client.post("/v1/clip", params={name: "1"}, files=[image_part()])
    body = assert_problem(response, 422, "unknown_parameter")
    assert len(response.content) < 1000 and len(body["parameter"]) <= 41


async def test_exif_rotated_phone_jpeg_comes_back_upright(api) -> None:
    # Displayed: a portrait photo with the object in its upper part. Stored: rotated, orientation 6.
    dw, dh = 240, 360
    center, radius = (120, 110), 55
    displayed = photo(dw, dh, center=center, radius=radius)
    data = exif_jpeg(displayed, 6)
    response = await api.clip(data)
    assert response.status_code == 200, response.text
    assert (int(response.headers["X-Width"]), int(response.headers["X-Height"])) == (dw, dh)
    img = decode_response_image(response.content)
    assert img.size == (dw, dh)
    assert_object_box(headers_box(response), center, radius)
    assert np.asarray(img)[center[1], center[0], 3] == 255


async def test_raw_image_body_is_accepted(api) -> None:
    response = await api.client.post("/v1/clip", content=jpeg(W, H), headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 200, response.text
    assert response.headers["X-Width"] == str(W)


async def test_request_id_is_echoed_when_sane(api) -> None:
    response = await api.client.get("/healthz", headers={"X-Request-Id": "abc-123_x.y"})
    assert response.headers["X-Request-Id"] == "abc-123_x.y"
    response = await api.client.get("/healthz", headers={"X-Request-Id": "bad id\twith<stuff>"})
    assert response.headers["X-Request-Id"] != "bad id\twith<stuff>"
    assert response.headers["X-Request-Id"].startswith("req_")
    a = (await api.client.get("/healthz")).headers["X-Request-Id"]
    b = (await api.client.get("/healthz")).headers["X-Request-Id"]
    assert a != b


async def test_key_last_used_is_recorded(api) -> None:
    before = {k.id: k for k in await api.services.keys.list()}[api.key_id]
    assert before.last_used_at is None
    assert (await api.clip(jpeg(64, 48))).status_code == 200
    after = {k.id: k for k in await api.services.keys.list()}[api.key_id]
    assert after.last_used_at is not None


@pytest.mark.parametrize("size", ["full", "auto"])
async def test_size_full_and_auto_keep_a_small_image(api, size: str) -> None:
    response = await api.clip(jpeg(W, H), size=size)
    assert response.status_code == 200, response.text
    assert response.headers["X-Credits-Charged"] == "1"
    assert decode_response_image(response.content).size == (W, H)


async def test_transparent_input_areas_stay_transparent(api) -> None:
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[:, :, :3] = photo(W, H)
    rgba[:, W // 2 :, 3] = 255  # the left half (and the left half of the object) is transparent
    response = await api.clip(encode_image(rgba, "PNG"), "cut.png", "image/png")
    assert response.status_code == 200, response.text
    alpha = np.asarray(decode_response_image(response.content))[:, :, 3]
    assert alpha[:, : W // 2].max() == 0
    assert alpha[H // 2, W // 2 + 20] == 255
    assert int(response.headers["X-Foreground-Left"]) >= W // 2


async def test_quality_chooses_the_model_runs_at_the_same_price(app_factory) -> None:
    from tests.conftest import assert_problem, disk_model

    model = disk_model()
    predict, runs = model.predict, []

    def counting(batch):  # type: ignore[no-untyped-def]
        runs.append(len(batch))
        return predict(batch)

    model.predict = counting  # type: ignore[method-assign]
    async with app_factory(model) as running:
        done: dict[str, int] = {}
        for quality in ("fast", "balanced", "best"):
            before = sum(runs)
            response = await running.clip(jpeg(W, H), quality=quality)
            assert response.status_code == 200, response.text
            assert response.headers["X-Credits-Charged"] == "1"
            done[quality] = sum(runs) - before
        assert_problem(await running.clip(jpeg(W, H), quality="ultra"), 422, "invalid_option")
    # a sure mask: "balanced" (the CPU's -uncertain passes) adds nothing; "best" mirrors and zooms
    assert done["fast"] == done["balanced"] == 1
    assert done["best"] >= 3
