"""GET /v1/account, credits headers, rate limits and their headers, scopes, test keys, the account page."""

from __future__ import annotations

import asyncio
import re

import httpx

from tests.conftest import assert_problem, disk_model, jpeg

# Ten credits a month, no rate limit to speak of.
TEN_CREDITS = {"free": {"monthly_credits": 10, "rate": 1000.0, "burst": 1000, "concurrency": 100}}


def parse_ratelimit(response: httpx.Response) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    """The RateLimit-Policy and RateLimit fields as {policy: {param: value}}."""

    def items(value: str) -> dict[str, dict[str, str]]:
        out = {}
        for item in value.split(","):
            name, *params = item.strip().split(";")
            out[name.strip('"')] = dict(p.split("=", 1) for p in params)
        return out

    return items(response.headers["RateLimit-Policy"]), items(response.headers["RateLimit"])


async def account(api) -> dict:
    response = await api.client.get("/v1/account")
    assert response.status_code == 200, response.text
    return response.json()


async def test_account_shows_plan_balance_and_usage(app_factory) -> None:
    async with app_factory(disk_model(), plans=TEN_CREDITS) as api:
        body = await account(api)
        assert body["plan"]["name"] == "free" and body["plan"]["monthly_credits"] == 10
        assert body["balance"]["credits"] == 10 and body["balance"]["remaining"] == 10
        assert body["usage"]["requests"] == 0 and body["usage"]["credits"] == 0
        assert body["key"]["id"] == api.key_id and api.key not in str(body)
        assert [k["id"] for k in body["keys"]] == [api.key_id]
        assert {p["name"] for p in body["credit_packs"]} == {"starter", "growth", "scale"}

        full = await api.clip(jpeg(64, 48))
        assert (full.headers["X-Credits-Charged"], full.headers["X-Credits-Remaining"]) == ("1", "9")
        preview = await api.clip(jpeg(64, 48), size="preview")
        assert (preview.headers["X-Credits-Charged"], preview.headers["X-Credits-Remaining"]) == ("0.25", "8.75")

        body = await account(api)
        assert body["balance"]["remaining"] == 8.75
        assert body["usage"]["requests"] == 2 and body["usage"]["credits"] == 1.25
        assert body["usage"]["by_operation"] == {"clip": 1, "clip.preview": 1}


async def test_out_of_credits_is_402_and_not_charged(app_factory) -> None:
    async with app_factory(disk_model(), plans={"free": {**TEN_CREDITS["free"], "monthly_credits": 1.25}}) as api:
        assert (await api.clip(jpeg(64, 48))).status_code == 200
        refused = await api.clip(jpeg(64, 48))
        body = assert_problem(refused, 402, "insufficient_credits")
        assert body["credits_remaining"] == 0.25 and body["credits_required"] == 1
        ok = await api.clip(jpeg(64, 48), size="preview")  # what is left still buys a preview
        assert ok.status_code == 200 and ok.headers["X-Credits-Remaining"] == "0"
        assert (await account(api))["usage"]["requests"] == 2


async def test_ratelimit_headers_on_every_response(app_factory) -> None:
    plans = {"free": {"monthly_credits": 1, "rate": 2.0, "burst": 10, "concurrency": 3}}
    async with app_factory(disk_model(), plans=plans) as api:
        responses = [
            await api.client.get("/v1/account"),
            await api.clip(jpeg(64, 48)),
            await api.clip(jpeg(64, 48)),  # 402
            await api.clip(jpeg(64, 48), format="gif"),  # 422
            await api.clip(b"not an image", "x.jpg"),  # 400 (before any charge: the balance is 0 by now)
        ]
        assert [r.status_code for r in responses] == [200, 200, 402, 422, 402]
        remaining = []
        for response in responses:
            policy, state = parse_ratelimit(response)
            assert policy == {"rate": {"q": "10", "w": "5"}, "concurrency": {"q": "3", "qu": '"concurrency"'}}
            assert int(state["rate"]["t"]) >= 0 and state["concurrency"]["r"] == "2"
            remaining.append(int(state["rate"]["r"]))
        assert remaining == sorted(remaining, reverse=True) and remaining[0] == 9
        # not on routes outside the public API
        assert "RateLimit" not in (await api.client.get("/healthz")).headers


