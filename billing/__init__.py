"""API keys, plans, credits, rate limits, usage ledger, Stripe."""

from .accounts import AccountInfo, AccountService, Balance, Usage
from .checkout import CheckoutService
from .db import Base
from .errors import (
    AccountNotFound,
    AccountSuspended,
    ApiKeyNotFound,
    BillingError,
    IdempotencyKeyInUse,
    IdempotencyKeyMismatch,
    InsufficientCredits,
    InsufficientScope,
    InvalidApiKey,
    InvalidIdempotencyKey,
    InvalidWebhook,
    MissingApiKey,
    PaymentsError,
    PaymentsNotConfigured,
    PaymentsUnavailable,
    RateLimited,
    RevokedApiKey,
    UnknownPack,
    UnknownPlan,
)
from .idempotency import IdempotencyStore, StoredResponse
from .keys import SCOPES, ApiKeyService, KeyInfo, key_mode, looks_valid
from .ledger import Charge, Ledger, Reservation
from .metering import Metering, PaidCall
from .outbox import UsageReporter
from .payments import MemoryGateway, PaymentGateway, StripeGateway
from .plans import MILLI, PRICES, Catalogue, CreditPack, Plan, format_credits, to_milli
from .ratelimit import (
    Decision,
    Limit,
    MemoryLimiterStore,
    RateLimiter,
    RedisLimiterStore,
)
from .service import Billing, BillingConfig
from .webhooks import WebhookHandler

__all__ = [
    "MILLI",
    "PRICES",
    "SCOPES",
    "AccountInfo",
    "AccountNotFound",
    "AccountService",
    "AccountSuspended",
    "ApiKeyNotFound",
    "ApiKeyService",
    "Balance",
    "Base",
    "Billing",
    "BillingConfig",
    "BillingError",
    "Catalogue",
    "Charge",
    "CheckoutService",
    "CreditPack",
    "Decision",
    "IdempotencyKeyInUse",
    "IdempotencyKeyMismatch",
    "IdempotencyStore",
    "InsufficientCredits",
    "InsufficientScope",
    "InvalidApiKey",
    "InvalidIdempotencyKey",
    "InvalidWebhook",
    "KeyInfo",
    "Ledger",
    "Limit",
    "MemoryGateway",
    "MemoryLimiterStore",
    "Metering",
    "MissingApiKey",
    "PaidCall",
    "PaymentGateway",
    "PaymentsError",
    "PaymentsNotConfigured",
    "PaymentsUnavailable",
    "Plan",
    "RateLimited",
    "RateLimiter",
    "RedisLimiterStore",
    "Reservation",
    "RevokedApiKey",
    "StoredResponse",
    "StripeGateway",
    "UnknownPack",
    "UnknownPlan",
    "Usage",
    "UsageReporter",
    "WebhookHandler",
    "format_credits",
    "key_mode",
    "looks_valid",
    "to_milli",
]
