"""Pairing: a desktop opens, phones claim with a short code, both hold scoped bearer tokens."""

from .codes import ALPHABET, normalize_code
from .errors import (
    CodeExpired,
    CodeUsed,
    IllegalTransition,
    InvalidCode,
    InvalidToken,
    MalformedCode,
    MissingToken,
    PairingClosed,
    PairingError,
    PairingFull,
    PairingNotFound,
    PairingUnavailable,
    RevokedToken,
    TooManyAttempts,
    WrongRole,
)
from .service import (
    PAIRING_CLOSED,
    PEER_JOINED,
    PEER_LEFT,
    ClaimedPairing,
    CloseListener,
    Device,
    EventSink,
    IssuedCode,
    OpenedPairing,
    PairingConfig,
    PairingInfo,
    PairingService,
    Role,
)
from .states import PairingEvent, PairingState, transition
from .throttle import Limit, MemoryThrottle, RedisThrottle, Throttle

__all__ = [
    "ALPHABET", "PAIRING_CLOSED", "PEER_JOINED", "PEER_LEFT", "ClaimedPairing", "CloseListener", "CodeExpired",
    "CodeUsed", "Device", "EventSink", "IllegalTransition", "InvalidCode", "InvalidToken", "IssuedCode", "Limit",
    "MalformedCode", "MemoryThrottle", "MissingToken", "OpenedPairing", "PairingClosed", "PairingConfig",
    "PairingError", "PairingEvent", "PairingFull", "PairingInfo", "PairingNotFound", "PairingService",
    "PairingState", "PairingUnavailable", "RedisThrottle", "RevokedToken", "Role", "Throttle", "TooManyAttempts",
    "WrongRole", "normalize_code", "transition",
]
