"""TritonModel against a real tritonserver on loopback (the nvidia-pytriton wheel's, CPU-only).

The repository is exported by ``triton_repo`` (Python backend: this Triton has no
onnxruntime backend) and served behind Triton's own dynamic batcher.
"""

from __future__ import annotations

import asyncio
import platform
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from segmentation import ClipEngine, ClipOptions, EngineConfig, OnnxModel, resolve_model
from segmentation.errors import InferenceUnavailable, ModelError
from segmentation.remote import TritonModel
from segmentation.triton_repo import ExportOptions, export_repository
from segmentation.triton_testing import TritonServer
from tests.conftest import jpeg


def _can_run_here() -> str | None:
    """Why the wheel's binary cannot run on this machine, or None."""
    libc, version = platform.libc_ver()
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return "the nvidia-pytriton wheel's tritonserver runs on x86-64 Linux only"
    if libc == "glibc" and tuple(int(p) for p in version.split(".")[:2]) < (2, 35):
        return f"the nvidia-pytriton wheel's tritonserver needs glibc >= 2.35 (this machine has {version})"
    return None


def export_test_repository(repository: Path) -> Path:
    """u2netp as served, and "u2netp_fp16": the same graph declared with an FP16 input (a wrong model)."""
    export_repository(resolve_model("u2netp"), repository, ExportOptions(backend="python", gpu=False))
    shutil.copytree(repository / "u2netp", repository / "u2netp_fp16")
    config = repository / "u2netp_fp16" / "config.pbtxt"
    text = config.read_text().replace('name: "u2netp"', 'name: "u2netp_fp16"')
    config.write_text(re.sub(r"(input \{[^}]*data_type: )TYPE_FP32", r"\1TYPE_FP16", text, count=1))
    return repository


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = _can_run_here()
    if reason:
        pytest.skip(reason)
    return export_test_repository(tmp_path_factory.mktemp("triton-repo"))


@pytest.fixture(scope="module")
def triton(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    with TritonServer(repository, tmp_path_factory.mktemp("triton")) as server:
        yield server


@pytest.fixture(scope="module")
def local_model() -> OnnxModel:
    """The in-process model in fp32: the graph the server runs."""
    return OnnxModel(resolve_model("u2netp"), max_batch=4, precision="fp32")


@pytest.fixture
def remote(triton: TritonServer) -> Iterator[TritonModel]:
    # A generous deadline: this Triton runs the model on the same two CPU cores as the tests.
    model = TritonModel(triton.grpc_url, "u2netp", resolve_model("u2netp").preset, timeout_s=60, max_in_flight=4)
    yield model
    model.close()


def _cut_alphas(model, images: list[bytes]) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    async def run() -> list[np.ndarray]:
        engine = ClipEngine(model, EngineConfig(concurrency=2, extra_passes=("aspect",), tune_malloc=False))
        await engine.start()
        try:
            cuts = await asyncio.gather(*(engine.cut(image, ClipOptions()) for image in images))
        finally:
            await engine.close()
        return [np.asarray(cut.alpha, dtype=np.float32) for cut in cuts]

    return asyncio.run(run())


def test_cutouts_through_triton_equal_the_in_process_ones(remote: TritonModel, local_model: OnnxModel) -> None:
    assert (remote.max_batch, remote.any_size, remote.lanes) == (8, True, 4)
    images = [jpeg(320, 240, seed=1), jpeg(240, 360, seed=2, radius=70), jpeg(400, 300, seed=3, center=(120, 100))]
    through_triton = _cut_alphas(remote, images)
    in_process = _cut_alphas(local_model, images)
    for got, want in zip(through_triton, in_process, strict=True):
        scale = 255.0 if want.max() > 1.0 else 1.0
        assert np.abs(got - want).max() <= scale / 255.0
        assert want.max() > 0.5 * scale  # an object was found, so the comparison means something


def test_a_batch_of_views_is_one_request(remote: TritonModel, local_model: OnnxModel) -> None:
    x = np.random.default_rng(5).standard_normal((3, 3, 320, 256)).astype(np.float32)
    np.testing.assert_allclose(remote.predict(x), local_model.predict(x), atol=1e-5)
    stats = asyncio.run(_statistics(remote))
    assert any(int(b["batch_size"]) == 3 for b in stats["batch_stats"])


async def _statistics(model: TritonModel) -> dict:
    import tritonclient.grpc.aio as grpc_aio

    client = grpc_aio.InferenceServerClient(model.endpoint.address)
    try:
        answer = await client.get_inference_statistics(model.name, as_json=True)
    finally:
        await client.close()
    return answer["model_stats"][0]


def test_http_flavour_and_readiness(triton: TritonServer, local_model: OnnxModel) -> None:
    model = TritonModel(triton.http_url, "u2netp:1", resolve_model("u2netp").preset, timeout_s=60)
    try:
        x = np.random.default_rng(6).standard_normal((2, 3, 320, 320)).astype(np.float32)
        np.testing.assert_allclose(model.predict(x), local_model.predict(x), atol=1e-5)
        described = asyncio.run(model.describe())
        assert described == {
            "location": "remote", "server": triton.http_url, "server_version": "triton 2.51.0",
            "model": "u2netp", "version": "1", "ready": True,
        }
    finally:
        model.close()


def test_a_wrong_or_missing_model_is_refused_at_start(triton: TritonServer) -> None:
    preset = resolve_model("u2netp").preset
    with pytest.raises(ModelError, match=r"'u2netp_fp16'.*does not fit the u2net preset: 'input.1' has datatype FP16"):
        TritonModel(triton.grpc_url, "u2netp_fp16", preset)
    with pytest.raises(ModelError, match=r"'isnet' on grpc://.*is not available"):
        TritonModel(triton.grpc_url, "isnet", preset, start_timeout_s=0)
    with pytest.raises(ModelError, match=r"'u2netp' version 7 .*is not available"):
        TritonModel(triton.grpc_url, "u2netp:7", preset, start_timeout_s=0)


def _recovers(model: TritonModel, x: np.ndarray, within_s: float = 30.0) -> np.ndarray:
    """The first answer once the server is back (gRPC reconnects on its own, within a second or so)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            return model.predict(x)
        except InferenceUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_stopped_and_hung_servers_fail_fast_and_recover(repository: Path, tmp_path: Path, local_model: OnnxModel) -> None:
    x = np.random.default_rng(7).standard_normal((1, 3, 320, 320)).astype(np.float32)
    expected = local_model.predict(x)
    server = TritonServer(repository, tmp_path).start()
    model = TritonModel(server.grpc_url, "u2netp", resolve_model("u2netp").preset, timeout_s=1.5, max_in_flight=2)
    try:
        ports = (server.http_port, server.grpc_port)
        server.stop()
        with pytest.raises(InferenceUnavailable) as stopped:
            model.predict(x)
        assert stopped.value.code == "inference_unavailable" and stopped.value.retry_after > 0
        with pytest.raises(InferenceUnavailable):
            asyncio.run(model.describe())
        server.start(ports=ports)
        np.testing.assert_allclose(_recovers(model, x), expected, atol=1e-5)

        server.pause()  # a hung server: connected, silent
        try:
            with pytest.raises(InferenceUnavailable, match="in time"):
                model.predict(x)
        finally:
            server.resume()
        np.testing.assert_allclose(_recovers(model, x), expected, atol=1e-5)
    finally:
        model.close()
        server.stop()
