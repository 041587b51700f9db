"""Backing services failing under a live server: a locked database, a full disk, Redis and S3 stopped.

What a user must see in each case: ``503`` with a stable ``code`` and ``Retry-After`` (never a 500,
never a hang), the keep-alive connection kept, nothing charged, nothing accepted lost, and service
back by itself once the fault clears, without restarting the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import http.client
import json
import os
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LiveServer, disk_model, encode_image, jpeg, make_settings, photo, sqlite_locked

JPEG = jpeg(160, 120)
SCREEN = encode_image(photo(320, 200, seed=3), "PNG")
VIEW = jpeg(320, 200, seed=3)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def code(self) -> str | None:
        if self.headers.get("content-type", "").startswith("application/problem+json"):
            return self.json().get("code")
        return None


class KeepAlive:
    """One HTTP/1.1 connection, used for every request: it must survive error answers."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.connection.connect()
        self.socket = self.connection.sock

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> Reply:
        self.connection.request(method, path, body=body, headers=headers or {})
        response = self.connection.getresponse()
        reply = Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        assert not response.will_close, f"{method} {path} closed the keep-alive connection ({reply.status})"
        assert self.connection.sock is self.socket, "the connection was replaced"
        return reply

    def multipart(self, path: str, fields: dict[str, bytes], headers: dict[str, str]) -> Reply:
        boundary = uuid.uuid4().hex
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n".encode() + data + b"\r\n"
            for name, data in fields.items()
        ]
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return self.request(
            "POST", path, body, {**headers, "Content-Type": f"multipart/form-data; boundary={boundary}"}
        )

    def close(self) -> None:
        self.connection.close()


@dataclass
class Product:
    """A live server with a key, an active pairing and one capture in it."""

    server: LiveServer
    http: KeepAlive
    key: str
    pairing_id: str
    desktop: str
    phone: str
    first_asset: str
    accepted: list[str]

    def clip(self) -> Reply:
        return self.http.multipart("/v1/clip", {"image_file": JPEG}, {"X-Api-Key": self.key})

    def capture(self) -> Reply:
        reply = self.http.multipart("/v1/captures", {"image_file": JPEG}, {"Authorization": f"Bearer {self.phone}"})
        if reply.status == 201:
            self.accepted.append(reply.json()["asset_id"])
        return reply

    def account(self) -> Reply:
        return self.http.request("GET", "/v1/account", headers={"X-Api-Key": self.key})

    def balance(self) -> float:
        reply = self.account()
        assert reply.status == 200, reply.body
        return reply.json()["balance"]["remaining"]

    def asset(self, asset_id: str) -> Reply:
        return self.http.request("GET", f"/v1/assets/{asset_id}", headers={"Authorization": f"Bearer {self.phone}"})

    def open_pairing(self) -> Reply:
        return self.http.request("POST", "/v1/pairings", b"", {"Content-Length": "0"})

    def screen(self) -> Reply:
        return self.http.request(
            "PUT", f"/v1/pairings/{self.pairing_id}/screen", SCREEN,
            {"Authorization": f"Bearer {self.desktop}", "Content-Type": "image/png"},
        )

    def paste(self) -> Reply:
        return self.http.multipart(
            f"/v1/captures/{self.first_asset}/paste", {"view": VIEW}, {"Authorization": f"Bearer {self.phone}"}
        )

    def pairing(self) -> Reply:
        return self.http.request("GET", f"/v1/pairings/{self.pairing_id}", headers={"Authorization": f"Bearer {self.desktop}"})

    def ready(self) -> Reply:
        return self.http.request("GET", "/readyz")


@contextlib.contextmanager
def product(data_dir: Path, **settings: Any) -> Iterator[Product]:
    from api.offline import with_keys

    config = make_settings(data_dir, database_busy_timeout_s=0.3, **settings)

    async def create_key() -> str:
        async with with_keys(config) as keys:
            return (await keys.create("faults", credits=20_000))[1]

    key = asyncio.run(create_key())
    with LiveServer(config, disk_model()) as server:
        client = KeepAlive(server.port)
        try:
            opened = client.request("POST", "/v1/pairings", b"", {"Content-Length": "0"}).json()
            claimed = client.request(
                "POST", "/v1/pairings/claim", json.dumps({"code": opened["code"]}).encode(), {"Content-Type": "application/json"}
            ).json()
            running = Product(server, client, key, opened["pairing_id"], opened["desktop_token"], claimed["phone_token"], "", [])
            first = running.capture()
            assert first.status == 201, first.body
            running.first_asset = first.json()["asset_id"]
            yield running
        finally:
            client.close()


