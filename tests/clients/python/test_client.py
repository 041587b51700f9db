"""The synchronous client against a real server: typed results, options, inputs, real 503 retries."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from arclip_client import Account, Arclip, Box, InvalidParameter, NotFound, Overloaded, RateLimited, RetryPolicy
from PIL import Image

from tests.conftest import alpha_box, disk_model, jpeg, photo

from .conftest import LiveServer


def test_clip_with_the_real_model(server_factory, u2netp_model) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(u2netp_model)
    key = server.create_key()
    with Arclip(key, base_url=server.base_url) as client:
        # a red disk of radius 60 centred at (160, 120)
        result = client.clip(jpeg(320, 240))
    assert result.media_type == "image/png" and (result.width, result.height) == (320, 240)
    image = result.to_image()
    assert image.mode == "RGBA" and image.size == (320, 240)
    box = result.foreground
    assert box is not None and box == Box(*alpha_box(np.asarray(image)[:, :, 3]))
    assert abs(box.left - 100) <= 8 and abs(box.top - 60) <= 8 and abs(box.width - 120) <= 16, box
    assert result.credits_charged == 1.0
    assert result.request_id and result.request_id.startswith("req_")
    assert result.credits_remaining is None or result.credits_remaining >= 0  # once billing reports it


def test_clip_options_and_inputs(server: LiveServer, api_key: str, tmp_path: Path) -> None:
    data = jpeg(320, 240)
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    with Arclip(api_key, base_url=server.base_url) as client:
        plain = client.clip(path)
        box = plain.foreground
        assert plain.size == (320, 240) and box is not None
        # the disk model's centred disk (60% of the side, on the square model input): about 196 x 148 at (62, 46)
        assert max(abs(a - b) for a, b in zip(box.as_tuple(), (62, 46, 196, 148), strict=True)) <= 4, box

        with path.open("rb") as f:
            cropped = client.clip(f, crop=True, crop_margin=10)
        assert cropped.size == (box.width + 20, box.height + 20)
        assert cropped.foreground == Box(10, 10, box.width, box.height)
        margin = round(0.2 * max(box.width, box.height))
        wide = client.clip(data, crop=True, crop_margin="20%")
        assert wide.size is not None and abs(wide.size[0] - (box.width + 2 * margin)) <= 2

        preview = client.clip(Image.fromarray(photo(320, 240)), size="preview")
        assert preview.credits_charged == 0.25

        mask = client.clip(data, format="webp", channels="alpha")
        assert mask.media_type == "image/webp" and mask.to_image().size == (320, 240)

        flat = client.clip(data, bg_color=(0, 255, 0)).to_image().convert("RGBA")
        assert flat.getpixel((0, 0)) == (0, 255, 0, 255)  # the background replaced by opaque green
        assert client.clip(data, bg_color="#00ff00", format="png").to_image().convert("RGBA").getpixel((0, 0))[3] == 255

        # quality changes how many model runs the mask gets, never the price or the size
        for quality in ("fast", "best"):
            tuned = client.clip(data, quality=quality)
            assert tuned.size == (320, 240) and tuned.credits_charged == plain.credits_charged
        with pytest.raises(InvalidParameter) as bad:
            client.clip(data, quality="ultra")  # type: ignore[arg-type]
        assert bad.value.code == "invalid_option"

        assert plain.save(tmp_path / "cut.png").stat().st_size == len(plain.data)


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch, server: LiveServer, api_key: str) -> None:
    monkeypatch.setenv("ARCLIP_API_KEY", api_key)
    monkeypatch.setenv("ARCLIP_BASE_URL", server.base_url + "/")
    with Arclip() as client:
        assert client.base_url == server.base_url and repr(client).startswith("Arclip(base_url=")
        assert client.clip(jpeg(64, 48)).size == (64, 48)


def test_own_http_client_is_used_and_left_open(server: LiveServer, api_key: str) -> None:
    seen: list[str] = []
    http = httpx.Client(event_hooks={"request": [lambda r: seen.append(r.headers["user-agent"])]})
    with Arclip(api_key, base_url=server.base_url, http_client=http, default_headers={"X-Trace": "1"}) as client:
        client.clip(jpeg(64, 48))
    assert seen and seen[0].startswith("arclip-python/")
    assert not http.is_closed
    http.close()


def hold_the_queue(server: LiveServer, key: str) -> threading.Thread:
    """Start one slow clip in a thread and return once it holds the server's (only) queue place."""

    def slow_clip() -> None:
        with Arclip(key, base_url=server.base_url, max_retries=0) as client:
            client.clip(jpeg(64, 48))

    holder = threading.Thread(target=slow_clip)
    holder.start()
    with httpx.Client() as probe:
        for _ in range(500):
            if probe.get(server.base_url + "/readyz").json()["queue"]["admitted"] >= 1:
                return holder
            time.sleep(0.01)
    raise AssertionError("the slow request was never admitted")


