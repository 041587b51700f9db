"""A small, bounded HTTP load generator: N requests, C keep-alive connections, loopback only."""

from __future__ import annotations

import http.client
import secrets
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Target:
    """How to ask one server for a full-size RGBA PNG cut-out."""

    name: str
    port: int
    path: str
    file_field: str
    fields: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Body:
    content_type: str
    data: bytes


def multipart(target: Target, filename: str, image: bytes) -> Body:
    boundary = "arclipbench" + secrets.token_hex(8)
    parts = []
    for name, value in target.fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    parts.append(
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{target.file_field}"; filename="{filename}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + image
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return Body(f"multipart/form-data; boundary={boundary}", b"".join(parts))


@dataclass
class Reply:
    index: int  # which image
    status: int
    seconds: float
    body: bytes
    started: float
    length: int = 0  # full body size (``body`` keeps only the head after the callback)
    passes: str = ""  # our X-Clip-Passes: the model passes that ran


def png_header(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, colour type) from a PNG's IHDR, or None if it is not a PNG."""
    if len(data) < 33 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    width, height, _depth, colour = struct.unpack(">IIBB", data[16:26])
    return width, height, colour


def run_load(
    target: Target,
    bodies: list[Body],
    requests: int,
    concurrency: int,
    on_reply: Callable[[Reply], None] | None = None,
    timeout: float = 300.0,
) -> tuple[list[Reply], float]:
    """Send ``requests`` requests (images round-robin) over ``concurrency`` connections.

    Returns every reply (bodies dropped except the PNG header, unless ``on_reply``
    keeps them) and the wall time from the first send to the last reply.
    """
    lock = threading.Lock()
    counter = iter(range(requests))
    replies: list[Reply] = []
    errors: list[BaseException] = []
    headers_base = dict(target.headers)

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=timeout)
        try:
            while True:
                with lock:
                    n = next(counter, None)
                if n is None or errors:
                    return
                index = n % len(bodies)
                body = bodies[index]
                headers = {**headers_base, "Content-Type": body.content_type, "Content-Length": str(len(body.data))}
                started = time.perf_counter()
                try:
                    conn.request("POST", target.path, body=body.data, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                except (ConnectionError, http.client.HTTPException, OSError):
                    # One reconnect (a server may close idle keep-alives), then give up.
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=timeout)
                    started = time.perf_counter()
                    conn.request("POST", target.path, body=body.data, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                reply = Reply(
                    index, response.status, time.perf_counter() - started, data, started, len(data),
                    response.getheader("X-Clip-Passes", ""),
                )
                if on_reply is not None:
                    on_reply(reply)
                reply.body = data[:33] if response.status == 200 else data[:2000]
                with lock:
                    replies.append(reply)
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    begin = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - begin
    if errors:
        raise RuntimeError(f"{target.name}: request failed: {errors[0]!r}") from errors[0]
    return replies, wall
