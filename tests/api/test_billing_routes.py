"""The paid API end to end: concurrency never overdraws, errors are free, Idempotency-Key,
the Stripe webhook route, Checkout and metered usage through the app, and Redis-backed limits."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import numpy as np

from segmentation.models import PRESETS
from segmentation.session import FunctionModel
from tests.billing.stripe_server import event, sign
from tests.conftest import (
    STRIPE_TEST_KEY,
    WEBHOOK_SECRET,
    assert_problem,
    disk_model,
    disk_saliency,
    jpeg,
)

UNLIMITED = {"rate": 1000.0, "burst": 1000, "concurrency": 100}


def credits_plan(credits: float, **fields) -> dict:
    return {"free": {"monthly_credits": credits, **UNLIMITED, **fields}}


async def remaining(api) -> float:
    return (await api.client.get("/v1/account")).json()["balance"]["remaining"]


async def test_16_parallel_requests_on_10_credits(app_factory) -> None:
    async with app_factory(disk_model(delay=0.02), plans=credits_plan(10), workers=4, max_queue=32) as api:
        data = jpeg(96, 72)
        responses = await asyncio.gather(*(api.clip(data) for _ in range(16)))
        codes = sorted(r.status_code for r in responses)
        assert codes == [200] * 10 + [402] * 6, codes
        for response in responses:
            if response.status_code == 402:
                assert_problem(response, 402, "insufficient_credits")
        left = [float(r.headers["X-Credits-Remaining"]) for r in responses if r.status_code == 200]
        assert min(left) == 0 and max(left) <= 9
        assert await remaining(api) == 0
        body = (await api.client.get("/v1/account")).json()
        assert body["usage"]["requests"] == 10 and body["usage"]["credits"] == 10


async def test_errors_are_never_charged(app_factory) -> None:
    failing = {"on": False}

    def fn(x: np.ndarray) -> np.ndarray:
        if failing["on"]:
            raise RuntimeError("the model broke")
        return disk_saliency(x)

    model = FunctionModel(PRESETS["u2net"], fn, max_batch=1)
    async with app_factory(model, plans=credits_plan(5)) as api:
        assert_problem(await api.clip(jpeg(64, 48)[:200], "x.jpg"), 400)
        assert_problem(await api.clip(jpeg(64, 48), format="gif"), 422)
        assert_problem(await api.clip(b"", "e.jpg"), 400)
        assert await remaining(api) == 5
        failing["on"] = True
        transport = httpx.ASGITransport(app=api.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", headers={"X-Api-Key": api.key}
        ) as client:
            response = await client.post("/v1/clip", files={"image_file": ("p.jpg", jpeg(64, 48), "image/jpeg")})
        assert_problem(response, 500, "internal_error")
        assert await remaining(api) == 5
        failing["on"] = False
        assert (await api.clip(jpeg(64, 48))).status_code == 200
        body = (await api.client.get("/v1/account")).json()
        assert body["usage"]["requests"] == 1 and body["balance"]["remaining"] == 4


async def test_idempotency_key_replays_without_a_second_charge(app_factory) -> None:
    async with app_factory(disk_model(), plans=credits_plan(5)) as api:
        data = jpeg(96, 72)
        headers = {"Idempotency-Key": "order-1234"}
        files = {"image_file": ("a.jpg", data, "image/jpeg")}
        first = await api.client.post("/v1/clip", files=files, headers=headers, data={"format": "webp"})
        assert first.status_code == 200 and "Idempotent-Replayed" not in first.headers
        again = await api.client.post("/v1/clip", files=files, headers=headers, data={"format": "webp"})
        assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
        assert again.content == first.content and again.headers["content-type"] == "image/webp"
        for name in ("X-Credits-Charged", "X-Credits-Remaining", "X-Width", "X-Foreground-Left"):
            assert again.headers[name] == first.headers[name]
        assert await remaining(api) == 4

        other_image = await api.client.post(
            "/v1/clip", files={"image_file": ("b.jpg", jpeg(96, 72, seed=3), "image/jpeg")}, headers=headers
        )
        assert_problem(other_image, 422, "idempotency_key_mismatch")
        other_options = await api.client.post("/v1/clip", files=files, headers=headers, data={"format": "png"})
        assert_problem(other_options, 422, "idempotency_key_mismatch")
        assert await remaining(api) == 4
        bad = await api.client.post("/v1/clip", files=files, headers={"Idempotency-Key": "x" * 300})
        assert_problem(bad, 422, "invalid_idempotency_key")


async def test_concurrent_retries_with_one_key_charge_once(app_factory) -> None:
    async with app_factory(disk_model(delay=0.2), plans=credits_plan(5)) as api:
        data = jpeg(64, 48)

        async def send():
            return await api.client.post(
                "/v1/clip", files={"image_file": ("a.jpg", data, "image/jpeg")}, headers={"Idempotency-Key": "same"}
            )

        responses = await asyncio.gather(*(send() for _ in range(4)))
        codes = [r.status_code for r in responses]
        assert codes.count(200) >= 1 and set(codes) <= {200, 409}, codes
        for response in responses:
            if response.status_code == 409:
                assert_problem(response, 409, "idempotency_key_in_use")
                assert int(response.headers["Retry-After"]) >= 1
        assert await remaining(api) == 4
        replay = await send()
        assert replay.status_code == 200 and replay.headers["Idempotent-Replayed"] == "true"
        assert await remaining(api) == 4


async def test_a_failed_request_frees_its_idempotency_key(app_factory) -> None:
    async with app_factory(disk_model(), plans=credits_plan(5)) as api:
        headers = {"Idempotency-Key": "retry-me"}
        bad = await api.client.post(
            "/v1/clip", files={"image_file": ("a.jpg", jpeg(64, 48)[:200], "image/jpeg")}, headers=headers
        )
        assert bad.status_code == 400
        good = await api.client.post(
            "/v1/clip", files={"image_file": ("a.jpg", jpeg(64, 48), "image/jpeg")}, headers=headers
        )
        assert good.status_code == 200 and await remaining(api) == 4


# --- the Stripe webhook route ---------------------------------------------------------------------


async def post_event(api, payload: dict, secret: str = WEBHOOK_SECRET, signature: str | None = None):
    body = json.dumps(payload).encode()
    return await api.client.post(
        "/v1/stripe/webhook",
        content=body,
        headers={"Stripe-Signature": signature or sign(body, secret), "Content-Type": "application/json"},
    )


def completed_checkout(account_id: str, session_id: str = "cs_test_route") -> dict:
    return event(
        "checkout.session.completed",
        {
            "id": session_id,
            "object": "checkout.session",
            "mode": "payment",
            "payment_status": "paid",
            "customer": "cus_route",
            "client_reference_id": account_id,
            "metadata": {"arclip_account": account_id, "arclip_pack": "starter"},
        },
    )


async def test_webhook_adds_credits_once_and_ignores_replays(app_factory) -> None:
    async with app_factory(disk_model(), plans=credits_plan(1), stripe_webhook_secret=WEBHOOK_SECRET) as api:
        account_id = (await api.services.billing.keys.get(api.key_id)).account_id
        payload = completed_checkout(account_id)
        first = await post_event(api, payload)
        assert first.status_code == 200 and first.json()["outcome"] == "credited"
        assert await remaining(api) == 1001
        replay = await post_event(api, payload)  # Stripe retries, or someone replays it
        assert replay.status_code == 200 and replay.json()["outcome"] == "replayed"
        assert await remaining(api) == 1001
        body = (await api.client.get("/v1/account")).json()
        assert body["plan"]["name"] == "prepaid" and body["balance"]["purchased_credits"] == 1000


async def test_webhook_signatures_are_checked(app_factory) -> None:
    async with app_factory(disk_model(), stripe_webhook_secret=WEBHOOK_SECRET) as api:
        account_id = (await api.services.billing.keys.get(api.key_id)).account_id
        payload = completed_checkout(account_id)
        for response in (
            await post_event(api, payload, secret="whsec_forged"),
            await post_event(api, payload, signature="t=1,v1=00"),
            await api.client.post("/v1/stripe/webhook", content=json.dumps(payload).encode()),
        ):
            assert_problem(response, 400, "invalid_webhook_signature")
        stale = sign(json.dumps(payload).encode(), WEBHOOK_SECRET, timestamp=int(time.time()) - 3600)
        assert_problem(await post_event(api, payload, signature=stale), 400, "invalid_webhook_signature")
        assert (await api.client.get("/v1/account")).json()["balance"]["purchased_credits"] == 0


async def test_webhook_without_a_secret_is_503(app_factory) -> None:
    async with app_factory(disk_model()) as api:
        assert_problem(await post_event(api, event("invoice.paid", {})), 503, "payments_not_configured")


async def test_failed_payment_suspends_the_keys_until_paid(app_factory) -> None:
    async with app_factory(disk_model(), plans=credits_plan(5), stripe_webhook_secret=WEBHOOK_SECRET) as api:
        billing = api.services.billing
        account_id = (await billing.keys.get(api.key_id)).account_id
        await billing.accounts.set_customer(account_id, "cus_suspend")
        invoice = {"id": "in_1", "object": "invoice", "customer": "cus_suspend"}
        now = int(time.time())
        assert (await post_event(api, event("invoice.payment_failed", invoice, created=now))).json()["outcome"] == (
            "suspended"
        )
        assert_problem(await api.clip(jpeg(64, 48)), 402, "account_suspended")
        assert_problem(await api.client.get("/v1/account"), 402, "account_suspended")
        assert (await post_event(api, event("invoice.paid", invoice, created=now + 1))).json()["outcome"] == "restored"
        assert (await api.clip(jpeg(64, 48))).status_code == 200


# --- Stripe through the app: Checkout and pay-as-you-go usage -------------------------------------


async def test_checkout_and_metered_usage_through_the_app(app_factory, stripe_local) -> None:
    settings = dict(
        plans={"free": {"monthly_credits": 0, **UNLIMITED}, "payg": {"monthly_credits": 0, **UNLIMITED}},
        stripe_api_key=STRIPE_TEST_KEY,
        stripe_api_base=stripe_local.url,
        stripe_webhook_secret=WEBHOOK_SECRET,
        stripe_max_retries=0,
        public_url="https://arclip.example",
        usage_report_interval_s=0.1,
    )
    async with app_factory(disk_model(), **settings) as api:
        billing = api.services.billing
        account_id = (await billing.keys.get(api.key_id)).account_id
        bought = await api.client.post("/v1/account/checkout", json={"pack": "growth"})
        assert bought.status_code == 201, bought.text
        assert bought.json()["url"].startswith("https://")
        sent = stripe_local.stub.checkout_sessions[-1]
        assert sent["success_url"] == "https://arclip.example/account?checkout=success"
        assert sent["metadata[arclip_account]"] == account_id
        assert_problem(await api.client.post("/v1/account/checkout", json={"pack": "nope"}), 422, "unknown_pack")

        # the account goes pay-as-you-go (its subscription's webhook)
        subscription = {"id": "sub_1", "object": "subscription", "status": "active",
                        "customer": sent["customer"], "metadata": {"arclip_account": account_id}}
        assert (await post_event(api, event("customer.subscription.created", subscription))).status_code == 200
        assert (await api.client.get("/v1/account")).json()["plan"]["name"] == "payg"

        billing.reporter.base_backoff = 0.05
        stripe_local.stub.fail_meter_events = 1  # the first report meets a Stripe error
        responses = [await api.clip(jpeg(64, 48)), await api.clip(jpeg(64, 48), size="preview")]
        assert [r.headers["X-Credits-Charged"] for r in responses] == ["1", "0.25"]
        reporter = billing.reporter
        for _ in range(200):
            if len(stripe_local.stub.meter_events) == 2 and await reporter.pending() == 0:
                break
            await asyncio.sleep(0.05)
        events = stripe_local.stub.meter_events
        assert sorted(int(e["payload"]["value"]) for e in events) == [1, 4]
        assert {e["payload"]["stripe_customer_id"] for e in events} == {sent["customer"]}
        assert stripe_local.stub.meter_attempts >= 3


# --- rate limits in Redis through the app ---------------------------------------------------------


async def test_limits_in_redis(app_factory, redis_server_url) -> None:
    plans = {"free": {"monthly_credits": 100, "rate": 0.1, "burst": 3, "concurrency": 10}}
    async with app_factory(disk_model(), plans=plans, redis_url=redis_server_url) as api:
        from billing import RedisLimiterStore

        assert isinstance(api.services.billing.limiter.store, RedisLimiterStore)
        codes = [(await api.clip(jpeg(64, 48))).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        assert (await api.client.get("/v1/account")).status_code == 429
