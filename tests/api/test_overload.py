"""A bounded work queue: beyond it 503 with Retry-After; what was admitted succeeds."""

from __future__ import annotations

import asyncio

from tests.conftest import assert_problem, decode_response_image, disk_model, jpeg


async def test_requests_beyond_the_queue_get_503(app_factory) -> None:
    model = disk_model(delay=0.4, max_batch=1)
    async with app_factory(model, max_queue=1, workers=1) as api:
        data = jpeg(160, 120)
        responses = await asyncio.gather(*(api.clip(data) for _ in range(5)))
        ok = [r for r in responses if r.status_code == 200]
        refused = [r for r in responses if r.status_code == 503]
        assert len(ok) + len(refused) == 5, [r.status_code for r in responses]
        assert len(ok) >= 1 and len(refused) >= 1
        for response in ok:
            assert decode_response_image(response.content).size == (160, 120)
            assert response.headers["X-Credits-Charged"] == "1"
        for response in refused:
            assert_problem(response, 503, "overloaded")
            retry = int(response.headers["Retry-After"])
            assert 1 <= retry <= 30
        # the queue drains: afterwards a request is admitted again and the queue is empty
        assert (await api.clip(data)).status_code == 200
        assert (await api.client.get("/readyz")).json()["queue"]["admitted"] == 0


async def test_queue_admits_up_to_its_size(app_factory) -> None:
    model = disk_model(delay=0.3, max_batch=1)
    async with app_factory(model, max_queue=3, workers=1) as api:
        data = jpeg(160, 120)
        responses = await asyncio.gather(*(api.clip(data) for _ in range(6)))
        codes = sorted(r.status_code for r in responses)
        assert codes == [200, 200, 200, 503, 503, 503], codes


async def test_bad_requests_do_not_take_queue_places(app_factory) -> None:
    model = disk_model(max_batch=1)
    async with app_factory(model, max_queue=1, workers=1) as api:
        for _ in range(3):
            assert (await api.clip(b"", "e.jpg")).status_code == 400
            assert (await api.clip(jpeg(64, 48), format="gif")).status_code == 422
        assert (await api.clip(jpeg(64, 48))).status_code == 200
