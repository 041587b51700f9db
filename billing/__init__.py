"""API keys, plans, credits, rate limits, usage ledger, Stripe."""

from .db import Base
from .errors import ApiKeyNotFound, BillingError, InvalidApiKey, MissingApiKey, RevokedApiKey
from .keys import ApiKeyService, KeyInfo

__all__ = ["ApiKeyNotFound", "ApiKeyService", "Base", "BillingError", "InvalidApiKey", "KeyInfo", "MissingApiKey", "RevokedApiKey"]
