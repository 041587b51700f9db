"""Objects in an S3 bucket (or any S3-compatible server), through boto3.

``s3://bucket/prefix`` names the bucket and a key prefix; the endpoint comes
from ``AWS_ENDPOINT_URL`` (read by boto3 itself) or ``endpoint_url``, and
credentials from boto3's usual chain. boto3 blocks, so each call runs on a
worker thread; the client is thread-safe and shared.

botocore's errors stop here: callers see ``ObjectNotFound`` or ``StorageUnavailable``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .base import check_key, check_prefix
from .errors import ObjectNotFound, StorageConfigError, StorageFull, StorageUnavailable

T = TypeVar("T")

_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}
# What S3-compatible servers answer when the disk or a quota is full (MinIO, Ceph RGW, SeaweedFS).
_FULL_CODES = frozenset({"XMinioStorageFull", "QuotaExceeded", "InsufficientStorage"})
_DELETE_BATCH = 1000  # the S3 limit for DeleteObjects


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ("bucket", "some/prefix")."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise StorageConfigError(f"An S3 storage URL looks like s3://bucket/prefix; got {url!r}.")
    prefix = parts.path.strip("/")
    if prefix:
        check_key(prefix)
    return parts.netloc, prefix


class S3Store:
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        max_attempts: int = 4,
        client: Any = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client = client if client is not None else _make_client(endpoint_url, region_name, max_attempts)
        self._errors = _vendor_errors()

    @classmethod
    def from_url(cls, url: str, *, endpoint_url: str | None = None, max_attempts: int = 4) -> S3Store:
        bucket, prefix = parse_s3_url(url)
        return cls(bucket, prefix, endpoint_url=endpoint_url, max_attempts=max_attempts)

    def _full(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    async def _call(self, what: str, key: str, fn: Callable[..., T], /, **kwargs: Any) -> T:
        """Run one blocking boto3 call on a thread, translating its errors."""
        client_error, core_error = self._errors
        try:
            return await asyncio.to_thread(fn, **kwargs)
        except client_error as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code in _MISSING_CODES:
                raise ObjectNotFound(f"No object at {key!r}.") from None
            kind = StorageFull if code in _FULL_CODES else StorageUnavailable
            raise kind(f"S3 {what} failed: {code or 'error'} {error.get('Message', '')}".strip()) from exc
        except core_error as exc:
            raise StorageUnavailable(f"S3 {what} failed: {exc}") from exc

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        await self._call(
            "put", key, self._client.put_object, Bucket=self.bucket, Key=self._full(key), Body=bytes(data),
            ContentType=content_type,
        )

    async def get(self, key: str) -> bytes:
        full = self._full(key)

        def read() -> bytes:
            response = self._client.get_object(Bucket=self.bucket, Key=full)
            with response["Body"] as body:
                return body.read()

        return await self._call("get", key, read)

    async def exists(self, key: str) -> bool:
        try:
            await self._call("head", key, self._client.head_object, Bucket=self.bucket, Key=self._full(key))
        except ObjectNotFound:
            return False
        return True

    async def delete(self, key: str) -> None:
        await self._call("delete", key, self._client.delete_object, Bucket=self.bucket, Key=self._full(key))

    async def delete_prefix(self, prefix: str) -> int:
        full = self._full(check_prefix(prefix)[:-1]) + "/"
        return await self._call("delete_prefix", prefix, self._delete_prefix, prefix=full)

    def _delete_prefix(self, prefix: str) -> int:
        deleted = 0
        batch: list[dict[str, str]] = []
        paginator = self._client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                batch.append({"Key": item["Key"]})
                if len(batch) == _DELETE_BATCH:
                    deleted += self._delete_batch(batch)
                    batch = []
        if batch:
            deleted += self._delete_batch(batch)
        return deleted

    def _delete_batch(self, batch: list[dict[str, str]]) -> int:
        response = self._client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        errors = response.get("Errors", [])
        if errors:
            first = errors[0]
            raise StorageUnavailable(
                f"S3 could not delete {len(errors)} object(s), e.g. {first.get('Key')!r}: {first.get('Code')}"
            )
        return len(batch)

    async def free_bytes(self) -> int | None:
        return None  # buckets have no free-space figure; a failed write says "full"

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)


def _vendor_errors() -> tuple[type[Exception], type[Exception]]:
    from botocore.exceptions import BotoCoreError, ClientError

    return ClientError, BotoCoreError


def _make_client(endpoint_url: str | None, region_name: str | None, max_attempts: int) -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise StorageConfigError("ARCLIP_STORAGE_URL=s3://… needs boto3: pip install boto3") from exc
    config = Config(
        connect_timeout=5,
        read_timeout=30,
        retries={"max_attempts": max_attempts, "mode": "standard"},
        max_pool_connections=32,
    )
    session = boto3.session.Session()
    # endpoint_url=None lets boto3 read AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 itself.
    return session.client("s3", endpoint_url=endpoint_url, region_name=region_name, config=config)
