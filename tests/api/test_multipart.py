"""Multipart bodies that cannot be parsed, or that end early, are ``400 malformed_multipart``, never charged."""

from __future__ import annotations

import pytest

from tests.conftest import assert_problem, disk_model, jpeg

BOUNDARY = "arclipboundary"


def body(image: bytes, *, close: bool = True) -> bytes:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image_file"; filename="p.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    return head + image + (f"\r\n--{BOUNDARY}--\r\n".encode() if close else b"")


CASES = {
    "cut off inside the file": body(jpeg(160, 120), close=False),
    "cut off inside the part headers": body(jpeg(160, 120))[:40],
    "no boundary in the body": b"just some bytes, no parts at all",
    "a part without headers": f"--{BOUNDARY}\r\n\r\n\r\nxx\r\n--{BOUNDARY}--\r\n".encode(),
}


@pytest.mark.parametrize("name", list(CASES))
async def test_malformed_multipart_is_400_and_not_charged(app_factory, name: str) -> None:
    async with app_factory(disk_model()) as api:
        before = (await api.client.get("/v1/account")).json()["balance"]["remaining"]
        response = await api.client.post(
            "/v1/clip", content=CASES[name], headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
        )
        assert_problem(response, 400, "malformed_multipart")
        assert (await api.client.get("/v1/account")).json()["balance"]["remaining"] == before
        ok = await api.client.post(
            "/v1/clip", content=body(jpeg(160, 120)), headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
        )
        assert ok.status_code == 200, ok.text


async def test_a_multipart_content_type_without_boundary_is_malformed(app_factory) -> None:
    async with app_factory(disk_model()) as api:
        response = await api.client.post("/v1/clip", content=body(jpeg()), headers={"Content-Type": "multipart/form-data"})
        assert_problem(response, 400, "malformed_multipart")
