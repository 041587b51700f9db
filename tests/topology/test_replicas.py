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
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from benchmarks.sync.scene import desktop_scene, object_photo
from billing import to_milli
from tests.api.test_end_to_end import Desk, bearer
from tests.conftest import assert_problem, jpeg
from tests.topology.servers import Replica, Topology, triton_statistics

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


@contextlib.asynccontextmanager
async def desk_on(replica: Replica, token: str, resume: int | None = None, within_s: float = 60.0) -> AsyncIterator[Desk]:
    """The desktop's channel as the companion opens it: an error frame (1013) means retry after its delay."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        async with connect(f"{replica.ws_base}/v1/sync?token={token}", open_timeout=WAIT) as ws:
            first = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
            if first["type"] == "hello":
                desk = Desk(ws, first)
                if resume is not None:
                    await ws.send(json.dumps({"type": "resume", "last_id": resume}))
                    desk.last_id = resume
                yield desk
                return
        assert first["type"] == "error" and first["data"]["code"].endswith("_unavailable"), first
        assert loop.time() < deadline, f"still {first} after {within_s} s"
        await asyncio.sleep(float(first["data"].get("retry_after", 1)))


async def assets_received(replica: Replica, token: str, want: set[str], resume: int = 0) -> list[str]:
    """The ids of ``asset.created`` messages the desktop gets until it has seen ``want``, resuming
    from its last id whenever the replica closes with 1013 (as the companion does)."""
    seen: list[str] = []
    while not want <= set(seen):
        async with desk_on(replica, token, resume=resume) as desk:
            try:
                while not want <= set(seen):
                    seen.append((await desk.next("asset.created"))["data"]["asset_id"])
            except ConnectionClosed as closed:
                assert closed.rcvd is not None and closed.rcvd.code == 1013, closed
            resume = desk.last_id
    return seen


def signed_path(asset: dict[str, Any]) -> str:
    return httpx.URL(asset["url"]).raw_path.decode()


# ---------------------------------------------------------------------------
# The product across replicas
# ---------------------------------------------------------------------------


async def test_desktop_on_a_phone_on_b(topology: Topology) -> None:
    screen_png, view_jpeg, (tx, ty) = desktop_scene()
    async with clients(topology) as (a, b):
        pairing_id, desktop_token, phone_token = await pair(a, b)
        async with desk_on(topology.a, desktop_token) as desk:
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


async def assert_one_bucket(topology: Topology, within_s: float = 0.0) -> None:
    """A key whose bucket holds 4: eight requests over both replicas, four pass (not four each).

    ``within_s``: how long a replica may still limit in process (each on its own) after
    losing Redis; it tries Redis again every second. Each try is a new key.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        key, _ = await create_key(topology, "prepaid")
        async with clients(topology, key) as (a, b):
            codes = [(await (a if i % 2 else b).get("/v1/account")).status_code for i in range(8)]
        if sorted(codes) == [200] * 4 + [429] * 4 or loop.time() > deadline:
            break
        assert set(codes) <= {200, 429}, codes
        await asyncio.sleep(0.5)
    assert sorted(codes) == [200] * 4 + [429] * 4, codes


async def test_triton_batches_requests_of_both_replicas(topology: Topology) -> None:
    """Issue 12: each replica has one request in flight at most, so a batch of two holds both.

    Triton is held (SIGSTOP) while one clip goes to each replica, so both requests wait
    in its sockets and reach its queue together when it resumes, whatever the API's
    own CPU work on this small machine made them drift apart by.
    """
    before = await triton_statistics(topology)
    key, _ = await create_key(topology, "free", credits=100)
    image = jpeg(320, 240, seed=3)
    responses: list[httpx.Response] = []
    async with clients(topology, key) as (a, b):
        for _ in range(3):
            topology.triton.pause()
            try:
                sent = [asyncio.create_task(clip(replica, image, quality="fast")) for replica in (a, b)]
                await asyncio.sleep(1.0)  # each replica decodes its image and sends the tensor
            finally:
                topology.triton.resume()
            responses += await asyncio.gather(*sent)
    assert [r.status_code for r in responses] == [200] * 6, [r.text[:200] for r in responses if r.status_code != 200]
    after = await triton_statistics(topology)
    requests = after["requests"] - before["requests"]
    executions = after["executions"] - before["executions"]
    batched = {size: after["batches"].get(size, 0) - before["batches"].get(size, 0) for size in after["batches"]}
    assert requests == 6, (before, after)
    assert executions < requests and any(n > 0 for size, n in batched.items() if size > 1), batched


# ---------------------------------------------------------------------------
# A replica or a backing server lost under the replicas
# ---------------------------------------------------------------------------


async def test_desktop_replica_killed_resumes_on_the_other(topology: Topology) -> None:
    """kill -9 of A while captures are in flight on B: the desktop reconnects to B and gets each asset once."""
    photos = [jpeg(480, 360, seed=10 + i, radius=90) for i in range(4)]
    async with clients(topology) as (a, b):
        _, desktop_token, phone_token = await pair(a, b)
        try:
            received: list[str] = []
            async with desk_on(topology.a, desktop_token) as desk:
                captures = [asyncio.create_task(capture(b, phone_token, photo)) for photo in photos]
                received.append((await desk.next("asset.created"))["data"]["asset_id"])
                topology.a.kill()  # the rest are in flight on B
                with pytest.raises(ConnectionClosed):
                    while True:
                        received.append((await desk.next("asset.created"))["data"]["asset_id"])
                last_id = desk.last_id
            accepted = [await task for task in captures]
            assert [r.status_code for r in accepted] == [201] * len(photos), [r.text for r in accepted]
            ids = [r.json()["asset_id"] for r in accepted]
            received += await assets_received(topology.b, desktop_token, set(ids) - set(received), resume=last_id)
        finally:
            await asyncio.to_thread(topology.a.start)  # back on its port for the tests that follow
    assert sorted(received) == sorted(ids), "every capture, each exactly once"


