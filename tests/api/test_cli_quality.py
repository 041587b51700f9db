"""``arclip clip --quality``: the model runs each setting asks for, and one line for a bad value."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segmentation.models import PRESETS
from segmentation.session import FunctionModel
from tests.conftest import encode_image, photo
from tests.test_cli import data_dir, run, write  # noqa: F401 (fixtures)


def _half_sure_of_red(x: np.ndarray) -> np.ndarray:
    """Finds the red disk but is only half sure of it: every map is 'unsure' (``passes.is_unsure``)."""
    return 0.6 * (x[0] - x[1] > 1.5).astype(np.float32)


@pytest.fixture
def counting_model(monkeypatch: pytest.MonkeyPatch) -> FunctionModel:
    import api.offline

    model = FunctionModel(PRESETS["u2net"], _half_sure_of_red, max_batch=1)
    monkeypatch.setattr(api.offline, "build_model", lambda settings: model)
    return model


@pytest.mark.parametrize(
    ("quality", "runs"),
    [
        ("fast", 1),  # the square view only
        (None, 3),  # balanced, the CPU default: an unsure map adds its mirror and the squeezed square's mirror
        ("balanced", 3),
        # Every view (four), then the square view and its mirror on the (square) crop around the small object.
        ("best", 6),
    ],
)
def test_quality_sets_the_model_runs(
    tmp_path: Path, data_dir: Path, counting_model: FunctionModel, quality: str | None, runs: int
) -> None:
    source = write(tmp_path / "in.png", encode_image(photo(640, 480, center=(470, 150), radius=45), "PNG"))
    args = ["clip", str(source), "-o", str(tmp_path / "out.png")] + (["--quality", quality] if quality else [])
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert sum(counting_model.batches) == runs
    assert (tmp_path / "out.png").stat().st_size > 0


def test_a_bad_quality_is_one_line(tmp_path: Path, data_dir: Path, counting_model: FunctionModel) -> None:
    source = write(tmp_path / "in.png", encode_image(photo(64, 48), "PNG"))
    result = run("clip", str(source), "-o", str(tmp_path / "out.png"), "--quality", "ultra")
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["error: quality must be one of fast, balanced, best; got 'ultra'."]
    assert counting_model.batches == [] and not (tmp_path / "out.png").exists()


def test_help_names_the_quality_settings() -> None:
    result = run("clip", "--help")
    assert "--quality fast|balanced|best" in result.output
