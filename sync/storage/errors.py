"""The storage exception tree.

Vendor errors (OSError, botocore) are translated into these by the adapter that
calls the vendor, so callers only ever see ``StorageError``.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base of everything the storage package raises on purpose."""

    code = "storage_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidKey(StorageError):
    """A key that could escape its namespace or that the backends cannot all hold."""

    code = "invalid_storage_key"


class ObjectNotFound(StorageError):
    code = "object_not_found"


class StorageUnavailable(StorageError):
    """The backend failed or could not be reached; retrying later may help."""

    code = "storage_unavailable"


class StorageFull(StorageUnavailable):
    """The backend has no room to write (a full disk or quota); retrying later may help."""

    code = "storage_full"


class StorageConfigError(StorageError):
    """A storage URL or set-up that cannot work (found at start-up)."""

    code = "storage_config_error"
