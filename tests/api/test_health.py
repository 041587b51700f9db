"""Liveness and readiness."""

from __future__ import annotations

import onnxruntime as ort

from sync.storage import StorageUnavailable
from tests.conftest import disk_model


async def test_healthz(api) -> None:
    response = await api.client.get("/healthz", headers={"X-Api-Key": ""})
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["X-Request-Id"]


async def test_readyz_reports_model_provider_and_database(api) -> None:
    response = await api.client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["database"]["status"] == "ok" and body["database"]["free_bytes"] > 0
    assert body["storage"]["status"] == "ok" and body["storage"]["free_bytes"] > 0
    assert body["redis"] == {"status": "not_configured"}
    assert body["inference"]["status"] == "ok" and body["inference"]["location"] == "in-process"
    assert body["model"] == "u2netp"
    assert body["provider"] in ort.get_available_providers()
    # int8 on a CPU wherever its load-time proof passes (fp32 elsewhere); a mirrored run only for unsure maps.
    assert body["precision"] in ("int8", "fp32") and body["extra_passes"] == ["flip-uncertain", "aspect-flip-uncertain"]
    assert body["max_batch"] >= 1
    assert body["queue"] == {"admitted": 0, "capacity": 16}


async def test_readyz_with_an_in_memory_model(app_factory) -> None:
    async with app_factory(disk_model(), max_queue=3) as api:
        body = (await api.client.get("/readyz")).json()
    assert body["provider"] == "FunctionModel"
    assert body["queue"]["capacity"] == 3


async def test_readyz_reports_a_broken_database(api) -> None:
    await api.services.database.dispose()
    # point the engine at a database that cannot be opened
    from sqlalchemy.ext.asyncio import create_async_engine

    broken = create_async_engine("sqlite+aiosqlite:////nonexistent-dir/x/db.sqlite")
    api.services.readiness.database = broken
    try:
        response = await api.client.get("/readyz")
    finally:
        await broken.dispose()
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    body = response.json()
    assert body["code"] == "not_ready" and "database" in body["detail"]
    assert body["database"]["status"] == "error"
    assert body["database"]["error"] == "database_unavailable"
    assert body["storage"]["status"] == "ok", "each service has its own status"


async def test_readyz_reports_storage_and_fails_when_it_is_down(api) -> None:
    """Readiness covers object storage: a store that errors makes /readyz answer 503."""
    response = await api.client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["storage"]["status"] == "ok"

    services = api.app.state.services
    original = services.store.put

    async def broken(key: str, data: bytes, content_type: str = "") -> None:
        raise StorageUnavailable("disk gone")

    services.store.put = broken
    try:
        response = await api.client.get("/readyz")
    finally:
        services.store.put = original
    assert response.status_code == 503
    assert response.json()["storage"] == {"status": "error", "error": "storage_unavailable", "detail": "disk gone"}


async def test_readyz_fails_when_the_disk_is_nearly_full(app_factory) -> None:
    """Free space under ARCLIP_MIN_FREE_BYTES is "not ready" before a write ever fails."""
    async with app_factory(disk_model(), min_free_bytes=2**62) as api:
        response = await api.client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    for name in ("database", "storage"):
        assert body[name]["status"] == "error" and body[name]["error"] == "low_disk", name
        assert 0 < body[name]["free_bytes"] < 2**62