def test_real_503s_are_retried_after_retry_after(server_factory) -> None:  # type: ignore[no-untyped-def]
    """One slow request holds the only queue place; a second client gets 503 + Retry-After, waits and succeeds."""
    server = server_factory(disk_model(delay=1.0, max_batch=1), max_queue=1, workers=1)
    key = server.create_key()
    statuses: list[tuple[int, str | None]] = []

    def record(response: httpx.Response) -> None:
        statuses.append((response.status_code, response.headers.get("retry-after")))

    holder = hold_the_queue(server, key)

    http = httpx.Client(event_hooks={"response": [record]})
    started = time.monotonic()
    with Arclip(key, base_url=server.base_url, http_client=http, max_retries=5) as client:
        result = client.clip(jpeg(64, 48))
    elapsed = time.monotonic() - started
    holder.join()
    assert result.size == (64, 48)
    refused = [retry_after for status, retry_after in statuses if status == 503]
    assert refused and statuses[-1][0] == 200, statuses
    assert all(r is not None and int(r) >= 1 for r in refused)
    assert elapsed >= 1.0  # it waited for Retry-After before coming back

    # without retries the same situation raises Overloaded, carrying Retry-After
    holder = hold_the_queue(server, key)
    with Arclip(key, base_url=server.base_url, retry=RetryPolicy(max_retries=0)) as client:
        with pytest.raises(Overloaded) as raised:
            client.clip(jpeg(64, 48))
    holder.join()
    assert raised.value.code == "overloaded" and raised.value.retry_after is not None and raised.value.retry_after >= 1


def test_billing_headers_and_account(server: LiveServer, api_key: str) -> None:
    """Credits and rate limits are typed when the server sends them (billing, issue 4)."""
    with Arclip(api_key, base_url=server.base_url) as client:
        result = client.clip(jpeg(64, 48))
        if "x-credits-remaining" in result.headers:
            assert result.credits_remaining is not None and result.credits_remaining >= 0
        if "ratelimit" in result.headers:
            assert result.rate_limit is not None and result.rate_limit.remaining is not None
        try:
            account = client.account()
        except NotFound:
            pytest.skip("this server has no GET /v1/account yet (billing, issue 4)")
    assert isinstance(account, Account) and account.raw and account.request_id
    assert account.plan and isinstance(account.plan, str)
    assert account.credits_remaining is not None
    if result.credits_remaining is not None:
        assert account.credits_remaining == result.credits_remaining
    assert account.usage.requests is not None and account.usage.requests >= 1


def test_idempotency_key_replays(server: LiveServer, api_key: str) -> None:
    with Arclip(api_key, base_url=server.base_url) as client:
        first = client.clip(jpeg(64, 48), idempotency_key="sdk-test-1")
        again = client.clip(jpeg(64, 48), idempotency_key="sdk-test-1")
    if not again.idempotent_replayed:
        pytest.skip("this server does not replay Idempotency-Key yet (billing, issue 4)")
    assert not first.idempotent_replayed and again.data == first.data
    if first.credits_remaining is not None:
        assert again.credits_remaining == first.credits_remaining  # charged once


def test_real_429s_are_retried(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(plans={"free": {"rate": 1.0, "burst": 1, "concurrency": 8}})
    key = server.create_key()
    with Arclip(key, base_url=server.base_url, max_retries=0) as impatient:
        impatient.clip(jpeg(64, 48))
        try:
            impatient.clip(jpeg(64, 48))
        except RateLimited as limited:
            assert limited.retry_after is not None and limited.retry_after >= 1 and limited.request_id
        else:
            pytest.skip("this server does not rate-limit keys yet (billing, issue 4)")

    limited_statuses: list[int] = []
    http = httpx.Client(event_hooks={"response": [lambda r: limited_statuses.append(r.status_code)]})
    with Arclip(key, base_url=server.base_url, http_client=http, max_retries=3) as patient:
        results = [patient.clip(jpeg(64, 48)) for _ in range(2)]
    assert all(r.size == (64, 48) for r in results)
    assert 429 in limited_statuses and limited_statuses.count(200) == 2


def test_clip_result_image_roundtrip(server: LiveServer, api_key: str) -> None:
    with Arclip(api_key, base_url=server.base_url) as client:
        result = client.clip(io.BytesIO(jpeg(100, 80)))
    assert Image.open(io.BytesIO(result.data)).size == (100, 80)