async def test_redis_restarted_under_the_replicas(topology: Topology) -> None:
    async with clients(topology) as (a, b):
        _, desktop_token, phone_token = await pair(a, b)
        before = await capture(b, phone_token, jpeg(480, 360, seed=30, radius=90))
        assert before.status_code == 201, before.text

        topology.redis.stop()  # a clean stop: AOF written (appendfsync everysec loses at most ~1 s on a crash)
        try:
            down = await capture(b, phone_token, jpeg(480, 360, seed=31, radius=90))
            assert down.status_code in (201, 503), down.text  # a capture needs the hub: accepted or 503, never 500
            if down.status_code == 503:
                assert_retry_later(down)
        finally:
            topology.restart_redis()
        for replica in (topology.a, topology.b):
            await asyncio.to_thread(replica.wait_ready, 30)

        # The hub: what was logged before the restart is still there, and new captures fan out again.
        after = await eventually_ok(lambda: capture(b, phone_token, jpeg(480, 360, seed=32, radius=90)), ok=201)
        expected = [before.json()["asset_id"], after.json()["asset_id"]]
        if down.status_code == 201:
            expected.append(down.json()["asset_id"])
        received = await assets_received(topology.a, desktop_token, set(expected))
        assert sorted(received) == sorted(expected), "each asset exactly once"
    await assert_one_bucket(topology, within_s=15)  # the rate limits are shared again


async def test_postgres_restarted(topology: Topology) -> None:
    key, account = await create_key(topology, "free", credits=5)
    image = jpeg(320, 240, seed=40)
    async with clients(topology, key) as (a, b):
        _, desktop_token, phone_token = await pair(a, b)
        # Retried as the phone retries a 503: after the Redis test a replica's pooled connection may be stale.
        kept = await eventually_ok(lambda: capture(b, phone_token, jpeg(480, 360, seed=41, radius=90)), ok=201)
        await eventually_ok(lambda: clip(a, image, quality="fast"))

        topology.postgres.stop()
        try:
            for replica in (a, b):
                # A refused connection (no server at all) reaches the app as a raw OSError from
                # asyncpg; it is named by where it was raised: the database.
                assert_retry_later(await clip(replica, image, quality="fast"), DATABASE_DOWN)
                assert_retry_later(await replica.get("/v1/account"), DATABASE_DOWN)
                assert_retry_later(await capture(replica, phone_token, image), DATABASE_DOWN)
        finally:
            topology.restart_postgres()

        for replica in (a, b):
            await eventually_ok(lambda: clip(replica, image, quality="fast"))
            asset = await replica.get(f"/v1/assets/{kept.json()['asset_id']}", headers=bearer(desktop_token))
            assert asset.status_code == 200
        assert (await a.get("/v1/account")).json()["balance"]["remaining"] == 5 - 3
    assert await ledger(topology, account) == {"charged": 3}


async def test_s3_stopped(topology: Topology) -> None:
    async with clients(topology) as (a, b):
        _, desktop_token, phone_token = await pair(a, b)
        kept = await eventually_ok(lambda: capture(b, phone_token, jpeg(480, 360, seed=50, radius=90)), ok=201)
        asset_path = f"/v1/assets/{kept.json()['asset_id']}"

        topology.s3.stop()
        try:
            # Each replica's boto3 retries a refused connection a few times first (seconds, bounded).
            refused = await asyncio.gather(*(
                call for replica in (a, b) for call in (
                    capture(replica, phone_token, jpeg(480, 360, seed=51, radius=90)),
                    replica.get(asset_path, headers=bearer(desktop_token)),
                )
            ))
            for response in refused:
                assert_retry_later(response, "storage_unavailable")
        finally:
            topology.s3.start()

        for replica in (a, b):  # nothing accepted was lost, and both replicas serve again by themselves
            got = await eventually_ok(lambda: replica.get(asset_path, headers=bearer(desktop_token)))
            assert got.headers["content-type"] == "image/png"
            await eventually_ok(lambda: capture(replica, phone_token, jpeg(480, 360, seed=52, radius=90)), ok=201)


async def test_triton_stopped(topology: Topology) -> None:
    key, account = await create_key(topology, "free", credits=5)
    image = jpeg(320, 240, seed=60)
    async with clients(topology, key) as (a, b):
        _, _, phone_token = await pair(a, b)
        topology.triton.stop()
        try:
            for replica in (a, b):
                assert_retry_later(await clip(replica, image, quality="fast"), "inference_unavailable")
                assert_retry_later(await capture(replica, phone_token, image), "inference_unavailable")
            assert (await a.get("/v1/account")).json()["balance"]["remaining"] == 5
        finally:
            topology.restart_triton()
        for replica in (a, b):
            await eventually_ok(lambda: clip(replica, image, quality="fast"))
    rows = await ledger(topology, account)
    assert rows["charged"] == 2 and "reserved" not in rows, rows  # the refused ones were released, not charged


DATABASE_DOWN = "database_unavailable"


def assert_retry_later(response: httpx.Response, code: str | tuple[str, ...] | None = None) -> None:
    """503 problem+json with a stable code and Retry-After, not charged (a 500 or a hang fails here)."""
    body = assert_problem(response, 503)
    assert body["code"].endswith("_unavailable"), body
    if code is not None:
        assert body["code"] in ((code,) if isinstance(code, str) else code), body
    assert int(response.headers["Retry-After"]) >= 1
