"""Claim codes and device tokens: random, shown once, stored as sha256.

Codes use Crockford's base32 alphabet (digits and upper-case letters without
I, L, O, U), so nothing on a screen can be misread; typing is forgiving:
case, spaces and dashes are ignored, and I/L read as 1, O as 0.
"""

from __future__ import annotations

import hashlib
import secrets

from .errors import MalformedCode

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
MIN_CODE_LENGTH = 6
_READ_AS = str.maketrans({"I": "1", "L": "1", "O": "0"})
_IGNORED = str.maketrans("", "", " -_.")

DESKTOP_TOKEN_PREFIX = "arcd_"
PHONE_TOKEN_PREFIX = "arcp_"


def new_code(length: int) -> str:
    if length < MIN_CODE_LENGTH:
        raise ValueError(f"codes need at least {MIN_CODE_LENGTH} characters")
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def normalize_code(typed: str, length: int) -> str:
    """The canonical code for what a person typed; ``MalformedCode`` if it cannot be one."""
    code = typed.upper().translate(_IGNORED).translate(_READ_AS)
    if len(code) != length or any(c not in ALPHABET for c in code):
        raise MalformedCode(f"A pairing code is {length} characters of 0-9 and A-Z (no I, L, O or U).")
    return code


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token(role: str) -> str:
    prefix = DESKTOP_TOKEN_PREFIX if role == "desktop" else PHONE_TOKEN_PREFIX
    return prefix + secrets.token_urlsafe(32)


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(8)
