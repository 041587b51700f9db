"""The SDK agrees with the server's OpenAPI document: ``clip``'s options and their values, and the
problem codes by status. A change on either side that the other lacks fails here."""

from __future__ import annotations

import re
import typing
from typing import Any

import pytest
from arclip_client import PROBLEM_CODES, Arclip, AsyncArclip, Overloaded, ServiceUnavailable, Starting
from arclip_client._base import clip_fields
from arclip_client._errors import error_class

from api.app import create_app
from tests.conftest import disk_model, make_settings

# clip()'s keyword arguments that are not options sent to the server.
_NOT_OPTIONS = {"image", "idempotency_key", "timeout"}


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    # The document is built from the routes alone: no lifespan, nothing started.
    return create_app(make_settings(tmp_path_factory.mktemp("contract")), model=disk_model()).openapi()


def _clip_form(document: dict[str, Any]) -> dict[str, Any]:
    body = document["paths"]["/v1/clip"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    return {name: schema for name, schema in body["properties"].items() if name != "image_file"}


def _literal_values(annotation: Any) -> tuple[str, ...] | None:
    """The values of ``Literal[...] | None`` (None when the annotation is not a Literal)."""
    for arg in typing.get_args(annotation) or (annotation,):
        if typing.get_origin(arg) is typing.Literal:
            return typing.get_args(arg)
    return None


@pytest.mark.parametrize("client", [Arclip, AsyncArclip])
def test_clip_options_are_the_servers(document: dict[str, Any], client: type) -> None:
    form = _clip_form(document)
    query = {p["name"]: p["schema"] for p in document["paths"]["/v1/clip"]["post"]["parameters"] if p["in"] == "query"}
    assert query == form  # the server takes each option either way, the same

    hints = typing.get_type_hints(client.clip)
    options = {name for name in hints if name not in _NOT_OPTIONS | {"return"}}
    assert options == set(form)
    for name, schema in form.items():
        values = _literal_values(hints[name])
        if "enum" in schema:
            assert values is not None and list(values) == schema["enum"], name
        else:
            assert values is None, f"{name}: the SDK restricts values the server does not"


def test_every_option_is_sent_under_its_own_name(document: dict[str, Any]) -> None:
    sent = clip_fields(format="webp", channels="alpha", crop=True, crop_margin="10%", size="preview",
                       bg_color="#ffffff", quality="fast")
    assert set(sent) == set(_clip_form(document))
    assert sent["quality"] == "fast" and sent["crop"] == "true"
    assert clip_fields(format=None, channels=None, crop=None, crop_margin=None, size=None, bg_color=None) == {}


def _documented_codes(document: dict[str, Any]) -> dict[int, set[str]]:
    """Every ``code`` a response description names (in backquotes), by status, over all operations."""
    codes: dict[int, set[str]] = {}
    for operations in document["paths"].values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                if int(status) < 400:
                    continue
                found = re.findall(r"`([a-z][a-z0-9_]*)`", response.get("description", ""))
                codes.setdefault(int(status), set()).update(found)
    return codes


def test_problem_codes_are_the_servers(document: dict[str, Any]) -> None:
    documented = _documented_codes(document)
    known = {status: set(codes) for status, codes in PROBLEM_CODES.items()}
    # The SDK knows every code of every status the server answers with, and no code it never sends.
    assert {s: c for s, c in documented.items() if c} == {s: c for s, c in known.items() if s in documented}
    for status in set(known) - set(documented):
        # A status no route answers today (431 comes from the server's header limit, before any route).
        assert status == 431 and known[status] == {"headers_too_large"}


@pytest.mark.parametrize(
    ("code", "cls"),
    [("overloaded", Overloaded), ("starting", Starting), ("database_unavailable", ServiceUnavailable),
     ("storage_full", ServiceUnavailable), ("inference_unavailable", ServiceUnavailable)],
)
def test_every_503_is_a_service_unavailable(code: str, cls: type) -> None:
    assert code in PROBLEM_CODES[503]
    assert error_class(503, code) is cls and issubclass(cls, ServiceUnavailable)
