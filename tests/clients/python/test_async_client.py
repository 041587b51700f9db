"""AsyncArclip: the same behaviour as Arclip, on asyncio, against a real server."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from arclip_client import (
    Account,
    AsyncArclip,
    AuthenticationError,
    InvalidParameter,
    NotFound,
    Overloaded,
    PermissionDenied,
)

from tests.conftest import disk_model, jpeg

from .conftest import LiveServer


async def test_clip_typed_result(server: LiveServer, api_key: str) -> None:
    async with AsyncArclip(api_key, base_url=server.base_url) as client:
        result = await client.clip(jpeg(320, 240), crop=True, crop_margin=10)
        preview = await client.clip(jpeg(320, 240), size="preview")
    box = result.foreground
    assert result.media_type == "image/png" and box is not None and (box.left, box.top) == (10, 10)
    assert result.size == (box.width + 20, box.height + 20) and abs(box.width - 196) <= 4
    assert result.credits_charged == 1.0
    assert result.request_id and result.request_id.startswith("req_")
    assert preview.credits_charged == 0.25


async def test_concurrent_clips_share_one_client(server: LiveServer, api_key: str) -> None:
    async with AsyncArclip(api_key, base_url=server.base_url) as client:
        results = await asyncio.gather(*(client.clip(jpeg(64 + i, 48)) for i in range(6)))
    assert [r.width for r in results] == [64 + i for i in range(6)]
    assert len({r.request_id for r in results}) == 6


async def test_errors(server: LiveServer, api_key: str) -> None:
    async with AsyncArclip(None, base_url=server.base_url) as anonymous:
        with pytest.raises(AuthenticationError) as missing:
            await anonymous.clip(jpeg(64, 48))
    assert missing.value.status == 401 and missing.value.request_id
    async with AsyncArclip("arc_live_forged", base_url=server.base_url) as forged:
        with pytest.raises(PermissionDenied):
            await forged.clip(jpeg(64, 48))
    async with AsyncArclip(api_key, base_url=server.base_url) as client:
        with pytest.raises(InvalidParameter) as invalid:
            await client.clip(jpeg(64, 48), channels="cmyk")  # type: ignore[arg-type]
    assert "channels" in (invalid.value.detail or "")


async def wait_until_admitted(server: LiveServer, count: int = 1) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as probe:
        for _ in range(500):
            if (await probe.get("/readyz")).json()["queue"]["admitted"] >= count:
                return
            await asyncio.sleep(0.01)
    raise AssertionError("the slow request was never admitted")


async def test_real_503s_are_retried(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(disk_model(delay=0.6, max_batch=1), max_queue=1, workers=1)
    key = server.create_key()
    refused: list[int] = []

    async def record(response: httpx.Response) -> None:
        if response.status_code == 503:
            refused.append(int(response.headers["retry-after"]))

    async with AsyncArclip(key, base_url=server.base_url, max_retries=0) as impatient, AsyncArclip(
        key, base_url=server.base_url, max_retries=5, http_client=httpx.AsyncClient(event_hooks={"response": [record]})
    ) as patient:
        first = asyncio.create_task(impatient.clip(jpeg(64, 48)))
        await wait_until_admitted(server)  # the first request holds the only queue place
        results = await asyncio.gather(patient.clip(jpeg(80, 60)), first)
        assert [r.width for r in results] == [80, 64]
        assert refused and all(r >= 1 for r in refused)

        first = asyncio.create_task(patient.clip(jpeg(64, 48)))
        await wait_until_admitted(server)
        with pytest.raises(Overloaded) as raised:
            await impatient.clip(jpeg(64, 48))
        assert raised.value.retry_after is not None
        await first


async def test_account(server: LiveServer, api_key: str) -> None:
    async with AsyncArclip(api_key, base_url=server.base_url) as client:
        try:
            account = await client.account()
        except NotFound:
            pytest.skip("this server has no GET /v1/account yet (billing, issue 4)")
    assert isinstance(account, Account) and account.raw


async def test_account_is_parsed_defensively() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["x-api-key"] == "arc_test_k" and request.url.path == "/v1/account"
        return httpx.Response(
            200,
            json={"account_id": "acc_1", "plan": {"name": "payg"}, "credits": {"balance": 3.25}, "usage": {"clips": 9},
                  "something_new": True},
            headers={
                "X-Request-Id": "req_x", "RateLimit-Policy": '"default";q=5;w=1', "RateLimit": '"default";r=4;t=1'
            },
        )

    transport = httpx.MockTransport(handler)
    http = httpx.AsyncClient(transport=transport)
    async with AsyncArclip("arc_test_k", base_url="http://testserver", http_client=http) as c:
        account = await c.account()
    assert (account.id, account.plan, account.credits_remaining) == ("acc_1", "payg", 3.25)
    assert account.usage.raw == {"clips": 9} and account["something_new"] is True
    assert account.rate_limit is not None and account.rate_limit.remaining == 4 and account.request_id == "req_x"
