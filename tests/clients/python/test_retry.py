"""The retry policy: backoff schedule, Retry-After, and which failures are retried — pure unit tests,
plus the clients' retry loops over an ``httpx.MockTransport`` (no waiting: sleeps are recorded)."""

from __future__ import annotations

import email.utils
from collections.abc import Callable

import arclip_client._async_client as async_module
import arclip_client._client as sync_module
import httpx
import pytest
from arclip_client import (
    APIConnectionError,
    APITimeoutError,
    Arclip,
    AsyncArclip,
    BadRequest,
    Overloaded,
    RateLimited,
    RetryPolicy,
)
from arclip_client._retry import parse_retry_after, retry_delay

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16
JPEG = b"\xff\xd8\xff\xe0" + b"\0" * 16


def problem(status: int, code: str, retry_after: str | None = None) -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    body = {"type": f"https://arclip.dev/problems/{code}", "title": "t", "status": status, "detail": "d", "code": code}
    return httpx.Response(status, json=body, headers={**headers, "Content-Type": "application/problem+json"})


def ok() -> httpx.Response:
    return httpx.Response(200, content=PNG, headers={"Content-Type": "image/png", "X-Width": "4", "X-Height": "4"})


# ---------------------------------------------------------------------------------------------------
# The schedule
# ---------------------------------------------------------------------------------------------------


def test_backoff_grows_exponentially_and_is_capped() -> None:
    policy = RetryPolicy(initial_delay=0.5, multiplier=2, max_delay=3, jitter=0)
    assert [policy.backoff(n) for n in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_jitter_only_shortens_the_wait_by_at_most_its_fraction() -> None:
    policy = RetryPolicy(initial_delay=1, multiplier=2, max_delay=100, jitter=0.25)
    assert policy.backoff(2, rand=lambda: 0.0) == 4.0
    assert policy.backoff(2, rand=lambda: 1.0) == 3.0
    waits = {policy.backoff(1) for _ in range(200)}
    assert all(1.5 <= w <= 2.0 for w in waits) and len(waits) > 100  # spread, not one value


def test_retry_after_is_honoured_and_never_shortened() -> None:
    policy = RetryPolicy(max_retries=3, jitter=0.2)
    assert policy.delay(0, retry_after=3, rand=lambda: 0.0) == 3.0
    assert policy.delay(0, retry_after=3, rand=lambda: 1.0) == pytest.approx(3.6)
    assert all(3 <= policy.delay(1, retry_after=3) <= 3.6 for _ in range(100))  # type: ignore[operator]
    assert policy.delay(0, retry_after=0) == 0.0


def test_no_retry_past_max_retries_or_past_max_retry_after() -> None:
    policy = RetryPolicy(max_retries=2, max_retry_after=10)
    assert policy.delay(1) is not None
    assert policy.delay(2) is None
    assert policy.delay(0, retry_after=11) is None
    assert RetryPolicy(max_retries=0).delay(0) is None


def test_policy_validation() -> None:
    for bad in (dict(max_retries=-1), dict(jitter=1.5), dict(multiplier=0.5), dict(initial_delay=-1)):
        with pytest.raises(ValueError):
            RetryPolicy(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3", 3.0), ("1.5", 1.5), (" 2 ", 2.0), ("0", 0.0), ("-4", 0.0),
        ("soon", None), ("", None), (None, None), ("nan", None),
    ],
)
def test_parse_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    later = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(later, now=lambda: now) == pytest.approx(30, abs=1)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after(past, now=lambda: now) == 0.0


# ---------------------------------------------------------------------------------------------------
# What is retried
# ---------------------------------------------------------------------------------------------------

POLICY = RetryPolicy(max_retries=3, jitter=0)


def req(method: str = "POST", key: str | None = None) -> httpx.Request:
    headers = {"Idempotency-Key": key} if key else {}
    return httpx.Request(method, "http://testserver/v1/clip", headers=headers)


@pytest.mark.parametrize("status", [429, 503])
def test_429_and_503_are_retried_even_for_post(status: int) -> None:
    assert retry_delay(POLICY, 0, request=req(), response=problem(status, "x", "2")) == 2.0
    assert retry_delay(POLICY, 0, request=req(), response=problem(status, "x")) == 0.5  # no Retry-After: backoff


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 413, 415, 422, 500])
def test_client_errors_and_500_are_not_retried(status: int) -> None:
    assert retry_delay(POLICY, 0, request=req("GET"), response=problem(status, "x")) is None


def test_gateway_errors_are_retried_only_when_idempotent() -> None:
    assert retry_delay(POLICY, 0, request=req(), response=problem(502, "x")) is None
    assert retry_delay(POLICY, 0, request=req(key="k1"), response=problem(502, "x")) is not None
    assert retry_delay(POLICY, 0, request=req("GET"), response=problem(504, "x")) is not None


def test_idempotency_key_in_use_is_retried() -> None:
    assert retry_delay(POLICY, 0, request=req(key="k"), response=problem(409, "idempotency_key_in_use", "1")) == 1.0
    assert retry_delay(POLICY, 0, request=req(key="k"), response=problem(409, "idempotency_key_mismatch")) is None


def test_connection_errors() -> None:
    refused = httpx.ConnectError("refused")
    broken = httpx.ReadError("reset")
    slow = httpx.ReadTimeout("slow")
    assert retry_delay(POLICY, 0, request=req(), error=refused) is not None  # never sent: always safe
    assert retry_delay(POLICY, 0, request=req(), error=broken) is None  # may have been processed
    assert retry_delay(POLICY, 0, request=req(), error=slow) is None
    assert retry_delay(POLICY, 0, request=req(key="k"), error=broken) is not None
    assert retry_delay(POLICY, 0, request=req("GET"), error=slow) is not None
    assert retry_delay(POLICY, 3, request=req("GET"), error=slow) is None  # out of retries