def assert_fault(reply: Reply, *codes: str) -> None:
    """503 problem+json, one of ``codes``, with a Retry-After a client can act on."""
    assert reply.status == 503, (reply.status, reply.body[:300])
    assert reply.headers["content-type"].startswith("application/problem+json")
    assert reply.code in codes, reply.body[:300]
    assert int(reply.headers["retry-after"]) >= 1
    assert reply.headers.get("x-request-id")


def assert_recovered(running: Product, balance: float) -> None:
    """Service is back without a restart; nothing was charged during the fault; every accepted capture reads."""
    ready = running.ready()
    assert ready.status == 200, ready.body[:500]
    clip = running.clip()
    assert clip.status == 200, clip.body[:300]
    assert running.balance() == balance - 1, "nothing charged during the fault, exactly one credit after it"
    capture = running.capture()
    assert capture.status == 201, capture.body[:300]
    for asset_id in running.accepted:
        assert running.asset(asset_id).status == 200, f"accepted capture {asset_id} was lost"


# ---------------------------------------------------------------------------
# The database locked by another writer
# ---------------------------------------------------------------------------


def test_locked_database_is_a_503_on_every_route_family_and_service_resumes(tmp_path: Path) -> None:
    with product(tmp_path / "data") as running:
        balance = running.balance()
        with sqlite_locked(tmp_path / "data" / "arclip.db"):
            for name, call in [
                ("clip", running.clip),
                ("captures", running.capture),
                ("open pairing", running.open_pairing),
            ]:
                assert_fault(call(), "database_unavailable")
            for name, call in [
                ("account", running.account), ("pairing", running.pairing),
                ("screen", running.screen), ("paste", running.paste),
            ]:
                # Reads may still be served beside the lock (WAL), a paste may not find the screen;
                # whatever the answer, never a 500, and a fault is a fault.
                reply = call()
                assert reply.status < 500 or (assert_fault(reply, "database_unavailable") is None), name
            ready = running.ready()
            assert ready.status == 503
            assert ready.json()["database"]["status"] == "error"
            assert ready.json()["storage"]["status"] == "ok"
        assert_recovered(running, balance)


