"""Oversized uploads against a real server on a loopback socket: 413 before the body is buffered.

`arclip serve` runs in a subprocess so its memory can be watched from outside
(/proc/PID/status: VmHWM is the peak resident set since start).
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import jpeg
from tests.processes import NotReady, stop_process, wait_until_ready

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to watch memory")

MB = 1024 * 1024
UPLOAD = 60 * MB
BOUNDARY = "arclip-test-boundary"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


class Server:
    def __init__(self, process: subprocess.Popen, port: int, key: str) -> None:
        self.process, self.port, self.key = process, port, key
        self.url = f"http://127.0.0.1:{port}"

    def peak_mb(self) -> float:
        return _memory_kb(self.process.pid, "VmHWM") / 1024

    def rss_mb(self) -> float:
        return _memory_kb(self.process.pid, "VmRSS") / 1024

    def raw(self, head: bytes, body: Iterable[bytes], timeout: float = 30) -> tuple[int, bytes, float]:
        """Send head, then body pieces until the server answers; return (bytes sent, response, seconds)."""
        started = time.perf_counter()
        sent = 0
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as conn:
            conn.sendall(head)
            try:
                for piece in body:
                    readable, _, _ = select.select([conn], [], [], 0)
                    if readable:  # the server has answered: stop sending
                        break
                    conn.sendall(piece)
                    sent += len(piece)
            except OSError:
                pass  # the server closed the connection on us; its answer is already on the wire
            response = b""
            try:
                while True:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    response += chunk
                    if b"\r\n\r\n" in response:
                        head_part, _, rest = response.partition(b"\r\n\r\n")
                        length = _content_length(head_part)
                        if length is not None and len(rest) >= length:
                            break
            except OSError:
                pass
        return sent, response, time.perf_counter() - started


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return None


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    assert raw, "no response at all"
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def assert_413_problem(raw: bytes) -> dict[str, str]:
    status, headers, body = parse_response(raw)
    assert status == 413, raw[:300]
    assert headers["content-type"].startswith("application/problem+json")
    problem = json.loads(body)
    assert problem["status"] == 413 and problem["code"] and problem["detail"] and problem["title"] and problem["type"]
    if problem["code"] == "payload_too_large":  # the server runs on the default limit, stated as users set it
        assert "the 25 MiB limit" in problem["detail"], problem["detail"]
    return headers


def multipart_prefix() -> bytes:
    return (
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image_file\"; filename=\"huge.jpg\"\r\n"
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode() + b"\xff\xd8\xff"


def request_head(key: str, *, content_length: int | None, content_type: str) -> bytes:
    lines = [
        "POST /v1/clip HTTP/1.1",
        "Host: 127.0.0.1",
        f"X-Api-Key: {key}",
        f"Content-Type: {content_type}",
    ]
    lines.append(f"Content-Length: {content_length}" if content_length is not None else "Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def megabytes(count: int) -> Iterator[bytes]:
    block = b"\xa5" * MB
    for _ in range(count):
        yield block


def chunked(pieces: Iterable[bytes]) -> Iterator[bytes]:
    for piece in pieces:
        yield b"%x\r\n" % len(piece) + piece + b"\r\n"
    yield b"0\r\n\r\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_cache_dir: Path) -> Iterator[Server]:
    from api.offline import with_keys
    from api.settings import Settings

    data_dir = tmp_path_factory.mktemp("server-data")

    async def create_key() -> str:
        async with with_keys(Settings(_env_file=None, data_dir=data_dir)) as keys:
            return (await keys.create("body-limit"))[1]

    key = asyncio.run(create_key())
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCLIP_")}
    # one worker, batch of one: a small, quick-to-start server (no batching proof at load)
    env.update(ARCLIP_DATA_DIR=str(data_dir), ARCLIP_WORKERS="1", ARCLIP_MAX_BATCH_SIZE="1")
    # The suite's int8 graph, built once, instead of a build of its own (the model loads while it starts).
    env.update(ARCLIP_MODEL_CACHE_DIR=str(model_cache_dir))
    log = (data_dir / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-c", "from api.cli import main; main()", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=data_dir,
    )
    try:
        try:
            wait_until_ready(f"http://127.0.0.1:{port}/readyz", process, 180, interval=0.1, request_timeout=2)
        except NotReady as exc:
            pytest.fail(f"arclip serve {exc}:\n" + (data_dir / "server.log").read_text()[-4000:])
        running = Server(process, port, key)
        # warm up (first inference allocates the model's arenas) so memory growth means the upload
        warm = httpx.post(
            f"{running.url}/v1/clip", headers={"X-Api-Key": key}, files={"image_file": ("w.jpg", jpeg(320, 240))},
            timeout=60,
        )
        assert warm.status_code == 200, warm.text
        yield running
    finally:
        stop_process(process, timeout=15)
        log.close()


def test_declared_60mb_upload_is_refused_without_reading_the_body(server: Server) -> None:
    peak_before = server.peak_mb()
    prefix = multipart_prefix()
    head = request_head(
        server.key, content_length=len(prefix) + UPLOAD, content_type=f"multipart/form-data; boundary={BOUNDARY}"
    )
    # Send only the headers: the answer must come without a single body byte.
    sent, raw, seconds = server.raw(head, [])
    assert sent == 0
    headers = assert_413_problem(raw)
    assert headers.get("connection") == "close"
    assert seconds < 5
    # ...and with the client pushing the whole 60 MB, the answer still comes and memory stays flat.
    sent, raw, seconds = server.raw(head, [prefix, *megabytes(60)])
    assert_413_problem(raw)
    assert sent < UPLOAD
    assert server.peak_mb() - peak_before < 20, "the server buffered the refused upload"


def test_declared_60mb_raw_image_body_is_refused(server: Server) -> None:
    peak_before = server.peak_mb()
    head = request_head(server.key, content_length=UPLOAD, content_type="image/jpeg")
    sent, raw, seconds = server.raw(head, megabytes(60))
    assert_413_problem(raw)
    assert sent < UPLOAD and seconds < 10
    assert server.peak_mb() - peak_before < 20


def test_chunked_60mb_multipart_upload_is_cut_off(server: Server) -> None:
    peak_before = server.peak_mb()
    head = request_head(server.key, content_length=None, content_type=f"multipart/form-data; boundary={BOUNDARY}")
    sent, raw, seconds = server.raw(head, chunked([multipart_prefix(), *megabytes(60)]))
    headers = assert_413_problem(raw)
    assert sent < UPLOAD, "the server read the whole 60 MB before refusing"
    assert seconds < 20
    assert headers.get("connection") == "close", "the server should drop the rest of a refused body"
    # Multipart files spool to disk: reading up to the limit must not hold it in memory.
    assert server.peak_mb() - peak_before < 40, "the server buffered the refused upload"


def test_chunked_60mb_raw_body_is_cut_off(server: Server) -> None:
    peak_before = server.peak_mb()
    head = request_head(server.key, content_length=None, content_type="image/jpeg")
    sent, raw, seconds = server.raw(head, chunked(megabytes(60)))
    headers = assert_413_problem(raw)
    assert sent < UPLOAD
    assert seconds < 20
    assert headers.get("connection") == "close"
    # A raw image body is read into memory up to the 25 MB limit, never the whole 60 MB.
    assert server.peak_mb() - peak_before < 55, "the server buffered the refused upload"


def test_server_is_healthy_after_oversized_uploads(server: Server) -> None:
    assert server.process.poll() is None
    assert httpx.get(f"{server.url}/healthz", timeout=5).json() == {"status": "ok"}
    response = httpx.post(
        f"{server.url}/v1/clip",
        headers={"X-Api-Key": server.key},
        files={"image_file": ("ok.jpg", jpeg(200, 150), "image/jpeg")},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert (response.headers["X-Width"], response.headers["X-Height"]) == ("200", "150")
