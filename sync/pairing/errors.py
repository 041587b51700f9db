"""The pairing exception tree. The API maps it to problem+json (and websocket close codes)."""

from __future__ import annotations


class PairingError(Exception):
    code = "pairing_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


# -- who is calling ---------------------------------------------------------------------------------
class MissingToken(PairingError):
    code = "missing_token"


class InvalidToken(PairingError):
    code = "invalid_token"


class RevokedToken(PairingError):
    """The device was removed from a pairing that is still open."""

    code = "revoked_token"


class WrongRole(PairingError):
    code = "wrong_role"


# -- the pairing ------------------------------------------------------------------------------------
class PairingNotFound(PairingError):
    code = "pairing_not_found"


class PairingClosed(PairingError):
    """The pairing was unpaired or has expired; its tokens no longer work."""

    code = "pairing_closed"

    def __init__(self, detail: str, state: str = "closed") -> None:
        super().__init__(detail)
        self.state = state


class PairingFull(PairingError):
    code = "pairing_full"


class IllegalTransition(PairingError):
    code = "illegal_transition"

    def __init__(self, state: str, event: str) -> None:
        super().__init__(f"A pairing that is {state} cannot {event}.")
        self.state = state
        self.event = event


# -- codes ------------------------------------------------------------------------------------------
class MalformedCode(PairingError):
    code = "malformed_code"


class InvalidCode(PairingError):
    code = "invalid_code"


class CodeExpired(PairingError):
    code = "code_expired"


class CodeUsed(PairingError):
    code = "code_used"


class TooManyAttempts(PairingError):
    code = "too_many_attempts"

    def __init__(self, detail: str, retry_after: float) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class PairingUnavailable(PairingError):
    """A backing service (the shared throttle's Redis) cannot be reached."""

    code = "pairing_unavailable"
