"""Object storage behind one Protocol: local files (default), S3, or memory (tests)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from .base import ObjectStore, check_key, check_prefix
from .errors import (
    InvalidKey,
    ObjectNotFound,
    StorageConfigError,
    StorageError,
    StorageFull,
    StorageUnavailable,
)
from .files import FileStore
from .memory import MemoryStore

__all__ = [
    "FileStore", "InvalidKey", "MemoryStore", "ObjectNotFound", "ObjectStore", "StorageConfigError",
    "StorageError", "StorageFull", "StorageUnavailable", "check_key", "check_prefix", "open_store",
]


def open_store(url: str | None, default_root: Path) -> ObjectStore:
    """The store a storage URL names: ``file:///path``, ``s3://bucket/prefix``, ``memory://``.

    Unset or a bare ``file://`` means files under ``default_root``.
    """
    if not url:
        return FileStore(default_root)
    parts = urlsplit(url)
    if parts.scheme == "file":
        path = unquote(parts.path)
        if parts.netloc and parts.netloc != "localhost":
            path = parts.netloc + path  # file://relative/dir
        return FileStore(Path(path) if path else default_root)
    if parts.scheme == "s3":
        from .s3 import S3Store

        return S3Store.from_url(url)
    if parts.scheme == "memory":
        return MemoryStore()
    raise StorageConfigError(f"ARCLIP_STORAGE_URL must be file:///path or s3://bucket/prefix; got {url!r}.")
