"""Test and benchmark support: a real ``tritonserver`` on free loopback ports.

The binary comes from the ``nvidia-pytriton`` wheel (Triton 2.51, runs without a
GPU; it has the Python backend, not the onnxruntime one, so the repository is
exported with ``backend="python"``). The wheel pins numpy < 2, which this project
cannot take, so ``scripts/test.sh`` unpacks it without its dependencies into
``.cache/pytriton`` (``ARCLIP_TEST_PYTRITON_DIR`` points elsewhere); we only run
its binary. ::

    with TritonServer(repository, workdir) as server:
        server.grpc_url  # grpc://127.0.0.1:PORT
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from types import TracebackType

DEFAULT_DIR = Path(__file__).resolve().parent.parent / ".cache" / "pytriton"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process_group(process: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """SIGTERM a server started with ``start_new_session`` and all it spawned; SIGKILL after ``timeout``."""
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout)


def find_pytriton() -> Path | None:
    """The directory holding ``pytriton/tritonserver`` and ``nvidia_pytriton.libs``, if installed anywhere."""
    candidates = [Path(os.environ["ARCLIP_TEST_PYTRITON_DIR"])] if os.environ.get("ARCLIP_TEST_PYTRITON_DIR") else []
    candidates.append(DEFAULT_DIR)
    candidates += [Path(p) for p in sys.path if p]
    for base in candidates:
        if (base / "pytriton" / "tritonserver" / "bin" / "tritonserver").is_file():
            return base
    return None


class TritonServer:
    def __init__(self, repository: Path, workdir: Path, *, pytriton_dir: Path | None = None) -> None:
        base = pytriton_dir or find_pytriton()
        if base is None:
            raise FileNotFoundError(
                "tritonserver not found: scripts/test.sh unpacks the nvidia-pytriton wheel into .cache/pytriton "
                "(pip install --no-deps --target .cache/pytriton nvidia-pytriton)"
            )
        self.base = base
        self.repository = Path(repository)
        self.workdir = Path(workdir)
        self.http_port = self.grpc_port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._server_dir = self._prepare()

    def _prepare(self) -> Path:
        """A copy of the server with the Python-backend stub built for this interpreter's version."""
        source = self.base / "pytriton" / "tritonserver"
        target = self.workdir / "tritonserver"
        if not target.exists():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("python_backend_stubs"))
            version = f"{sys.version_info.major}.{sys.version_info.minor}"
            stub = source / "python_backend_stubs" / version / "triton_python_backend_stub"
            if not stub.is_file():
                raise FileNotFoundError(f"nvidia-pytriton has no Python-backend stub for Python {version}")
            shutil.copy(stub, target / "backends" / "python" / "triton_python_backend_stub")
        return target

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        # The stub loads libpython: this interpreter's (a pyenv build is not on the
        # loader's path), or it mixes two Python builds and fails at model load.
        paths = [sysconfig.get_config_var("LIBDIR") or "", str(self.base / "nvidia_pytriton.libs")]
        env["LD_LIBRARY_PATH"] = ":".join(p for p in [*paths, env.get("LD_LIBRARY_PATH", "")] if p)
        return env

    @property
    def grpc_url(self) -> str:
        return f"grpc://127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 60.0, *, ports: tuple[int, int] | None = None, extra: tuple[str, ...] = ()) -> TritonServer:
        """Start and wait until every model is ready; ``ports`` (http, grpc) restarts where clients point."""
        self.http_port, self.grpc_port = ports or (free_port(), free_port())
        self.log = self.workdir / "tritonserver.log"
        command = [
            str(self._server_dir / "bin" / "tritonserver"),
            f"--model-repository={self.repository}",
            f"--backend-directory={self._server_dir / 'backends'}",
            "--http-address=127.0.0.1", f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1", f"--grpc-port={self.grpc_port}",
            "--allow-metrics=false", "--exit-timeout-secs=2", *extra,
        ]
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=self._environment(), start_new_session=True
            )
        if not self._wait_ready(timeout):
            tail = self.log.read_text(errors="replace")[-3000:]
            self.stop()
            raise RuntimeError(f"tritonserver did not become ready in {timeout:g} s:\n{tail}")
        return self

    def _wait_ready(self, timeout: float) -> bool:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=1) as answer:
                    if answer.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        """Stop the server (its stubs too: they share its process group)."""
        process, self._process = self._process, None
        stop_process_group(process, timeout=10)

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets but answers nothing (a hung server)."""
        assert self._process is not None
        os.killpg(self._process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None
        os.killpg(self._process.pid, signal.SIGCONT)

    def __enter__(self) -> TritonServer:
        return self if self._process is not None else self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
