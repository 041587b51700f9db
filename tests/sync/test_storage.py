"""The object store Protocol, against every backend: files, memory, and S3 on a real
S3-compatible server (moto's, on a loopback port)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sync.storage import (
    FileStore,
    InvalidKey,
    MemoryStore,
    ObjectNotFound,
    ObjectStore,
    StorageConfigError,
    StorageUnavailable,
    open_store,
)

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")


# ---------------------------------------------------------------------------
# A real S3-compatible server on loopback
# ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, s3_endpoint: str) -> str:
    """Credentials for moto and the endpoint the way production sets it: ``AWS_ENDPOINT_URL``."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    return s3_endpoint


_buckets = iter(range(10_000))


@pytest.fixture
def bucket(aws_env: str) -> str:
    name = f"arclip-test-{next(_buckets)}"
    boto3.client("s3", endpoint_url=aws_env).create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["memory", "files", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    if request.param == "memory":
        backend: ObjectStore = MemoryStore()
    elif request.param == "files":
        backend = FileStore(tmp_path / "objects")
    else:
        bucket = request.getfixturevalue("bucket")
        backend = open_store(f"s3://{bucket}/some/prefix", tmp_path)
    try:
        yield backend
    finally:
        await backend.close()


# ---------------------------------------------------------------------------
# The Protocol, on every backend
# ---------------------------------------------------------------------------


async def test_put_get_roundtrip_and_overwrite(store: ObjectStore) -> None:
    assert isinstance(store, ObjectStore)
    await store.put("assets/p_1/a_1.png", b"\x89PNG first", "image/png")
    assert await store.get("assets/p_1/a_1.png") == b"\x89PNG first"
    await store.put("assets/p_1/a_1.png", b"second")
    assert await store.get("assets/p_1/a_1.png") == b"second"
    await store.put("empty", b"")
    assert await store.get("empty") == b""


async def test_missing_object(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound):
        await store.get("assets/nope.png")
    assert not await store.exists("assets/nope.png")
    await store.delete("assets/nope.png")  # deleting nothing is fine


async def test_exists_and_delete(store: ObjectStore) -> None:
    await store.put("screens/p/v1.png", b"x")
    assert await store.exists("screens/p/v1.png")
    await store.delete("screens/p/v1.png")
    assert not await store.exists("screens/p/v1.png")
    with pytest.raises(ObjectNotFound):
        await store.get("screens/p/v1.png")


async def test_delete_prefix_is_a_folder_not_a_string_prefix(store: ObjectStore) -> None:
    for key in ("assets/p_1/a.png", "assets/p_1/b.png", "assets/p_1/deep/c.png", "assets/p_10/a.png", "assets/p_1x"):
        await store.put(key, key.encode())
    assert await store.delete_prefix("assets/p_1/") == 3
    assert not await store.exists("assets/p_1/a.png")
    assert not await store.exists("assets/p_1/deep/c.png")
    assert await store.get("assets/p_10/a.png") == b"assets/p_10/a.png"
    assert await store.exists("assets/p_1x")
    assert await store.delete_prefix("assets/p_1/") == 0
    assert await store.delete_prefix("never/") == 0


@pytest.mark.parametrize(
    "key", ["", "/abs", "../escape", "a/../../b", "a//b", "a/", ".hidden", "a/.tmp", "sp ace", "x" * 600, "a\\b"]
)
async def test_unsafe_keys_are_refused(store: ObjectStore, key: str) -> None:
    with pytest.raises(InvalidKey):
        await store.put(key, b"x")
    with pytest.raises(InvalidKey):
        await store.get(key)


async def test_delete_prefix_needs_a_folder(store: ObjectStore) -> None:
    await store.put("assets/p_1/a.png", b"x")
    for prefix in ("assets/p_1", "", "/", "../"):
        with pytest.raises(InvalidKey):
            await store.delete_prefix(prefix)
    assert await store.exists("assets/p_1/a.png")


async def test_concurrent_writers_never_leave_a_torn_object(store: ObjectStore) -> None:
    blobs = [bytes([i]) * 200_000 for i in range(8)]
    await asyncio.gather(*(store.put("race/obj", blob) for blob in blobs))
    assert await store.get("race/obj") in blobs


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------


async def test_file_store_layout_and_no_temporary_leftovers(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "root")
    await store.put("assets/p_1/a.png", b"data")
    assert (tmp_path / "root" / "assets" / "p_1" / "a.png").read_bytes() == b"data"
    assert [p.name for p in (tmp_path / "root" / "assets" / "p_1").iterdir()] == ["a.png"]


async def test_file_store_errors_are_ours(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "blocker").write_bytes(b"a file where a folder should be")
    store = FileStore(tmp_path / "root")
    with pytest.raises(StorageUnavailable):
        await store.put("blocker/inside.png", b"x")
    with pytest.raises(ObjectNotFound):
        await store.get("blocker/inside.png")


# ---------------------------------------------------------------------------
# S3 specifics
# ---------------------------------------------------------------------------


async def test_s3_url_prefix_and_endpoint_from_environment(bucket: str, aws_env: str, tmp_path: Path) -> None:
    store = open_store(f"s3://{bucket}/tenant/one/", tmp_path)  # endpoint: AWS_ENDPOINT_URL
    await store.put("assets/p/a.png", b"png bytes", "image/png")
    raw = boto3.client("s3", endpoint_url=aws_env)
    head = raw.head_object(Bucket=bucket, Key="tenant/one/assets/p/a.png")
    assert head["ContentType"] == "image/png"
    assert head["ContentLength"] == len(b"png bytes")
    await store.close()


async def test_s3_delete_prefix_pages_and_batches(bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sync.storage import s3

    monkeypatch.setattr(s3, "_DELETE_BATCH", 3)  # so a handful of objects spans several DeleteObjects
    store = open_store(f"s3://{bucket}", tmp_path)
    await asyncio.gather(*(store.put(f"many/k{i:02d}", b"x") for i in range(10)))
    await store.put("many-not/k", b"x")
    assert await store.delete_prefix("many/") == 10
    assert await store.exists("many-not/k")
    await store.close()


async def test_s3_missing_bucket_is_unavailable_not_a_vendor_error(aws_env: str, tmp_path: Path) -> None:
    store = open_store("s3://no-such-bucket-here/x", tmp_path)
    with pytest.raises(StorageUnavailable) as caught:
        await store.put("a", b"x")
    assert "NoSuchBucket" in caught.value.detail
    await store.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_s3_unreachable_endpoint_is_unavailable(aws_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sync.storage.s3 import S3Store

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    store = S3Store.from_url("s3://bucket", max_attempts=1)
    with pytest.raises(StorageUnavailable):
        await store.get("a")
    await store.close()


# ---------------------------------------------------------------------------
# URLs
# ---------------------------------------------------------------------------


def test_open_store_urls(tmp_path: Path) -> None:
    assert isinstance(open_store(None, tmp_path), FileStore)
    assert open_store(None, tmp_path).root == tmp_path.resolve()  # type: ignore[union-attr]
    assert open_store("file://", tmp_path).root == tmp_path.resolve()  # type: ignore[union-attr]
    assert open_store(f"file://{tmp_path}/objs", Path("/unused")).root == (tmp_path / "objs").resolve()  # type: ignore[union-attr]
    assert isinstance(open_store("memory://", tmp_path), MemoryStore)
    for bad in ("ftp://x/y", "s3://", "gs://bucket"):
        with pytest.raises(StorageConfigError):
            open_store(bad, tmp_path)
