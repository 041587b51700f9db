"""A throwaway PostgreSQL on a free loopback port, from the machine's own binaries.

Debian's ``postgresql`` package provides them (``initdb``, ``postgres``); without
them, or without ``asyncpg``, the tests that need a server are skipped.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.billing.stripe_server import free_port, wait_for_port


def binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    return next((str(v / name) for v in versions if (v / name).exists()), None)


class PostgresServer:
    """A fresh cluster in a temp dir; ``stop()`` then ``start(port=...)`` restarts it where clients point."""

    def __init__(self) -> None:
        pytest.importorskip("asyncpg")
        initdb, self._postgres = binary("initdb"), binary("postgres")
        if not initdb or not self._postgres:
            pytest.skip("PostgreSQL binaries are not installed (apt-get install postgresql)")
        self.root = Path(tempfile.mkdtemp(prefix="arclip-pg-"))
        os.chmod(self.root, 0o777)
        # PostgreSQL refuses to run as root: run it as nobody then (as the process itself, not
        # under runuser, so that stop()'s signal reaches the server).
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            self._as = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
        self.data = self.root / "data"
        done = subprocess.run(
            [initdb, "-D", str(self.data), "-A", "trust", "-U", "arclip", "--no-sync"],
            capture_output=True, text=True, timeout=120, cwd=self.root, **self._as,
        )
        if done.returncode != 0:
            shutil.rmtree(self.root, ignore_errors=True)
            pytest.skip(f"initdb failed: {done.stderr[-300:]}")
        self.port = 0
        self._server: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The asyncpg URL of the ``postgres`` database (user ``arclip``, no password)."""
        return f"postgresql+asyncpg://arclip@127.0.0.1:{self.port}/postgres"

    def start(self, *, port: int | None = None) -> str:
        self.port = port or free_port()
        self._server = subprocess.Popen(
            [self._postgres, "-D", str(self.data), "-p", str(self.port), "-h", "127.0.0.1",
             "-k", str(self.root), "-c", "fsync=off", "-c", "max_connections=60"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.root, **self._as,
        )
        wait_for_port(self.port, timeout=30, process=self._server)
        _wait_accepting(self.port)
        return self.url

    def stop(self) -> None:
        """A fast shutdown (SIGINT: open connections are cut, as in a crash or a failover)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def running_postgres() -> Iterator[str]:
    """Yield the asyncpg URL of a fresh server's ``postgres`` database (user ``arclip``, no password)."""
    server = PostgresServer()
    try:
        yield server.start()
    finally:
        server.remove()


def _wait_accepting(port: int, timeout: float = 30.0) -> None:
    # The port opens a moment before the server accepts connections (it is still starting up).
    import asyncpg

    async def attempt() -> None:
        connection = await asyncpg.connect(host="127.0.0.1", port=port, user="arclip", database="postgres")
        await connection.close()

    deadline = time.monotonic() + timeout
    while True:
        try:
            # Its own thread and loop: this may be set up from inside a running event loop.
            with ThreadPoolExecutor(1) as thread:
                thread.submit(asyncio.run, attempt()).result()
            return
        except (OSError, asyncpg.PostgresError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


async def new_database(server_url: str) -> str:
    """A new, empty database on the server of ``server_url``; its URL."""
    import asyncpg
    from sqlalchemy.engine import make_url

    url = make_url(server_url)
    name = "t_" + secrets.token_hex(6)
    connection = await asyncpg.connect(host=url.host, port=url.port, user=url.username, database=url.database)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return url.set(database=name).render_as_string(hide_password=False)
