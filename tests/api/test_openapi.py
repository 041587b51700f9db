"""The OpenAPI document is the contract: valid 3.1, problem+json errors, real media types and headers."""

from __future__ import annotations

import json
from typing import Any, get_args

import httpx
import jsonschema
import pytest
from openapi_spec_validator import validate

from segmentation.options import OPTION_NAMES, Channels, OutputFormat, SizePreset
from tests.conftest import disk_model, jpeg, make_settings

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``/openapi.json`` as the app serves it (no lifespan needed: the document is static)."""
    import asyncio

    from api.app import create_app

    app = create_app(make_settings(tmp_path_factory.mktemp("openapi")))

    async def fetch() -> dict[str, Any]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
            response = await client.get("/openapi.json")
            assert response.status_code == 200
            return response.json()

    return asyncio.run(fetch())


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, op) for path, ops in document["paths"].items() for method, op in ops.items()]


def test_document_is_valid_openapi_3_1(document) -> None:
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_every_error_is_problem_json_with_the_shared_schema(document) -> None:
    schemas = document["components"]["schemas"]
    assert set(schemas["Problem"]["required"]) == {"type", "title", "status", "detail", "code"}
    # FastAPI's own 422 (application/json, HTTPValidationError) is never what the app sends
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    errors = 0
    for method, path, op in operations(document):
        for status, response in op["responses"].items():
            if int(status) >= 400:
                errors += 1
                assert list(response["content"]) == [PROBLEM], (method, path, status)
                assert response["content"][PROBLEM]["schema"] == {"$ref": "#/components/schemas/Problem"}
                assert response["description"] and "`" in response["description"], (method, path, status)
            if int(status) in (429, 503):
                assert "Retry-After" in response["headers"], (method, path, status)
            assert "X-Request-Id" in response["headers"], (method, path, status)
    assert errors > 50


@pytest.mark.parametrize(
    ("method", "path", "statuses"),
    [
        ("POST", "/v1/clip", {400, 401, 402, 403, 409, 413, 415, 422, 429, 503}),
        ("GET", "/v1/account", {401, 403, 422, 429, 503}),
        ("POST", "/v1/pairings/claim", {404, 409, 410, 422, 429, 503}),
        ("POST", "/v1/captures", {400, 401, 403, 409, 410, 413, 415, 422, 503}),
        ("POST", "/v1/captures/{asset_id}/paste", {400, 401, 403, 404, 409, 413, 415, 422, 503}),
        ("GET", "/v1/assets/{asset_id}", {401, 403, 404, 410, 422, 503}),
    ],
)
def test_routes_declare_the_errors_they_answer(document, method: str, path: str, statuses: set[int]) -> None:
    declared = {int(s) for s in document["paths"][path][method.lower()]["responses"] if int(s) >= 400}
    assert statuses <= declared, statuses - declared


def test_every_mapped_error_code_is_documented_under_its_status(document) -> None:
    from api import errors

    tables = [errors._SEGMENTATION_STATUS, errors._BILLING_STATUS, errors._ASSET_STATUS, errors._PAIRING_STATUS]
    descriptions: dict[int, str] = {}
    for _, _, op in operations(document):
        for status, response in op["responses"].items():
            descriptions.setdefault(int(status), response["description"])
    for table in tables:
        for kind, status in table:
            assert f"`{kind.code}`" in descriptions.get(status, ""), (kind.__name__, kind.code, status)


def test_clip_documents_its_body_options_media_types_and_headers(document) -> None:
    op = document["paths"]["/v1/clip"]["post"]
    form = op["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["image_file"] and form["properties"]["image_file"]["format"] == "binary"
    assert set(form["properties"]) == {"image_file", *OPTION_NAMES}
    assert form["additionalProperties"] is False  # SPEC §5: an unknown parameter is refused
    assert {"image/jpeg", "image/png", "image/webp", "image/heic"} <= set(op["requestBody"]["content"])
    query = {p["name"]: p["schema"] for p in op["parameters"] if p["in"] == "query"}
    assert set(query) == set(OPTION_NAMES)
    assert form["properties"]["format"]["enum"] == list(get_args(OutputFormat)) == ["png", "webp"]
    assert query["channels"]["enum"] == list(get_args(Channels))
    assert query["size"]["enum"] == list(get_args(SizePreset))
    ok = op["responses"]["200"]
    assert set(ok["content"]) == {"image/png", "image/webp"}
    assert ok["content"]["image/png"]["schema"]["format"] == "binary"
    spec_headers = {  # SPEC §5
        "X-Credits-Charged", "X-Credits-Remaining", "X-Width", "X-Height", "X-Foreground-Left",
        "X-Foreground-Top", "X-Foreground-Width", "X-Foreground-Height", "X-Request-Id", "RateLimit",
        "RateLimit-Policy",
    }
    assert spec_headers <= set(ok["headers"])


def test_image_routes_answer_their_real_media_types(document) -> None:
    assert set(document["paths"]["/v1/assets/{asset_id}"]["get"]["responses"]["200"]["content"]) == {"image/png"}
    assert set(document["paths"]["/v1/fiducials.png"]["get"]["responses"]["200"]["content"]) == {"image/png"}
    assert set(document["paths"]["/v1/qr.svg"]["get"]["responses"]["200"]["content"]) == {"image/svg+xml"}


def test_links_lead_from_pairing_to_claim_capture_and_paste(document) -> None:
    ids = {op["operationId"] for _, _, op in operations(document)}
    opened = document["paths"]["/v1/pairings"]["post"]["responses"]["201"]["links"]
    claimed = document["paths"]["/v1/pairings/claim"]["post"]["responses"]["201"]["links"]
    captured = document["paths"]["/v1/captures"]["post"]["responses"]["201"]["links"]
    assert opened["claim"]["requestBody"] == {"code": "$response.body#/code"}
    assert claimed["capture"]["parameters"] == {"query.token": "$response.body#/phone_token"}
    assert captured["paste"]["parameters"]["path.asset_id"] == "$response.body#/asset_id"
    for links in (opened, claimed, captured):
        assert {link["operationId"] for link in links.values()} <= ids


async def test_a_real_problem_matches_the_documented_schema(document, app_factory) -> None:
    schema = {**document["components"]["schemas"]["Problem"], "$defs": document["components"]["schemas"]}
    async with app_factory(disk_model()) as api:
        refused = await api.client.post(
            "/v1/clip", params={"colour": "red"}, files={"image_file": ("p.jpg", jpeg(), "image/jpeg")}
        )
        anonymous = await api.client.get("/v1/account", headers={"X-Api-Key": ""})
    for response, status in ((refused, 422), (anonymous, 401)):
        assert response.status_code == status and response.headers["content-type"] == PROBLEM
        jsonschema.validate(response.json(), schema)
        documented = document["paths"][response.request.url.path]["post" if status == 422 else "get"]["responses"]
        assert str(status) in documented


def test_the_document_names_no_file_outside_it(document) -> None:
    text = json.dumps(document)
    assert "#/components/schemas/" in text
    for ref in {part.split('"')[0] for part in text.split('"$ref": "')[1:]}:
        assert ref.removeprefix("#/components/schemas/") in document["components"]["schemas"], ref


