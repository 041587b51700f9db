"""The API with ARCLIP_INFERENCE_URL pointing at a real tritonserver on loopback, and `arclip model export`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc
from typer.testing import CliRunner

from segmentation.triton_testing import TritonServer
from tests.conftest import assert_problem, jpeg
from tests.segmentation.test_remote_server import _can_run_here, export_test_repository


def test_model_export_command(tmp_path: Path) -> None:
    from api.cli import app

    runner = CliRunner()
    done = runner.invoke(app, ["model", "export", str(tmp_path / "repo"), "--cpu", "--max-batch", "4"])
    assert done.exit_code == 0, done.output
    assert "max batch 4, any size" in done.output
    config = text_format.Parse((tmp_path / "repo" / "u2netp" / "config.pbtxt").read_text(), mc.ModelConfig())
    assert (config.name, config.platform, config.max_batch_size) == ("u2netp", "onnxruntime_onnx", 4)
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.Kind.KIND_CPU
    assert (tmp_path / "repo" / "u2netp" / "1" / "model.onnx").is_file()

    refused = runner.invoke(app, ["model", "export", str(tmp_path / "repo"), "--model", str(tmp_path / "none.onnx")])
    assert refused.exit_code == 2 and "Model file not found" in refused.output and "Traceback" not in refused.output


async def _usage(api) -> int:  # type: ignore[no-untyped-def]
    return (await api.client.get("/v1/account")).json()["usage"]["requests"]


async def _ready(api, within_s: float = 60.0) -> dict:  # type: ignore[no-untyped-def]
    """/readyz's inference check once the model is loaded (it loads in the background)."""
    for _ in range(int(within_s / 0.2)):
        body = (await api.client.get("/readyz")).json()
        if body["inference"]["status"] != "starting":
            return body["inference"]
        await asyncio.sleep(0.2)
    raise AssertionError("the model did not load")


async def test_clips_through_triton_fail_free_and_recover(tmp_path: Path, app_factory) -> None:  # type: ignore[no-untyped-def]
    reason = _can_run_here()
    if reason:
        pytest.skip(reason)
    server = TritonServer(export_test_repository(tmp_path / "repo"), tmp_path).start()
    try:
        async with app_factory(None, inference_url=server.grpc_url, inference_timeout_s=30) as api:
            inference = await _ready(api)
            assert inference == {
                "status": "ok", "location": "remote", "server": server.grpc_url, "server_version": "triton 2.51.0",
                "model": "u2netp", "version": "1", "ready": True,
            }
            first = await api.clip(jpeg(320, 240))
            assert first.status_code == 200, first.text
            used = await _usage(api)

            ports = (server.http_port, server.grpc_port)
            server.stop()
            down = await api.clip(jpeg(320, 240))
            assert_problem(down, 503, "inference_unavailable")
            assert int(down.headers["Retry-After"]) >= 1
            readyz = await api.client.get("/readyz")
            assert readyz.status_code == 503
            assert readyz.json()["inference"]["error"] == "inference_unavailable"
            assert await _usage(api) == used, "a failed clip is not charged"

            server.start(ports=ports)  # the same replica recovers: no restart
            for _ in range(100):
                again = await api.clip(jpeg(320, 240))
                if again.status_code == 200:
                    break
                assert_problem(again, 503, "inference_unavailable")
                await asyncio.sleep(0.2)
            assert again.status_code == 200, again.text
            assert await _usage(api) == used + 1
            assert (await api.client.get("/readyz")).status_code == 200
    finally:
        server.stop()


async def test_a_wrong_model_fails_start_up_clearly(tmp_path: Path, app_factory) -> None:  # type: ignore[no-untyped-def]
    reason = _can_run_here()
    if reason:
        pytest.skip(reason)
    server = TritonServer(export_test_repository(tmp_path / "repo"), tmp_path).start()
    try:
        async with app_factory(None, inference_url=server.grpc_url, inference_model="u2netp_fp16") as api:
            inference = await _ready(api)
            assert inference["status"] == "error" and inference["error"] == "inference_unavailable"
            assert "'input.1' has datatype FP16, expected FP32" in inference["detail"]
    finally:
        server.stop()
