"""The billing exception tree."""

from __future__ import annotations


class BillingError(Exception):
    code = "billing_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class MissingApiKey(BillingError):
    code = "missing_api_key"


class InvalidApiKey(BillingError):
    code = "invalid_api_key"


class RevokedApiKey(BillingError):
    code = "revoked_api_key"


class ApiKeyNotFound(BillingError):
    code = "api_key_not_found"
