"""The image grids write readable PNGs, on ordinary data and on the edge cases of real runs."""

from __future__ import annotations

import numpy as np
import pytest
from runfixtures import open_png as _png

from reconad import report
from reconad.errors import ReconadError


def test_select_extremes_takes_highest_and_lowest_disjoint_with_nan_first():
    scores = np.array([0.5, np.nan, 0.1, 0.9, 0.3])
    top, bottom = report.select_extremes(scores, 2)
    assert top.tolist() == [1, 3]
    assert bottom.tolist() == [2, 4]
    top, bottom = report.select_extremes(scores, 4)  # fewer than 2k images: no repeats
    assert top.tolist() == [1, 3, 0, 4] and bottom.tolist() == [2]


@pytest.mark.parametrize("channels", [1, 3])
def test_reconstructions_grid_grows_with_groups(channels, tmp_path):
    rng = np.random.default_rng(channels)
    x = rng.uniform(0, 1, (9, channels, 28, 28)).astype(np.float32)
    groups = np.array(["normal"] * 8 + ["class 4"])
    one = _png(report.reconstructions(x[:8], x[:8], x[:8].mean(1), np.arange(8.0),
                                      groups[:8], tmp_path / "one.png"))
    two = _png(report.reconstructions(x, x[::-1], x.mean(1), np.arange(9.0), groups,
                                      tmp_path / "two.png"))
    assert two.size[1] > 1.7 * one.size[1]  # a second block of three rows
    assert two.size[0] == pytest.approx(one.size[0], rel=0.05)


def test_gallery_layout_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (40, 3, 16, 16)).astype(np.float32)
    scores = rng.uniform(0, 1, 40)
    big = _png(report.gallery(x, scores, tmp_path / "g.png", k=16, labels=np.full(40, -1),
                              ids=[f"img{i}" for i in range(40)]))
    small = _png(report.gallery(x[:3], scores[:3], tmp_path / "s.png", k=16))
    assert big.size[1] > 2 * small.size[1]
    _png(report.gallery(x[:1], scores[:1], tmp_path / "1.png", k=5))
    with pytest.raises(ReconadError, match="N scores"):
        report.gallery(x, scores[:5], tmp_path / "bad.png")
    with pytest.raises(ReconadError, match="at least 1"):
        report.gallery(x, scores, tmp_path / "bad.png", k=0)
    with pytest.raises(ReconadError, match="labels"):
        report.gallery(x, scores, tmp_path / "bad.png", labels=[1, 2])
    assert not (tmp_path / "bad.png").exists()
