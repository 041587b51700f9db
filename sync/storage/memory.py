"""An in-memory store, for tests."""

from __future__ import annotations

from .base import check_key, check_prefix
from .errors import ObjectNotFound


class MemoryStore:
    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, str]] = {}

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.objects[check_key(key)] = (bytes(data), content_type)

    async def get(self, key: str) -> bytes:
        try:
            return self.objects[check_key(key)][0]
        except KeyError:
            raise ObjectNotFound(f"No object at {key!r}.") from None

    async def exists(self, key: str) -> bool:
        return check_key(key) in self.objects

    async def delete(self, key: str) -> None:
        self.objects.pop(check_key(key), None)

    async def delete_prefix(self, prefix: str) -> int:
        doomed = [k for k in self.objects if k.startswith(check_prefix(prefix))]
        for key in doomed:
            del self.objects[key]
        return len(doomed)

    async def free_bytes(self) -> int | None:
        return None  # memory has no limit of its own

    async def close(self) -> None:
        pass
