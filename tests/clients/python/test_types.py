"""Typed results from headers and JSON, read defensively."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from arclip_client import Account, Asset, Box, ClipResult, Event, Pairing, Placement, RateLimit, ScreenInfo, Usage

from tests.conftest import encode_image, photo


def test_rate_limit_ietf_structured_fields() -> None:
    headers = {"RateLimit-Policy": '"burst";q=10;w=2, "daily";q=1000;w=86400', "RateLimit": '"burst";r=7;t=1'}
    assert RateLimit.from_headers(headers) == RateLimit(limit=10, remaining=7, reset=1.0, window=2.0, policy="burst")
    headers = {"ratelimit-policy": '"a";q=5;w=60, "b";q=9;w=1', "ratelimit": '"b";r=3;t=0.5'}
    assert RateLimit.from_headers(headers) == RateLimit(limit=9, remaining=3, reset=0.5, window=1.0, policy="b")


def test_rate_limit_as_arclip_sends_it() -> None:
    headers = {
        "ratelimit-policy": '"rate";q=10;w=2, "concurrency";q=2;qu="concurrency"',
        "ratelimit": '"rate";r=9;t=1, "concurrency";r=1',
    }
    assert RateLimit.from_headers(headers) == RateLimit(limit=10, remaining=9, reset=1.0, window=2.0, policy="rate")


def test_rate_limit_older_forms() -> None:
    assert RateLimit.from_headers({"RateLimit": "limit=100, remaining=42, reset=30"}) == RateLimit(100, 42, 30.0)
    assert RateLimit.from_headers(
        {"RateLimit-Limit": "10", "RateLimit-Remaining": "9", "RateLimit-Reset": "5", "RateLimit-Policy": "10;w=60"}
    ) == RateLimit(10, 9, 5.0, 60.0, "10")
    assert RateLimit.from_headers({"X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "0"}) == RateLimit(60, 0, None)


def test_rate_limit_absent_or_garbled() -> None:
    assert RateLimit.from_headers({"Content-Type": "image/png"}) is None
    assert RateLimit.from_headers({"RateLimit": "nonsense;;;"}) is None
    assert RateLimit.from_headers({"X-RateLimit-Limit": "many"}) is None


def test_clip_result_from_headers(tmp_path: Path) -> None:
    png = encode_image(photo(20, 10), "PNG")
    headers = {
        "content-type": "image/png", "x-width": "20", "x-height": "10", "x-foreground-left": "3",
        "x-foreground-top": "2", "x-foreground-width": "12", "x-foreground-height": "6",
        "x-credits-charged": "0.25", "x-credits-remaining": "99.75", "x-request-id": "req_1",
        "ratelimit-policy": '"default";q=10;w=1', "ratelimit": '"default";r=9;t=1',
    }
    result = ClipResult.from_response(png, headers)
    assert result.size == (20, 10) and result.media_type == "image/png"
    assert result.foreground == Box(3, 2, 12, 6) and result.foreground.right == 15 and result.foreground.bottom == 8
    assert result.credits_charged == 0.25 and result.credits_remaining == 99.75
    assert result.request_id == "req_1" and result.rate_limit == RateLimit(10, 9, 1.0, 1.0, "default")
    assert bytes(result) == png and result.to_image().size == (20, 10)
    assert result.save(tmp_path / "out.png").read_bytes() == png
    assert "data" not in repr(result)


def test_clip_result_without_optional_headers() -> None:
    result = ClipResult.from_response(b"x", {"Content-Type": "image/webp; charset=binary", "X-Width": "oops"})
    assert result.media_type == "image/webp" and result.width is None and result.size is None
    assert result.foreground is None and result.credits_charged is None and result.credits_remaining is None
    assert result.rate_limit is None and result.request_id is None and result.idempotent_replayed is False
    assert ClipResult.from_response(b"x", {"Idempotent-Replayed": "true"}).idempotent_replayed is True


@pytest.mark.parametrize(
    "body",
    [
        {"account_id": "acc_1", "name": "me", "plan": "pro", "mode": "live", "credits_remaining": 12.5,
         "usage": {"requests": 3, "credits": 2.25}},
        {"id": "acc_1", "name": "me", "plan": {"name": "pro", "monthly_credits": 100}, "livemode": True,
         "credits": {"available": 12.5}, "usage": {"requests": 3, "credits_used": "2.25"}},
        {"account": {"id": "acc_1", "name": "me", "plan": "pro"}, "key": {"mode": "live"}, "balance": "12.5",
         "usage": {"requests": 3, "credits": 2.25}},
        # the shape arclip serves (api/routes/account.py)
        {"id": "acc_1", "name": "me", "plan": {"name": "pro", "rate_limit": {"burst": 10}},
         "balance": {"credits": 2.0, "monthly_credits": 10.5, "remaining": 12.5, "period": "2026-11"},
         "usage": {"period": "2026-11", "requests": 3, "credits": 2.25, "by_operation": {"clip": 3}},
         "suspended": False, "key": {"id": "key_1", "mode": "live"}, "keys": []},
    ],
)
def test_account_shapes(body: dict) -> None:  # type: ignore[type-arg]
    account = Account.from_json(body, {"X-Request-Id": "req_9"})
    assert (account.id, account.name, account.plan, account.mode) == ("acc_1", "me", "pro", "live")
    assert account.credits_remaining == 12.5
    assert account.usage.requests == 3 and account.usage.credits == 2.25
    assert account.request_id == "req_9"
    assert account.raw == body and account.get("nope", 1) == 1


def test_account_from_almost_nothing() -> None:
    account = Account.from_json(["not", "an", "object"], {"X-Credits-Remaining": "4"})
    assert account.plan is None and account.usage == Usage() and account.raw == {} and account.credits_remaining == 4.0
    assert Account.from_json({"credits": 7}).credits_remaining == 7.0


def test_device_results() -> None:
    pairing = Pairing.from_json({
        "pairing_id": "p1", "code": "ABCD2345", "qr_url": "http://h/capture?code=ABCD2345",
        "expires_at": "2030-01-01T00:00:00Z", "desktop_token": "secret", "device_id": "d1", "max_phones": 4,
    })
    assert pairing.expires_at == datetime(2030, 1, 1, tzinfo=UTC) and pairing.max_phones == 4
    assert "secret" not in repr(pairing)

    asset = Asset.from_json({"asset_id": "a1", "url": "http://h/a", "width": 5, "height": 6,
                             "bbox": {"left": 1, "top": 2, "width": 3, "height": 4}})
    assert asset.id == "a1" and asset.bbox == Box(1, 2, 3, 4)
    placement = Placement.from_json({"asset_id": "a1", "x": 10.5, "y": 7, "scale": None, "confidence": 0.9})
    assert (placement.x, placement.y, placement.scale, placement.confidence) == (10.5, 7.0, None, 0.9)
    screen = ScreenInfo.from_json({"width": 800, "height": 600, "locatable": True, "features": 300})
    assert screen.locatable is True and screen.markers is None

    created = Event(3, "asset.created", asset.raw)
    assert created.asset == asset and created.placement is None and created["width"] == 5
    placed = Event(4, "asset.placed", placement.raw)
    assert placed.placement == placement and placed.asset is None
    assert Event(5, "paste.failed", {"asset_id": "a1", "hint": "move closer"}).hint == "move closer"