# ---------------------------------------------------------------------------
# The disk full
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def small_disk(path: Path, size_mb: int) -> Iterator[bool]:
    """A tmpfs of ``size_mb`` at ``path`` where this machine lets us mount one (root); else a plain folder."""
    path.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)], capture_output=True
    ).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path) -> Path:
    """Write until the disk says ENOSPC; the returned file frees the space when deleted."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for size in (1 << 20, 4096, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)
    return filler


def test_full_disk_is_a_503_and_readyz_says_not_ready(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = tmp_path / "disk" / "data"
    with small_disk(tmp_path / "disk", 24) as mounted:
        if not mounted:
            # No tmpfs (not root): the same ENOSPC, injected where the storage writes its files.
            real_replace = os.replace
            full = {"now": False}

            def replace(src: Any, dst: Any) -> None:
                if full["now"]:
                    raise OSError(errno.ENOSPC, "No space left on device")
                real_replace(src, dst)

            monkeypatch.setattr(os, "replace", replace)
        with product(data_dir, min_free_bytes=1024 * 1024) as running:
            balance = running.balance()
            if mounted:
                filler = fill(tmp_path / "disk")
            else:
                full["now"] = True
            ready = running.ready()
            assert ready.status == 503 and int(ready.headers["retry-after"]) >= 1
            assert ready.json()["storage"]["status"] == "error"
            charged = 0
            for _ in range(3):
                reply = running.clip()
                if reply.status == 200:  # a write that still fitted (SQLite reuses its WAL): charged exactly once
                    charged += 1
                else:
                    assert_fault(reply, "database_unavailable", "storage_full")
            assert_fault(running.capture(), "storage_full", "database_unavailable")
            opened = running.open_pairing()
            assert opened.status == 201 or assert_fault(opened, "database_unavailable") is None
            assert running.asset(running.first_asset).status == 200, "what was stored stays readable"
            if mounted:
                filler.unlink()
            else:
                full["now"] = False
            assert_recovered(running, balance - charged)


# ---------------------------------------------------------------------------
# Redis stopped and started again (with and without its append-only file)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("appendonly", [True, False], ids=["aof", "no-persistence"])
def test_redis_outage_is_a_503_and_the_replica_recovers_without_restart(tmp_path: Path, appendonly: bool) -> None:
    from sync.hub.testing import RedisServer

    redis = RedisServer(tmp_path / "redis", appendonly=appendonly)
    url = redis.start()
    try:
        with product(tmp_path / "data", redis_url=url) as running:
            balance = running.balance()
            redis.stop()
            assert_fault(running.capture(), "hub_unavailable", "redis_unavailable")
            assert_fault(running.open_pairing(), "pairing_unavailable", "redis_unavailable", "hub_unavailable")
            ready = running.ready()
            assert ready.status == 503 and ready.json()["redis"]["status"] == "error"
            assert ready.json()["database"]["status"] == "ok"
            # The paid API needs no Redis to do its work: limited in process meanwhile, still served.
            clip = running.clip()
            assert clip.status == 200, clip.body[:300]
            balance -= 1
            redis.start(port=redis.port)
            assert_recovered(running, balance)
    finally:
        redis.stop()


# ---------------------------------------------------------------------------
# S3 stopped and started again
# ---------------------------------------------------------------------------


def test_s3_outage_is_a_503_and_assets_come_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    from sync.hub.testing import free_port

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint,
    }.items():
        monkeypatch.setenv(name, value)
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    s3.start()
    try:
        boto3.client("s3").create_bucket(Bucket="faults")
        with product(tmp_path / "data", storage_url="s3://faults/assets") as running:
            balance = running.balance()
            s3.stop()
            assert_fault(running.capture(), "storage_unavailable")
            assert_fault(running.asset(running.first_asset), "storage_unavailable")
            ready = running.ready()
            assert ready.status == 503 and ready.json()["storage"]["status"] == "error"
            # Moto keeps its buckets in process: the same server started again has every object.
            s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            s3.start()
            assert_recovered(running, balance)
    finally:
        s3.stop()


# ---------------------------------------------------------------------------
# The rule itself (api.faults.classify_fault), error by error
# ---------------------------------------------------------------------------


async def test_a_refused_database_connection_is_the_database_even_when_the_driver_lets_it_through_raw() -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from api.faults import classify_fault

    engine = create_async_engine("postgresql+asyncpg://arclip:x@127.0.0.1:1/arclip")  # nothing listens on port 1
    try:
        with pytest.raises(OSError) as refused:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    finally:
        await engine.dispose()
    fault = classify_fault(refused.value)
    assert fault is not None and fault.code == "database_unavailable"


def test_classify_fault_names_each_service_and_leaves_bugs_alone(tmp_path: Path) -> None:
    import redis.exceptions
    from sqlalchemy import exc as sa_exc

    from api.faults import classify_fault
    from sync.storage import StorageFull, StorageUnavailable

    holder = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        sqlite3.connect(tmp_path / "db.sqlite", timeout=0).execute("INSERT INTO t VALUES (1)")
    except sqlite3.OperationalError as locked:
        wrapped = sa_exc.OperationalError("INSERT", {}, locked)
    holder.close()
    expected = {
        "database_unavailable": [wrapped, sa_exc.TimeoutError("pool exhausted")],
        "redis_unavailable": [redis.exceptions.ConnectionError("down"), redis.exceptions.BusyLoadingError("loading")],
        "storage_full": [OSError(errno.ENOSPC, "No space left on device"), StorageFull("full")],
        "storage_unavailable": [StorageUnavailable("S3 put failed")],
    }
    for code, errors in expected.items():
        for error in errors:
            fault = classify_fault(error)
            assert fault is not None and fault.code == code and fault.retry_after >= 1, (code, error)
    bugs = [
        ValueError("a bug"), KeyError("x"),
        sa_exc.IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE constraint failed")),
        redis.exceptions.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
    ]
    for bug in bugs:
        assert classify_fault(bug) is None, bug
