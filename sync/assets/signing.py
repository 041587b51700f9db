"""Signed, expiring asset URLs: HMAC-SHA256 over the asset id and the expiry time.

The key comes from ``ARCLIP_SIGNING_KEY``, or else is generated once and kept in
the data dir (``signing.key``, mode 0600) so URLs survive a restart. Replicas that
share storage must share the key: set ``ARCLIP_SIGNING_KEY`` for them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import BadSignature, ExpiredSignature

KEY_FILE = "signing.key"
_MIN_KEY_BYTES = 16
# One spelling per URL: unix seconds in plain ASCII digits, no sign, space, underscore,
# leading zero or other digits ``int()`` would take, and a bounded length.
_EXPIRES = re.compile(r"[1-9][0-9]{0,11}")
_SIG = re.compile(r"[A-Za-z0-9_-]{43}")  # unpadded base64url of 32 bytes


@dataclass(frozen=True)
class Signature:
    expires: int  # unix seconds
    sig: str

    def query(self) -> str:
        return f"expires={self.expires}&sig={self.sig}"


class UrlSigner:
    def __init__(self, key: bytes, clock: Callable[[], float] = time.time) -> None:
        if len(key) < _MIN_KEY_BYTES:
            raise ValueError(f"The signing key must be at least {_MIN_KEY_BYTES} bytes.")
        self._key = key
        self._clock = clock

    def _mac(self, asset_id: str, expires: int) -> str:
        message = f"arclip-asset\n{asset_id}\n{expires}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def sign(self, asset_id: str, ttl: float, not_after: float | None = None) -> Signature:
        """A signature valid for ``ttl`` seconds, and never past ``not_after`` (unix seconds)."""
        expires = int(self._clock() + ttl)
        if not_after is not None:
            expires = min(expires, int(not_after))
        return Signature(expires, self._mac(asset_id, expires))

    def verify(self, asset_id: str, expires: str | int | None, sig: str | None) -> None:
        """Raise ``BadSignature`` or ``ExpiredSignature`` unless the pair is valid now."""
        when = _expires(expires)
        if when is None or sig is None or not _SIG.fullmatch(sig):
            raise BadSignature("The URL's signature is missing or malformed.")
        if not hmac.compare_digest(self._mac(asset_id, when).encode(), sig.encode()):
            raise BadSignature("The URL's signature is not valid.")
        if when < self._clock():
            raise ExpiredSignature("The signed URL has expired; ask for a fresh one.")


def _expires(value: str | int | None) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value > 0 else None
    if isinstance(value, str) and _EXPIRES.fullmatch(value):
        return int(value)
    return None


def load_signing_key(configured: str | None, data_dir: Path) -> bytes:
    """The configured key, or the data dir's, created on first use."""
    if configured:
        key = configured.encode()
        if len(key) < _MIN_KEY_BYTES:
            raise ValueError(f"ARCLIP_SIGNING_KEY must be at least {_MIN_KEY_BYTES} characters.")
        return key
    path = data_dir / KEY_FILE
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    # Written whole to a private temporary file, then linked into place: a concurrent
    # starter either wins the link or reads the complete key of the one that did.
    fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=".signing-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(base64.b64encode(key))
        os.chmod(tmp, 0o600)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return _read_key(path)
    finally:
        os.unlink(tmp)
    return key


def _read_key(path: Path) -> bytes:
    key = base64.b64decode(path.read_bytes().strip(), validate=True)
    if len(key) < _MIN_KEY_BYTES:
        raise ValueError(f"{path} holds a signing key that is too short; delete it to make a new one.")
    return key
