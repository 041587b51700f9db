"""The billing exception tree.

Every error billing raises is a ``BillingError`` with a stable machine-readable
``code``; the API maps each class to an HTTP status at its edge. Vendor errors
(Stripe, Redis) never leave billing: the adapters translate them into these.
"""

from __future__ import annotations

ECHO_LIMIT = 64  # characters of a client's value an error detail repeats


def echo(value: object, limit: int = ECHO_LIMIT) -> str:
    """A client's value as an error detail may repeat it: cut to ``limit`` characters.

    (``segmentation.errors.echo`` does the same for the other packages; billing imports
    nothing of ours.) Quote it where it is used (``{echo(x)!r}``).
    """
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "…"


class BillingError(Exception):
    code = "billing_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


# --- keys and accounts -------------------------------------------------------------------------


class MissingApiKey(BillingError):
    code = "missing_api_key"


class InvalidApiKey(BillingError):
    code = "invalid_api_key"


class RevokedApiKey(BillingError):
    code = "revoked_api_key"


class ApiKeyNotFound(BillingError):
    code = "api_key_not_found"


class InsufficientScope(BillingError):
    code = "insufficient_scope"

    def __init__(self, detail: str, scope: str) -> None:
        super().__init__(detail)
        self.scope = scope


class AccountNotFound(BillingError):
    code = "account_not_found"


class AccountSuspended(BillingError):
    """A payment failed: every key of the account is refused until an invoice is paid."""

    code = "account_suspended"


class UnknownPlan(BillingError):
    code = "unknown_plan"


class UnknownPack(BillingError):
    code = "unknown_pack"


class InvalidAmount(BillingError):
    code = "invalid_amount"


# --- credits -----------------------------------------------------------------------------------


class InsufficientCredits(BillingError):
    code = "insufficient_credits"

    def __init__(self, detail: str, *, required: int, remaining: int) -> None:
        super().__init__(detail)
        self.required = required  # millicredits
        self.remaining = remaining  # millicredits


# --- idempotency -------------------------------------------------------------------------------


class IdempotencyError(BillingError):
    code = "idempotency_error"


class InvalidIdempotencyKey(IdempotencyError):
    code = "invalid_idempotency_key"


class IdempotencyKeyMismatch(IdempotencyError):
    """The key was first used with a different request: refused, never replayed."""

    code = "idempotency_key_mismatch"


class IdempotencyKeyInUse(IdempotencyError):
    """The first request with this key is still running."""

    code = "idempotency_key_in_use"
    retry_after = 1.0


# --- rate limits -------------------------------------------------------------------------------


class RateLimited(BillingError):
    code = "rate_limited"

    def __init__(self, detail: str, *, retry_after: float, reason: str) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
        self.reason = reason  # "rate" or "concurrency"
        self.decision: object | None = None  # the limiter's Decision, for the response headers


class LimiterUnavailable(BillingError):
    """The limiter's store (Redis) failed; the limiter limits in process meanwhile."""

    code = "limiter_unavailable"


# --- Stripe ------------------------------------------------------------------------------------


class PaymentsError(BillingError):
    """Stripe refused a request; retrying the same request will not help."""

    code = "payments_error"


class PaymentsUnavailable(PaymentsError):
    """Stripe could not be reached or failed on its side; retry later."""

    code = "payments_unavailable"


class PaymentsNotConfigured(BillingError):
    code = "payments_not_configured"


class InvalidWebhook(BillingError):
    """A webhook whose signature does not verify (or whose body is not an event)."""

    code = "invalid_webhook_signature"
