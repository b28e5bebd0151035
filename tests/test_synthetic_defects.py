"""The generated defect benchmark: builds, reads back, exact masks, seeded."""

from __future__ import annotations

import json

import numpy as np
import pytest

from reconad.data import (
    DEFECT_KINDS,
    add_defect,
    make_defect_dataset,
    random_patches,
    read_defect_dataset,
    texture_image,
)
from reconad.errors import ReconadError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("defects") / "brick"
    return make_defect_dataset(root, "brick", n_train=6, n_test_good=3, n_test_defect=8,
                               size=32, seed=3)


def test_a_tiny_copy_builds_and_reads_back_in_the_mvtec_layout(tiny):
    data = read_defect_dataset(tiny)
    assert data.images.shape == (17, 3, 32, 32) and data.images.dtype == np.uint8
    assert data.train.sum() == 6 and (data.kinds[~data.train] == "good").sum() == 3
    for kind in DEFECT_KINDS:
        assert (data.kinds == kind).sum() == 2
    assert data.masks[data.labels == 1].any(axis=(1, 2)).all()
    assert not data.masks[data.labels == 0].any()
    assert "test/scratch/001.png" in data.ids.tolist()
    info = json.loads((tiny / "dataset.json").read_text())
    assert info["seed"] == 3 and info["defects"] == dict.fromkeys(DEFECT_KINDS, 2)


def test_the_same_seed_gives_the_same_files_and_another_seed_other_files(tiny, tmp_path):
    again = make_defect_dataset(tmp_path / "again", "brick", 6, 3, 8, size=32, seed=3)
    other = make_defect_dataset(tmp_path / "other", "brick", 6, 3, 8, size=32, seed=4)
    files = sorted(p.relative_to(tiny) for p in tiny.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((tiny / f).read_bytes() == (again / f).read_bytes() for f in files)
    assert (tiny / "test/blot/000.png").read_bytes() != (other / "test/blot/000.png").read_bytes()


@pytest.mark.parametrize("kind", DEFECT_KINDS)
@pytest.mark.parametrize("size", [32, 64])
def test_masks_cover_exactly_the_changed_pixels(kind, size):
    rng = np.random.default_rng(0)
    texture = texture_image("gravel")
    patches = random_patches(texture, 40, size, (0, 512), rng)
    others = random_patches(texture_image("grass"), 40, size, (0, 512), rng)
    patches[:5] = 128  # flat patches: a drawn colour must still differ from what it covers
    for patch, other in zip(patches, others, strict=True):
        out, mask = add_defect(patch, kind, rng, other)
        changed = (out != patch).any(axis=0)
        assert mask.any() and mask.mean() < 0.06
        assert not (changed & ~mask).any()  # nothing changes outside the mask
        if kind in ("scratch", "blot"):
            np.testing.assert_array_equal(changed, mask)
        else:
            assert changed.mean() > 0.5 * mask.mean() or kind == "missing"


def test_defects_are_about_one_percent_of_a_64_pixel_patch():
    rng = np.random.default_rng(1)
    patch = random_patches(texture_image("brick"), 1, 64, (0, 512), rng)[0]
    sizes = [add_defect(patch, kind, rng)[1].mean() for kind in DEFECT_KINDS for _ in range(50)]
    assert 0.005 < np.mean(sizes) < 0.03


def test_textures_are_rgb_ramps_of_the_bundled_grey_images():
    import skimage.data

    for name in ("brick", "grass", "gravel"):
        rgb = texture_image(name)
        grey = getattr(skimage.data, name)()
        assert rgb.shape == (3, *grey.shape) and rgb.dtype == np.uint8
        # the ramp is monotone: brighter grey -> brighter colour in every channel
        order = np.argsort(grey.ravel(), kind="stable")
        assert all((np.diff(ch.ravel()[order].astype(int)) >= 0).all() for ch in rgb)


def test_bad_arguments_are_one_line_errors(tiny, tmp_path):
    with pytest.raises(ReconadError, match="unknown texture"):
        make_defect_dataset(tmp_path / "x", "marble")
    with pytest.raises(ReconadError, match="patch size"):
        make_defect_dataset(tmp_path / "x", "brick", 2, 1, 1, size=200)
    with pytest.raises(ReconadError, match="unknown defect kinds"):
        make_defect_dataset(tmp_path / "x", "brick", 2, 1, 1, size=32, kinds=("dent",))
    with pytest.raises(ReconadError, match="not empty"):
        make_defect_dataset(tiny, "brick", 2, 1, 1, size=32)
    with pytest.raises(ReconadError, match="unknown defect kind"):
        add_defect(np.zeros((3, 32, 32), np.uint8), "dent", np.random.default_rng(0))
