"""Two `arclip serve` replicas on one PostgreSQL, Redis, S3 (SeaweedFS) and Triton, as users see them.

The desktop sits on replica A and the phone on replica B; credits and rate limits are
one account's whatever replica answers; a replica killed, or a backing server stopped
under the replicas, costs users a retry (503 + Retry-After), never a 500, a charge or
a lost capture, and the replicas recover without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from benchmarks.sync.scene import desktop_scene, object_photo
from billing import to_milli
from tests.api.test_end_to_end import Desk, bearer
from tests.conftest import assert_problem, jpeg
from tests.topology.conftest import Replica, Topology

WAIT = 30.0  # any one request or message: CPU inference for two replicas on a small machine


@contextlib.asynccontextmanager
async def clients(topology: Topology, key: str | None = None) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    headers = {"X-Api-Key": key} if key else {}
    async with (
        httpx.AsyncClient(base_url=topology.a.base, timeout=WAIT, headers=headers) as a,
        httpx.AsyncClient(base_url=topology.b.base, timeout=WAIT, headers=headers) as b,
    ):
        yield a, b


async def create_key(topology: Topology, plan: str, credits: float = 0) -> tuple[str, str]:
    """A new account's key (its secret, its account id), made as `arclip keys create` makes it."""
    from api.offline import with_accounts
    from api.settings import Settings

    settings = Settings(
        _env_file=None, database_url=topology.database_url, plans=json.loads(topology.env["ARCLIP_PLANS"]),
    )
    async with with_accounts(settings) as (keys, _):
        info, secret = await keys.create(f"topology-{plan}", plan, credits=to_milli(credits))
    return secret, info.account_id


async def ledger(topology: Topology, account_id: str) -> dict[str, int]:
    """The account's usage rows by status, read from PostgreSQL itself."""
    import asyncpg

    connection = await asyncpg.connect(host="127.0.0.1", port=topology.postgres.port, user="arclip", database="postgres")
    try:
        rows = await connection.fetch(
            "SELECT status, count(*) AS n FROM billing_ledger WHERE account_id = $1 AND kind = 'usage' GROUP BY status",
            account_id,
        )
    finally:
        await connection.close()
    return {row["status"]: row["n"] for row in rows}


async def pair(desktop_side: httpx.AsyncClient, phone_side: httpx.AsyncClient) -> tuple[str, str, str]:
    """Opened on the desktop's replica, claimed on the phone's: (pairing id, desktop token, phone token)."""
    opened = await desktop_side.post("/v1/pairings")
    assert opened.status_code == 201, opened.text
    claimed = await phone_side.post("/v1/pairings/claim", json={"code": opened.json()["code"]})
    assert claimed.status_code == 201, claimed.text
    return opened.json()["pairing_id"], opened.json()["desktop_token"], claimed.json()["phone_token"]


async def capture(http: httpx.AsyncClient, phone_token: str, image: bytes) -> httpx.Response:
    return await http.post(
        "/v1/captures", headers=bearer(phone_token), files={"image_file": ("shot.jpg", image, "image/jpeg")}
    )


async def clip(http: httpx.AsyncClient, image: bytes, **options: Any) -> httpx.Response:
    return await http.post("/v1/clip", files={"image_file": ("p.jpg", image, "image/jpeg")},
                           data={k: str(v) for k, v in options.items()})


