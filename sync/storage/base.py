"""The object store seam: a flat namespace of keys holding bytes.

Keys are ``/``-separated relative paths of safe characters (``assets/p_1/a_2.png``).
``delete_prefix`` takes a folder-like prefix ending in ``/`` so that deleting
``assets/p_1/`` can never touch ``assets/p_10/``.
"""

from __future__ import annotations

import re
from typing import Protocol, runtime_checkable

from .errors import InvalidKey

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_KEY_LENGTH = 512


@runtime_checkable
class ObjectStore(Protocol):
    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Store ``data`` under ``key``, replacing any object there; readers never see half of it."""

    async def get(self, key: str) -> bytes:
        """The object's bytes; ``ObjectNotFound`` when there is none."""

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> None:
        """Remove the object; deleting what is not there is not an error."""

    async def delete_prefix(self, prefix: str) -> int:
        """Remove every object under the folder ``prefix`` (ending in ``/``); returns how many."""

    async def free_bytes(self) -> int | None:
        """Room left to write, where the backend has such a limit (a disk); None where it has none we can see."""

    async def close(self) -> None: ...


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative path, else raise ``InvalidKey``."""
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidKey(f"Storage keys are 1..{MAX_KEY_LENGTH} characters; got {key!r}.")
    if not all(_SEGMENT.match(part) for part in key.split("/")):
        raise InvalidKey(f"Storage key {key!r} has an empty, hidden or unsafe path segment.")
    return key


def check_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or not prefix.endswith("/"):
        raise InvalidKey(f"A prefix to delete must end in '/'; got {prefix!r}.")
    check_key(prefix[:-1])
    return prefix
