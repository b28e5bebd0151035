"""benchmarks/real_defects.py: the headline made from its rows, checked against numbers worked
out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.real_defects import kind_aurocs, summarise


def test_kind_aurocs_by_hand():
    kinds = np.array(["good", "good", "hole", "break", "hole"])
    scores = np.array([0.1, 0.5, 0.4, 0.9, 0.6])
    got = kind_aurocs(kinds, scores)
    # all: anomalies 0.4, 0.9, 0.6 against normals 0.1, 0.5: 5 of 6 pairs ordered
    assert got["image_auroc"] == pytest.approx(5 / 6)
    assert got["image_auroc_hole"] == pytest.approx(3 / 4)  # 0.4 < 0.5
    assert got["image_auroc_break"] == pytest.approx(1.0)


def test_summarise_by_hand():
    rows = [
        {"method": "kNN on pixels", "seed": None, "image_auroc": 0.6, "image_auroc_hole": 0.5,
         "pixel_auroc": None, "pro": None, "seconds": 2.0, "peak_rss_mib": 300.0},
        {"method": "defects", "seed": 0, "image_auroc": 0.8, "image_auroc_hole": 0.7,
         "pixel_auroc": 0.9, "pixel_auroc_hole": 0.95, "pro": 0.7, "pro_hole": 0.6,
         "seconds": 100.0, "cpu_seconds": 150.0, "peak_rss_mib": 1000.0},
        {"method": "defects", "seed": 1, "image_auroc": 0.9, "image_auroc_hole": 0.8,
         "pixel_auroc": 0.8, "pixel_auroc_hole": 0.85, "pro": 0.9, "pro_hole": 0.8,
         "seconds": 120.0, "cpu_seconds": 170.0, "peak_rss_mib": 1200.0},
    ]
    got = summarise(rows)
    assert got["image_auroc"] == {"kNN on pixels": 0.6, "defects": pytest.approx(0.85)}
    assert got["pixel_auroc"] == {"kNN on pixels": None, "defects": pytest.approx(0.85)}
    assert got["pro"]["defects"] == pytest.approx(0.8)
    hole = got["per_kind"]["hole"]
    assert hole["image_auroc"] == {"kNN on pixels": 0.5, "defects": pytest.approx(0.75)}
    assert hole["pixel_auroc"]["defects"] == pytest.approx(0.9)
    assert hole["pro"] == {"kNN on pixels": None, "defects": pytest.approx(0.7)}
    assert got["seconds"] == {"kNN on pixels": 2.0, "defects": 110.0}
    assert got["cpu_seconds"] == {"kNN on pixels": None, "defects": 160.0}
    assert got["peak_rss_mib"] == {"kNN on pixels": 300.0, "defects": 1200.0}
    assert got["seeds_per_method"] == {"kNN on pixels": 1, "defects": 2}
