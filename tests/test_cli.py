"""The `arclip` command line: offline clipping and key administration."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from api.cli import app
from tests.conftest import encode_image, exif_jpeg, jpeg, photo


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "arclip-data"
    monkeypatch.setenv("ARCLIP_DATA_DIR", str(path))
    monkeypatch.setenv("ARCLIP_MAX_BATCH_SIZE", "1")  # no batching proof at load: quicker
    monkeypatch.setenv("ARCLIP_WORKERS", "2")
    monkeypatch.chdir(tmp_path)
    return path


@pytest.fixture
def shared_model(monkeypatch: pytest.MonkeyPatch, u2netp_model):
    """Reuse the session's u2netp for the default model; any other --model goes the real way."""
    import api.offline

    real = api.offline.build_model

    def build(settings):
        return u2netp_model if settings.model == "u2netp" else real(settings)

    monkeypatch.setattr(api.offline, "build_model", build)


def run(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_clip_one_input_writes_a_file_of_its_size(tmp_path: Path, data_dir: Path) -> None:
    source = write(tmp_path / "photo.jpg", jpeg(320, 240))
    out = tmp_path / "out" / "cut.png"
    result = run("clip", str(source), "-o", str(out))
    assert result.exit_code == 0, result.output
    img = Image.open(out)
    assert img.format == "PNG" and img.mode == "RGBA" and img.size == (320, 240)
    alpha = np.asarray(img)[:, :, 3]
    assert alpha[120, 160] == 255 and alpha[5, 5] == 0


def test_clip_several_inputs_write_a_folder_by_stem(tmp_path: Path, data_dir: Path, shared_model) -> None:
    sources = [
        write(tmp_path / "a.jpg", jpeg(320, 240)),
        write(tmp_path / "b.png", encode_image(photo(200, 300), "PNG")),
        write(tmp_path / "c.webp", encode_image(photo(160, 120), "WEBP")),
    ]
    out = tmp_path / "cuts"
    result = run("clip", *map(str, sources), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.png"]
    assert Image.open(out / "a.png").size == (320, 240)
    assert Image.open(out / "b.png").size == (200, 300)
    assert Image.open(out / "c.png").size == (160, 120)


def test_clip_into_an_existing_folder_with_one_input(tmp_path: Path, data_dir: Path, shared_model) -> None:
    source = write(tmp_path / "solo.jpg", jpeg(160, 120))
    out = tmp_path / "folder"
    out.mkdir()
    result = run("clip", str(source), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert Image.open(out / "solo.png").size == (160, 120)


def test_clip_channels_alpha(tmp_path: Path, data_dir: Path, shared_model) -> None:
    source = write(tmp_path / "p.jpg", jpeg(320, 240))
    out = tmp_path / "mask.png"
    result = run("clip", str(source), "-o", str(out), "--channels", "alpha")
    assert result.exit_code == 0, result.output
    img = Image.open(out)
    assert img.mode == "L" and img.size == (320, 240)
    mask = np.asarray(img)
    assert mask[120, 160] == 255 and mask[5, 5] == 0


def test_clip_crop(tmp_path: Path, data_dir: Path, shared_model) -> None:
    source = write(tmp_path / "p.jpg", jpeg(320, 240))
    out = tmp_path / "crop.png"
    result = run("clip", str(source), "-o", str(out), "--crop", "--crop-margin", "4px")
    assert result.exit_code == 0, result.output
    img = Image.open(out)
    w, h = img.size
    assert 100 < w < 160 and 100 < h < 160  # the disk (radius 60) plus a small margin
    alpha = np.asarray(img)[:, :, 3]
    assert alpha[:4].max() == 0 and alpha[:, :4].max() == 0  # the margin is empty
    assert alpha[h // 2, w // 2] == 255


def test_clip_webp(tmp_path: Path, data_dir: Path, shared_model) -> None:
    sources = [write(tmp_path / "x.jpg", jpeg(160, 120)), write(tmp_path / "y.jpg", jpeg(160, 120, seed=2))]
    out = tmp_path / "webps"
    result = run("clip", *map(str, sources), "-o", str(out), "--format", "webp")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["x.webp", "y.webp"]
    img = Image.open(out / "x.webp")
    assert img.format == "WEBP" and img.mode == "RGBA" and img.size == (160, 120)


def test_clip_size_preview(tmp_path: Path, data_dir: Path, shared_model) -> None:
    source = write(tmp_path / "big.jpg", jpeg(1000, 800))
    out = tmp_path / "preview.png"
    result = run("clip", str(source), "-o", str(out), "--size", "preview")
    assert result.exit_code == 0, result.output
    w, h = Image.open(out).size
    assert abs(w * h - 250_000) / 250_000 < 0.02 and abs(w / h - 1.25) < 0.01


def test_clip_exif_rotated_input_keeps_displayed_size(tmp_path: Path, data_dir: Path, shared_model) -> None:
    source = write(tmp_path / "phone.jpg", exif_jpeg(photo(240, 360, center=(120, 100), radius=50), 6))
    out = tmp_path / "phone.png"
    result = run("clip", str(source), "-o", str(out))
    assert result.exit_code == 0, result.output
    img = Image.open(out)
    assert img.size == (240, 360)
    assert np.asarray(img)[100, 120, 3] == 255


def test_clip_bad_input_is_reported_and_the_rest_go_on(tmp_path: Path, data_dir: Path, shared_model) -> None:
    good = write(tmp_path / "good.jpg", jpeg(160, 120))
    bad = write(tmp_path / "bad.jpg", b"this is not an image at all\n")
    out = tmp_path / "mixed"
    result = run("clip", str(good), str(bad), "-o", str(out))
    assert result.exit_code != 0
    assert "bad.jpg" in result.output
    assert (out / "good.png").is_file()
    assert not (out / "bad.png").exists()


def test_clip_single_bad_input_fails(tmp_path: Path, data_dir: Path, shared_model) -> None:
    bad = write(tmp_path / "broken.png", encode_image(photo(64, 48), "PNG")[:40])
    result = run("clip", str(bad), "-o", str(tmp_path / "o.png"))
    assert result.exit_code != 0
    assert "broken.png" in result.output
    assert not (tmp_path / "o.png").exists()


def test_clip_missing_input_file(tmp_path: Path, data_dir: Path) -> None:
    result = run("clip", str(tmp_path / "nope.jpg"), "-o", str(tmp_path / "o.png"))
    assert result.exit_code == 2
    assert "nope.jpg" in result.output


def test_clip_bad_option_is_a_clear_error(tmp_path: Path, data_dir: Path) -> None:
    source = write(tmp_path / "p.jpg", jpeg(64, 48))
    result = run("clip", str(source), "-o", str(tmp_path / "o.png"), "--format", "gif")
    assert result.exit_code == 2
    assert "format" in result.output and "Traceback" not in result.output


def test_clip_missing_model_is_a_clear_error(tmp_path: Path, data_dir: Path) -> None:
    source = write(tmp_path / "p.jpg", jpeg(64, 48))
    result = run("clip", str(source), "-o", str(tmp_path / "o.png"), "--model", "/nonexistent.onnx")
    assert result.exit_code == 2
    assert "/nonexistent.onnx" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "o.png").exists()


def test_clip_unknown_model_name(tmp_path: Path, data_dir: Path) -> None:
    source = write(tmp_path / "p.jpg", jpeg(64, 48))
    result = run("clip", str(source), "-o", str(tmp_path / "o.png"), "--model", "sam2")
    assert result.exit_code == 2
    assert "sam2" in result.output and "u2netp" in result.output


# --- keys -------------------------------------------------------------------------------------


def authenticate(data_dir: Path, secret: str):
    from api.offline import with_keys
    from api.settings import Settings

    async def go():
        async with with_keys(Settings(_env_file=None, data_dir=data_dir)) as keys:
            return await keys.authenticate(secret)

    return asyncio.run(go())


def test_keys_create_list_revoke(data_dir: Path) -> None:
    from billing import RevokedApiKey

    created = run("keys", "create", "--name", "my integration", "--plan", "payg")
    assert created.exit_code == 0, created.output
    secret = created.stdout.strip()
    assert secret.startswith("arc_live_") and "\n" not in secret, "stdout must be exactly the key"
    assert authenticate(data_dir, secret).name == "my integration"

    listed = run("keys", "list")
    assert listed.exit_code == 0, listed.output
    assert secret not in listed.output, "list must never show the secret"
    assert "my integration" in listed.output and "payg" in listed.output and "active" in listed.output
    header, row = listed.stdout.splitlines()
    assert header.split()[:2] == ["ID", "KEY"]
    key_id = row.split()[0]
    assert key_id.startswith("key_")
    assert key_id in created.output  # the create message names the id

    revoked = run("keys", "revoke", key_id)
    assert revoked.exit_code == 0, revoked.output
    assert key_id in revoked.output
    assert "revoked" in run("keys", "list").stdout
    with pytest.raises(RevokedApiKey):
        authenticate(data_dir, secret)


def test_keys_create_is_shown_once(data_dir: Path) -> None:
    first = run("keys", "create", "--name", "a").stdout.strip()
    second = run("keys", "create", "--name", "b").stdout.strip()
    assert first != second
    listing = run("keys", "list").output
    assert first not in listing and second not in listing
    assert first[-4:] in listing  # a safe hint of which key is which


def test_keys_revoke_unknown(data_dir: Path) -> None:
    result = run("keys", "revoke", "key_nope")
    assert result.exit_code == 2
    assert "key_nope" in result.output and "Traceback" not in result.output


def test_console_script(tmp_path: Path) -> None:
    exe = shutil.which("arclip")
    command = [exe] if exe else [sys.executable, "-c", "from api.cli import main; main()"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCLIP_")}
    env["ARCLIP_DATA_DIR"] = str(tmp_path / "d")
    done = subprocess.run([*command, "keys", "create", "--name", "sub"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("arc_live_")
    assert (tmp_path / "d" / "arclip.db").is_file()


def test_serve_with_a_missing_model_is_a_clear_error(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    def must_not_start(*args, **kwargs):
        raise AssertionError("serve started a server with a missing model")

    monkeypatch.setattr(uvicorn, "run", must_not_start)
    monkeypatch.setenv("ARCLIP_MODEL", "/nonexistent/model.onnx")
    result = run("serve", "--host", "127.0.0.1", "--port", "8765")
    assert result.exit_code == 2
    assert "/nonexistent/model.onnx" in result.output and "Traceback" not in result.output
