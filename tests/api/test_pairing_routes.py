"""The pairing routes (SPEC §6) over the ASGI app: open, claim, inspect, new code, unpair; errors as problem+json."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

import pytest

from sync.pairing import ALPHABET
from tests.conftest import RunningApp, assert_problem, disk_model


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def api(app_factory) -> Any:
    async with app_factory(disk_model()) as running:
        yield running


async def open_and_claim(api: RunningApp) -> tuple[dict[str, Any], dict[str, Any]]:
    opened = await api.client.post("/v1/pairings")
    assert opened.status_code == 201, opened.text
    claimed = await api.client.post("/v1/pairings/claim", json={"code": opened.json()["code"]})
    assert claimed.status_code == 201, claimed.text
    return opened.json(), claimed.json()


async def messages(api: RunningApp, pairing_id: str) -> list[tuple[str, dict[str, Any]]]:
    hub = api.services.hub  # type: ignore[attr-defined]
    last = await hub.last_id(pairing_id)
    got: list[tuple[str, dict[str, Any]]] = []
    if last:
        async with contextlib.aclosing(hub.follow(pairing_id, 0)) as stream:
            async for message in stream:
                got.append((message.type, message.data))
                if message.id == last:
                    break
    return got


async def test_open_a_pairing(api: RunningApp) -> None:
    response = await api.client.post("/v1/pairings")
    assert response.status_code == 201
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) >= {"pairing_id", "code", "qr_url", "expires_at", "desktop_token"}
    assert len(body["code"]) == 8 and set(body["code"]) <= set(ALPHABET)
    assert body["qr_url"] == f"http://testserver/capture?code={body['code']}"
    assert datetime.fromisoformat(body["expires_at"]).tzinfo is not None
    assert body["max_phones"] == 4


async def test_the_qr_url_uses_the_public_url(app_factory) -> None:
    async with app_factory(disk_model(), public_url="https://arclip.example/", pairing_code_length=6) as api:
        body = (await api.client.post("/v1/pairings")).json()
    assert len(body["code"]) == 6
    assert body["qr_url"] == f"https://arclip.example/capture?code={body['code']}"


async def test_claim_and_the_desktop_hears_of_it(api: RunningApp) -> None:
    opened, claimed = await open_and_claim(api)
    assert claimed["pairing_id"] == opened["pairing_id"] and claimed["phone_token"]
    assert await messages(api, opened["pairing_id"]) == [
        ("peer.joined", {"device_id": claimed["device_id"], "role": "phone"})
    ]
    view = await api.client.get(f"/v1/pairings/{opened['pairing_id']}", headers=bearer(opened["desktop_token"]))
    assert view.status_code == 200
    assert view.json()["state"] == "active"
    assert [d["role"] for d in view.json()["devices"]] == ["desktop", "phone"]


async def test_code_errors(api: RunningApp) -> None:
    opened, _ = await open_and_claim(api)
    reused = await api.client.post("/v1/pairings/claim", json={"code": opened["code"]})
    assert_problem(reused, 410, "code_used")
    assert_problem(await api.client.post("/v1/pairings/claim", json={"code": "ZZZZ-ZZZZ"}), 404, "invalid_code")
    assert_problem(await api.client.post("/v1/pairings/claim", json={"code": "ABC"}), 422, "malformed_code")
    assert_problem(await api.client.post("/v1/pairings/claim", json={}), 422, "invalid_parameter")


async def test_guessing_is_throttled(app_factory) -> None:
    async with app_factory(disk_model(), pairing_claims_per_minute=3) as api:
        code = (await api.client.post("/v1/pairings")).json()["code"]
        for _ in range(3):
            assert_problem(await api.client.post("/v1/pairings/claim", json={"code": "ZZZZZZZZ"}), 404)
        refused = await api.client.post("/v1/pairings/claim", json={"code": code})
        assert_problem(refused, 429, "too_many_attempts")
        assert 1 <= int(refused.headers["retry-after"]) <= 60


async def test_tokens(api: RunningApp) -> None:
    opened, claimed = await open_and_claim(api)
    other = (await api.client.post("/v1/pairings")).json()
    path = f"/v1/pairings/{opened['pairing_id']}"
    missing = await api.client.get(path)
    assert_problem(missing, 401, "missing_token")
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert_problem(await api.client.get(path, headers=bearer("arcp_nope")), 403, "invalid_token")
    assert_problem(await api.client.get(path, headers={"Authorization": "Basic abc"}), 401, "missing_token")
    assert_problem(await api.client.get(path, headers=bearer(other["desktop_token"])), 404, "pairing_not_found")
    assert (await api.client.get(path, params={"token": claimed["phone_token"]})).status_code == 200


async def test_new_code_for_another_phone(api: RunningApp) -> None:
    opened, claimed = await open_and_claim(api)
    path = f"/v1/pairings/{opened['pairing_id']}/code"
    assert_problem(await api.client.post(path, headers=bearer(claimed["phone_token"])), 403, "wrong_role")
    issued = await api.client.post(path, headers=bearer(opened["desktop_token"]))
    assert issued.status_code == 201
    code = issued.json()["code"]
    assert issued.json()["qr_url"].endswith(f"?code={code}")
    second = await api.client.post("/v1/pairings/claim", json={"code": code})
    assert second.status_code == 201 and second.json()["pairing_id"] == opened["pairing_id"]


async def test_a_phone_unpairs_itself(api: RunningApp) -> None:
    opened, claimed = await open_and_claim(api)
    path = f"/v1/pairings/{opened['pairing_id']}"
    assert (await api.client.delete(path, headers=bearer(claimed["phone_token"]))).status_code == 204
    assert_problem(await api.client.get(path, headers=bearer(claimed["phone_token"])), 403, "revoked_token")
    view = await api.client.get(path, headers=bearer(opened["desktop_token"]))
    assert [d["role"] for d in view.json()["devices"]] == ["desktop"]
    assert (await messages(api, opened["pairing_id"]))[-1][0] == "peer.left"


async def test_the_desktop_unpairs_everyone(api: RunningApp) -> None:
    opened, claimed = await open_and_claim(api)
    path = f"/v1/pairings/{opened['pairing_id']}"
    assert (await api.client.delete(path, headers=bearer(opened["desktop_token"]))).status_code == 204
    for token in (opened["desktop_token"], claimed["phone_token"]):
        body = assert_problem(await api.client.get(path, headers=bearer(token)), 410, "pairing_closed")
        assert body["state"] == "closed"
    assert_problem(await api.client.delete(path, headers=bearer(opened["desktop_token"])), 410)
    assert (await messages(api, opened["pairing_id"]))[-1] == (
        "pairing.closed", {"state": "closed", "reason": "unpaired"}
    )
