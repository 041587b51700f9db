"""Test support: a real, throwaway ``redis-server`` on a free loopback port.

Used by the hub's tests and by anyone testing several replicas::

    with RedisServer(tmp_path) as redis_url:
        ...

A missing binary is an error, not a skip: install Debian's ``redis-server``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    def __init__(self, directory: Path, *, binary: str = "redis-server", appendonly: bool = True) -> None:
        self.directory = Path(directory)
        self.binary = binary
        self.appendonly = appendonly
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0, *, port: int | None = None) -> str:
        """Start on a free port, or on ``port`` (a restart where clients already point)."""
        path = shutil.which(self.binary)
        if path is None:
            raise RuntimeError(
                f"{self.binary!r} is not on PATH: the hub's Redis tests run against a real server "
                "(apt-get install redis-server)."
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        last_error = ""
        for _ in range(3):  # the free port can be taken between probing and binding
            self.port = port or free_port()
            self._process = subprocess.Popen(
                [
                    path, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
                    "--save", "", "--appendonly", "yes" if self.appendonly else "no", "--daemonize", "no",
                    "--logfile", str(self.directory / "redis.log"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            if self._wait_ready(timeout):
                return self.url
            last_error = self._log_tail()
            self.stop()
        raise RuntimeError(f"redis-server did not start: {last_error}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(64).startswith(b"+PONG"):
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def _log_tail(self) -> str:
        log = self.directory / "redis.log"
        return log.read_text(errors="replace")[-500:] if log.exists() else ""

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stderr is not None:
            self._process.stderr.close()
        self._process = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