async def test_rate_limited_is_429_with_retry_after(app_factory) -> None:
    plans = {"free": {"monthly_credits": 100, "rate": 0.2, "burst": 2, "concurrency": 10}}
    async with app_factory(disk_model(), plans=plans) as api:
        assert [(await api.clip(jpeg(64, 48))).status_code for _ in range(2)] == [200, 200]
        refused = await api.clip(jpeg(64, 48))
        body = assert_problem(refused, 429, "rate_limited")
        assert body["limit"] == "rate"
        assert 1 <= int(refused.headers["Retry-After"]) <= 5
        _, state = parse_ratelimit(refused)
        assert state["rate"]["r"] == "0"
        assert (await api.client.get("/v1/account")).status_code == 429  # the whole public API shares the bucket


async def test_concurrency_cap_is_429(app_factory) -> None:
    plans = {"free": {"monthly_credits": 100, "rate": 100.0, "burst": 100, "concurrency": 1}}
    async with app_factory(disk_model(delay=0.3, max_batch=1), plans=plans, workers=2) as api:
        first, second = await asyncio.gather(api.clip(jpeg(64, 48)), api.clip(jpeg(64, 48)))
        codes = sorted([first.status_code, second.status_code])
        assert codes == [200, 429], codes
        refused = first if first.status_code == 429 else second
        assert assert_problem(refused, 429, "rate_limited")["limit"] == "concurrency"
        _, state = parse_ratelimit(refused)
        assert state["concurrency"]["r"] == "0"
        assert (await api.clip(jpeg(64, 48))).status_code == 200  # the slot came back


async def test_test_keys_work_but_are_never_charged(app_factory) -> None:
    async with app_factory(disk_model(), plans={"free": {**TEN_CREDITS["free"], "monthly_credits": 1}}) as api:
        billing = api.services.billing
        key = (await billing.keys.get(api.key_id))
        _, test_secret = await billing.keys.create("ci", account_id=key.account_id, mode="test")
        assert (await api.clip(jpeg(64, 48))).status_code == 200  # the live credit is spent
        headers = {"X-Api-Key": test_secret}
        for _ in range(3):
            response = await api.client.post(
                "/v1/clip", files={"image_file": ("a.jpg", jpeg(64, 48), "image/jpeg")}, headers=headers
            )
            assert response.status_code == 200, response.text
            assert response.headers["X-Credits-Charged"] == "0" and response.headers["X-Credits-Remaining"] == "0"
        body = (await api.client.get("/v1/account", headers=headers)).json()
        assert body["key"]["mode"] == "test"
        assert body["usage"]["requests"] == 1 and body["usage"]["test_requests"] == 3


async def test_scopes_are_enforced(app_factory) -> None:
    async with app_factory(disk_model(), plans=TEN_CREDITS) as api:
        billing = api.services.billing
        key = await billing.keys.get(api.key_id)
        _, reader = await billing.keys.create("dashboard", account_id=key.account_id, scopes=["account:read"])
        refused = await api.client.post(
            "/v1/clip", files={"image_file": ("a.jpg", jpeg(64, 48), "image/jpeg")}, headers={"X-Api-Key": reader}
        )
        assert assert_problem(refused, 403, "insufficient_scope")["scope"] == "clip"
        assert (await api.client.get("/v1/account", headers={"X-Api-Key": reader})).status_code == 200
        checkout = await api.client.post("/v1/account/checkout", json={"pack": "starter"}, headers={"X-Api-Key": reader})
        assert_problem(checkout, 403, "insufficient_scope")


async def test_missing_and_bad_keys_on_account(app_factory) -> None:
    async with app_factory(disk_model()) as api:
        assert_problem(await api.client.get("/v1/account", headers={"X-Api-Key": ""}), 401, "missing_api_key")
        tampered = api.key[:-1] + ("y" if api.key.endswith("x") else "x")  # a key may end in "x" itself
        assert_problem(await api.client.get("/v1/account", headers={"X-Api-Key": tampered}), 403)


async def test_checkout_without_stripe_is_503(app_factory) -> None:
    async with app_factory(disk_model()) as api:
        response = await api.client.post("/v1/account/checkout", json={"pack": "starter"})
        assert_problem(response, 503, "payments_not_configured")


async def test_account_page(app_factory) -> None:
    async with app_factory(disk_model()) as api:
        page = await api.client.get("/account")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert 'fetch(path' in page.text and "/v1/account" in page.text and "X-Api-Key" in page.text
        assert re.search(r"<input[^>]+type=\"password\"", page.text)
