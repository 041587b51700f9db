"""Servers the tests (and benchmarks) start as processes: wait until one answers, stop it.

One place for the loop every such server needs ("poll its readiness URL until 200, unless it
exits or time runs out") and for a polite stop (SIGTERM, then SIGKILL after a grace period).
Callers report a failure in their own words (``pytest.fail``, ``SystemExit``) with their own log.
"""

from __future__ import annotations

import subprocess
import time

import httpx


class NotReady(Exception):
    """The server exited, or did not answer 200 in time; ``str()`` says which."""


def wait_until_ready(
    url: str, process: subprocess.Popen[bytes], timeout: float, *, interval: float = 0.2, request_timeout: float = 5.0
) -> None:
    """Poll ``url`` until it answers 200; raise NotReady when ``process`` exits or ``timeout`` s pass."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise NotReady(f"exited ({process.returncode})")
        try:
            if httpx.get(url, timeout=request_timeout).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise NotReady(f"did not become ready in {timeout:g} s")
        time.sleep(interval)


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """SIGTERM ``process`` and wait; SIGKILL it after ``timeout`` s. Nothing to do when it has ended."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
