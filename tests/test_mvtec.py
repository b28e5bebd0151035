"""Reading defect datasets (MVTec AD and plain layouts) from generated mini-trees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reconad.data import read_defect_dataset
from reconad.errors import ReconadError

H, W = 8, 10


def _save(path: Path, pixels: np.ndarray) -> None:
    """Write (H, W) grey or (H, W, 3) colour uint8 pixels as PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _rgb(seed: int, h=H, w=W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _mask(top: int, left: int, h=H, w=W) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[top:top + 2, left:left + 3] = 255
    return m


@pytest.fixture
def mvtec(tmp_path) -> Path:
    root = tmp_path / "bottle"
    for i in range(3):
        _save(root / "train/good" / f"{i:03d}.png", _rgb(i))
    for i in range(2):
        _save(root / "test/good" / f"{i:03d}.png", _rgb(10 + i))
        _save(root / "test/scratch" / f"{i:03d}.png", _rgb(20 + i))
        _save(root / "ground_truth/scratch" / f"{i:03d}_mask.png", _mask(i, i))
    _save(root / "test/hole/000.png", _rgb(30))
    _save(root / "ground_truth/hole/000_mask.png", _mask(5, 6))
    return root


def test_mvtec_layout_reads_images_masks_kinds_ids_and_split(mvtec):
    data = read_defect_dataset(mvtec)
    assert data.images.shape == (8, 3, H, W) and data.images.dtype == np.uint8
    assert data.masks.shape == (8, H, W) and data.masks.dtype == bool
    assert data.ids.tolist() == [
        "train/good/000.png", "train/good/001.png", "train/good/002.png",
        "test/good/000.png", "test/good/001.png", "test/hole/000.png",
        "test/scratch/000.png", "test/scratch/001.png"]
    assert data.kinds.tolist() == ["good"] * 5 + ["hole", "scratch", "scratch"]
    assert data.train.tolist() == [True] * 3 + [False] * 5
    assert data.labels.tolist() == [0] * 5 + [1] * 3
    np.testing.assert_array_equal(data.images[1], _rgb(1).transpose(2, 0, 1))
    np.testing.assert_array_equal(data.images[7], _rgb(21).transpose(2, 0, 1))
    assert not data.masks[:5].any()
    np.testing.assert_array_equal(data.masks[5], _mask(5, 6) > 0)
    np.testing.assert_array_equal(data.masks[7], _mask(1, 1) > 0)
    assert data.float_images().dtype == np.float32 and data.float_images().max() <= 1
    test = data.subset(~data.train)
    assert len(test.ids) == 5 and test.masks.sum() == 18


def test_grey_images_join_colour_ones_and_grayscale_and_resize_work(mvtec):
    grey = np.random.default_rng(5).integers(0, 256, (H, W), dtype=np.uint8)
    _save(mvtec / "test/good/002.png", grey)
    data = read_defect_dataset(mvtec)
    np.testing.assert_array_equal(data.images[5], np.stack([grey] * 3))
    one = read_defect_dataset(mvtec, grayscale=True)
    assert one.images.shape == (9, 1, H, W)
    np.testing.assert_array_equal(one.images[5, 0], grey)
    small = read_defect_dataset(mvtec, resize=(4, 5))
    assert small.images.shape == (9, 3, 4, 5) and small.masks.shape == (9, 4, 5)
    assert small.masks[6:].any(axis=(1, 2)).all()


def test_plain_layout_with_and_without_mask_suffix(tmp_path):
    root = tmp_path / "plain"
    _save(root / "images/good/a.png", _rgb(1))
    _save(root / "images/good/b.png", _rgb(2))
    _save(root / "images/blot/c.png", _rgb(3))
    _save(root / "images/blot/d.png", _rgb(4))
    _save(root / "masks/blot/c.png", _mask(0, 0))
    _save(root / "masks/blot/d_mask.png", _mask(3, 3))
    data = read_defect_dataset(root)
    assert data.ids.tolist() == ["images/blot/c.png", "images/blot/d.png",
                                 "images/good/a.png", "images/good/b.png"]
    assert data.labels.tolist() == [1, 1, 0, 0] and not data.train.any()
    np.testing.assert_array_equal(data.masks[1], _mask(3, 3) > 0)


def _expect(root: Path, match: str) -> None:
    with pytest.raises(ReconadError, match=match) as info:
        read_defect_dataset(root)
    assert "\n" not in str(info.value)


def test_missing_folders_and_unknown_layouts(tmp_path, mvtec):
    _expect(tmp_path / "nothing", "does not exist")
    (tmp_path / "empty").mkdir()
    _expect(tmp_path / "empty", "neither the MVTec AD layout")
    _save(tmp_path / "half/test/good/0.png", _rgb(0))
    _expect(tmp_path / "half", "lacks the folder train/good")
    _save(mvtec / "train/broken/0.png", _rgb(0))
    _expect(mvtec, "training images must be normal")


def test_a_defective_image_without_mask_and_a_mask_without_image(mvtec):
    (mvtec / "ground_truth/hole/000_mask.png").unlink()
    _expect(mvtec, r"has no mask; add .*ground_truth/hole/000_mask.png")
    _save(mvtec / "ground_truth/hole/000_mask.png", _mask(0, 0))
    _save(mvtec / "ground_truth/hole/007_mask.png", _mask(0, 0))
    _expect(mvtec, r"007_mask.png has no image")
    (mvtec / "ground_truth/hole/007_mask.png").unlink()
    _save(mvtec / "ground_truth/crack/000_mask.png", _mask(0, 0))
    _expect(mvtec, "there is no test/crack")


def test_a_mask_of_the_wrong_size_and_images_of_different_sizes(mvtec):
    _save(mvtec / "ground_truth/hole/000_mask.png", _mask(0, 0, h=9))
    _expect(mvtec, r"is 9x10 but its image .* is 8x10")
    _save(mvtec / "ground_truth/hole/000_mask.png", _mask(0, 0))
    _save(mvtec / "test/good/000.png", _rgb(0, h=12))
    _expect(mvtec, "images differ in size.*resize")


def test_unreadable_images_stray_files_and_contradictory_masks(mvtec):
    (mvtec / "test/good/000.png").write_bytes(b"not a png")
    _expect(mvtec, "not an image Pillow can read")
    _save(mvtec / "test/good/000.png", _rgb(0))
    (mvtec / "test/good/notes.txt").write_text("hi")
    _expect(mvtec, "notes.txt is not an image file")
    (mvtec / "test/good/notes.txt").unlink()
    _save(mvtec / "test/loose.png", _rgb(0))
    _expect(mvtec, "lies directly in")
    (mvtec / "test/loose.png").unlink()
    _save(mvtec / "ground_truth/good/000_mask.png", _mask(0, 0))
    _expect(mvtec, "marks defects on the good image")
    (mvtec / "ground_truth/good/000_mask.png").unlink()
    _save(mvtec / "ground_truth/hole/000.png", _mask(0, 0))
    _expect(mvtec, "has two masks")
