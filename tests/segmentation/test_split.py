"""Full-resolution work in pieces side by side: the same pixels as in one piece."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from segmentation.alpha import refine_alpha
from segmentation.matting import estimate_foreground
from segmentation.split import ONE_PIECE, Splitter
from tests.segmentation.test_alpha import GREEN, RED, composite, disk, model_saliency, reduce


@pytest.fixture
def splitter():  # type: ignore[no-untyped-def]
    splitter = Splitter(3)
    yield splitter
    splitter.close()


def test_slices_cover_the_range_once_in_bounded_pieces(splitter: Splitter) -> None:
    for total, largest in ((0, None), (1, None), (2, None), (10, None), (7000, 1000), (2500, 1000)):
        pieces = splitter.slices(total, largest)
        covered = [i for piece in pieces for i in range(total)[piece]]
        assert covered == list(range(total))
        assert len(pieces) == (0 if total == 0 else max(min(total, 3), -(-total // largest) if largest else 1))
        assert all(piece.stop - piece.start <= (largest or total) for piece in pieces)
    assert ONE_PIECE.slices(10) == [slice(0, 10)]


def test_pieces_run_on_the_splitter_s_threads_in_order(splitter: Splitter) -> None:
    names: list[str] = []

    def piece(part: slice) -> int:
        names.append(threading.current_thread().name)
        return part.start

    assert splitter.run(piece, splitter.slices(9)) == [0, 3, 6]
    assert all(name.startswith("arclip-split") for name in names)
    assert ONE_PIECE.run(piece, [slice(0, 1), slice(1, 2)]) == [0, 1]


def test_alpha_and_edge_colours_in_pieces_equal_one_piece(splitter: Splitter) -> None:
    # Large enough for several 1000-tile pieces along a long soft edge.
    truth = disk(2400, 3200, 1200, 1500, 1000, soft=6.0)
    full = composite(truth, RED, GREEN)
    work = reduce(full, 4)
    saliency = model_saliency(truth)
    alpha, work_alpha = refine_alpha(saliency, work, full)
    split_alpha, split_work_alpha = refine_alpha(saliency, work, full, splitter=splitter)
    assert np.array_equal(split_alpha, alpha) and np.array_equal(split_work_alpha, work_alpha)
    soft = np.count_nonzero((alpha > 0) & (alpha < 255))
    assert soft > 10_000  # the pieces had work to share
    colours = estimate_foreground(full, alpha, work, work_alpha)
    assert np.array_equal(estimate_foreground(full, alpha, work, work_alpha, splitter=splitter), colours)
    assert not np.array_equal(colours, full)  # the edge colours were corrected