async def eventually_ok(call, within_s: float = 60.0, *, ok: int = 200) -> httpx.Response:  # type: ignore[no-untyped-def]
    """Retry ``call`` as a client honouring Retry-After would, until it succeeds; every miss is a 503."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        response = await call()
        if response.status_code == ok:
            return response
        assert response.status_code == 503, (response.status_code, response.text[:300])
        assert "retry-after" in {k.lower() for k in response.headers}
        if loop.time() > deadline:
            raise AssertionError(f"still {response.status_code} after {within_s} s: {response.text[:300]}")
        await asyncio.sleep(0.25)


def signed_path(asset: dict[str, Any]) -> str:
    return httpx.URL(asset["url"]).raw_path.decode()


# ---------------------------------------------------------------------------
# The product across replicas
# ---------------------------------------------------------------------------


async def test_desktop_on_a_phone_on_b(topology: Topology) -> None:
    screen_png, view_jpeg, (tx, ty) = desktop_scene()
    async with clients(topology) as (a, b):
        pairing_id, desktop_token, phone_token = await pair(a, b)
        async with Desk.connect(topology.a, desktop_token) as desk:
            captured = await capture(b, phone_token, object_photo())
            assert captured.status_code == 201, captured.text
            created = await desk.next("asset.created")
            asset = created["data"]
            assert asset == captured.json()

            for replica in (a, b):  # the bytes are in S3, the signing key shared: either replica serves them
                signed = await replica.get(signed_path(asset))
                assert signed.status_code == 200 and signed.headers["content-type"] == "image/png"
                direct = await replica.get(f"/v1/assets/{asset['asset_id']}", headers=bearer(desktop_token))
                assert direct.status_code == 200 and direct.content == signed.content

            put = await a.put(f"/v1/pairings/{pairing_id}/screen", content=screen_png,
                              headers={**bearer(desktop_token), "Content-Type": "image/png"})
            assert put.status_code == 200 and put.json()["locatable"] is True, put.text
            pasted = await b.post(f"/v1/captures/{asset['asset_id']}/paste", headers=bearer(phone_token),
                                  files={"view": ("view.jpg", view_jpeg, "image/jpeg")})
            assert pasted.status_code == 200, pasted.text
            placed = (await desk.next("asset.placed"))["data"]
            assert placed["asset_id"] == asset["asset_id"]
            assert abs(placed["x"] - tx) <= 3 and abs(placed["y"] - ty) <= 3, (placed, (tx, ty))


async def test_credits_and_rate_limits_are_one_account_across_replicas(topology: Topology) -> None:
    key, account = await create_key(topology, "free", credits=10)
    image = jpeg(320, 240)
    async with clients(topology, key) as (a, b):
        responses = await asyncio.gather(*(clip(a if i % 2 else b, image, quality="fast") for i in range(16)))
        codes = sorted(r.status_code for r in responses)
        assert codes == [200] * 10 + [402] * 6, [(r.status_code, r.text[:200]) for r in responses]
        for response in responses:
            if response.status_code == 402:
                assert_problem(response, 402, "insufficient_credits")
        for replica in (a, b):
            assert (await replica.get("/v1/account")).json()["balance"]["remaining"] == 0
    assert await ledger(topology, account) == {"charged": 10}

    await assert_one_bucket(topology)


async def assert_one_bucket(topology: Topology) -> None:
    """A key whose bucket holds 4: eight requests over both replicas, four pass (not four each)."""
    key, _ = await create_key(topology, "prepaid")
    async with clients(topology, key) as (a, b):
        codes = [(await (a if i % 2 else b).get("/v1/account")).status_code for i in range(8)]
    assert sorted(codes) == [200] * 4 + [429] * 4, codes


async def test_triton_batches_requests_of_both_replicas(topology: Topology) -> None:
    """Issue 12: each replica has one request in flight at most, so a batch of two holds both."""
    before = await triton_statistics(topology)
    key, _ = await create_key(topology, "free", credits=100)
    image = jpeg(320, 240, seed=3)
    async with clients(topology, key) as (a, b):
        responses = await asyncio.gather(*(clip(a if i % 2 else b, image, quality="fast") for i in range(12)))
    assert [r.status_code for r in responses] == [200] * 12, [r.text[:200] for r in responses if r.status_code != 200]
    after = await triton_statistics(topology)
    requests = after["requests"] - before["requests"]
    executions = after["executions"] - before["executions"]
    batched = {size: after["batches"].get(size, 0) - before["batches"].get(size, 0) for size in after["batches"]}
    assert requests == 12, (before, after)
    assert executions < requests and any(n > 0 for size, n in batched.items() if size > 1), batched


async def triton_statistics(topology: Topology) -> dict[str, Any]:
    import tritonclient.grpc.aio as grpc_aio

    client = grpc_aio.InferenceServerClient(topology.triton.grpc_url.removeprefix("grpc://"))
    try:
        stats = (await client.get_inference_statistics("u2netp", as_json=True))["model_stats"][0]
    finally:
        await client.close()
    return {
        "requests": int(stats["inference_stats"]["success"].get("count", 0)),
        "executions": int(stats.get("execution_count", 0)),
        "batches": {int(b["batch_size"]): int(b["compute_infer"].get("count", 0)) for b in stats.get("batch_stats", [])},
    }