# ---------------------------------------------------------------------------------------------------
# The clients' retry loops (sync and async share the decisions above)
# ---------------------------------------------------------------------------------------------------


class Script:
    """A MockTransport handler answering from a list (a response, or an exception to raise)."""

    def __init__(self, *answers: httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer(request) if callable(answer) else answer


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    recorded: list[float] = []

    async def async_sleep(delay: float) -> None:
        recorded.append(delay)

    monkeypatch.setattr(sync_module, "_sleep", recorded.append)
    monkeypatch.setattr(async_module, "_sleep", async_sleep)
    return recorded


def sync_client(script: Script, **options) -> Arclip:  # type: ignore[no-untyped-def]
    http = httpx.Client(transport=httpx.MockTransport(script))
    return Arclip("arc_test_key", base_url="http://testserver", http_client=http, **options)


def async_client(script: Script, **options) -> AsyncArclip:  # type: ignore[no-untyped-def]
    http = httpx.AsyncClient(transport=httpx.MockTransport(script))
    return AsyncArclip("arc_test_key", base_url="http://testserver", http_client=http, **options)


def test_sync_retries_503_after_retry_after_then_succeeds(sleeps: list[float]) -> None:
    script = Script(problem(503, "overloaded", "2"), problem(429, "rate_limited", "1"), ok())
    result = sync_client(script, retry=RetryPolicy(max_retries=3, jitter=0)).clip(JPEG, size="preview")
    assert result.width == 4 and result.media_type == "image/png"
    assert sleeps == [2.0, 1.0]
    assert len(script.requests) == 3
    for sent in script.requests:  # the whole multipart body again on every attempt
        assert JPEG in sent.content and b'name="size"\r\n\r\npreview' in sent.content


def test_sync_gives_up_after_max_retries_with_the_last_error(sleeps: list[float]) -> None:
    script = Script(*(problem(503, "overloaded", "1") for _ in range(3)))
    with pytest.raises(Overloaded) as raised:
        sync_client(script, max_retries=2).clip(JPEG)
    assert raised.value.retry_after == 1.0 and raised.value.status == 503
    assert len(script.requests) == 3 and len(sleeps) == 2


def test_max_retries_zero_sends_once(sleeps: list[float]) -> None:
    script = Script(problem(429, "rate_limited", "1"))
    with pytest.raises(RateLimited) as raised:
        sync_client(script, max_retries=0).clip(JPEG)
    assert raised.value.retry_after == 1.0
    assert len(script.requests) == 1 and sleeps == []


def test_with_options_changes_retries_and_shares_the_pool(sleeps: list[float]) -> None:
    script = Script(problem(503, "overloaded", "0"), ok())
    client = sync_client(script, max_retries=0)
    assert client.with_options(max_retries=1).clip(JPEG).width == 4
    assert client.max_retries == 0 and client.with_options(max_retries=4).max_retries == 4


def test_too_long_retry_after_is_raised_at_once(sleeps: list[float]) -> None:
    script = Script(problem(429, "rate_limited", "3600"))
    with pytest.raises(RateLimited) as raised:
        sync_client(script, max_retries=5).clip(JPEG)
    assert raised.value.retry_after == 3600 and sleeps == []


def test_errors_that_are_not_retryable_are_raised_at_once(sleeps: list[float]) -> None:
    script = Script(problem(400, "unreadable_image"))
    with pytest.raises(BadRequest):
        sync_client(script, max_retries=5).clip(JPEG)
    assert len(script.requests) == 1


def test_connect_errors_are_retried_then_raised(sleeps: list[float]) -> None:
    script = Script(httpx.ConnectError("refused"), httpx.ConnectError("refused"), httpx.ConnectError("refused"))
    with pytest.raises(APIConnectionError):
        sync_client(script, retry=RetryPolicy(max_retries=2, jitter=0)).clip(JPEG)
    assert len(script.requests) == 3 and sleeps == [0.5, 1.0]


def test_a_broken_post_is_retried_only_with_an_idempotency_key(sleeps: list[float]) -> None:
    script = Script(httpx.ReadTimeout("slow"))
    with pytest.raises(APITimeoutError):
        sync_client(script).clip(JPEG)
    assert len(script.requests) == 1

    script = Script(httpx.ReadError("reset"), ok())
    assert sync_client(script).clip(JPEG, idempotency_key="order-42").width == 4
    assert [r.headers["Idempotency-Key"] for r in script.requests] == ["order-42", "order-42"]


def test_get_account_is_retried_on_a_broken_connection(sleeps: list[float]) -> None:
    script = Script(httpx.RemoteProtocolError("eof"), httpx.Response(200, json={"plan": "free", "credits": 5}))
    account = sync_client(script).account()
    assert account.plan == "free" and account.credits_remaining == 5
    assert len(script.requests) == 2


async def test_async_retry_loop_matches_the_sync_one(sleeps: list[float]) -> None:
    script = Script(problem(503, "overloaded", "2"), httpx.ConnectError("refused"), ok())
    async with async_client(script, retry=RetryPolicy(max_retries=3, jitter=0)) as client:
        result = await client.clip(JPEG)
    assert result.width == 4 and sleeps == [2.0, 1.0]

    sleeps.clear()
    script = Script(*(problem(429, "rate_limited", "1") for _ in range(2)))
    async with async_client(script, max_retries=1) as client:
        with pytest.raises(RateLimited):
            await client.clip(JPEG)
    assert len(script.requests) == 2 and sleeps == [pytest.approx(1.0, abs=0.25)]

    script = Script(httpx.ReadTimeout("slow"))
    async with async_client(script) as client:
        with pytest.raises(APITimeoutError):
            await client.clip(JPEG)
