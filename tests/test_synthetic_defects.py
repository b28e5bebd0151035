"""The generated defect benchmark: builds, reads back, exact masks, seeded; family 1 (colour
patches of photographed textures) and family 2 (procedural grey textures, testing only)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from reconad.data import (
    DEFECT_KINDS,
    GREY_DEFECT_KINDS,
    GREY_TEXTURES,
    add_defect,
    add_grey_defect,
    grey_patches,
    make_defect_dataset,
    make_grey_defect_dataset,
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


# Flat patches: the mean colour of a flat patch is the patch, a channel rotation of grey is grey,
# black scaled darker stays black and white scaled brighter stays white; grey, black, white and
# one colour, twice each, so every kind meets each of them.
FLAT = [(128, 128, 128), (0, 0, 0), (255, 255, 255), (200, 60, 30)] * 2


@pytest.mark.parametrize("kind", DEFECT_KINDS)
@pytest.mark.parametrize("size", [32, 64])
def test_masks_cover_exactly_the_changed_pixels(kind, size):
    rng = np.random.default_rng(0)
    texture = texture_image("gravel")
    patches = random_patches(texture, 48, size, (0, 512), rng)
    others = random_patches(texture_image("grass"), 48, size, (0, 512), rng)
    patches[:len(FLAT)] = np.array(FLAT, np.uint8)[:, :, None, None]
    others[:len(FLAT)] = patches[:len(FLAT)]  # a missing piece from a flat other patch too
    for patch, other in zip(patches, others, strict=True):
        out, mask = add_defect(patch, kind, rng, other)
        changed = (out != patch).any(axis=0)
        assert mask.any() and mask.mean() < 0.06
        assert not (changed & ~mask).any()  # nothing changes outside the mask
        if kind in ("scratch", "blot"):
            np.testing.assert_array_equal(changed, mask)
        else:  # the region's pixels may keep their value by chance, but most change
            assert changed.sum() >= 0.5 * mask.sum(), (kind, patch[:, 0, 0])


def test_a_defect_on_a_flat_patch_is_still_there_to_find():
    """Regression: a missing piece filled with a flat patch's mean colour, or a hue rotation of
    a grey patch, changed no pixel, yet its mask called the region defective."""
    rng = np.random.default_rng(5)
    grey = np.full((3, 32, 32), 128, np.uint8)
    for kind in ("missing", "color"):
        for _ in range(20):
            out, mask = add_defect(grey, kind, rng)
            assert (out[:, mask] != grey[:, mask]).any(axis=0).all(), kind


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


# Family 2: grey textures, for testing only. Grey means one channel (C = 1), saved as 8-bit
# grey PNGs and read back as (N, 1, H, W), as MVTec AD stores its grey categories.


@pytest.fixture(scope="module")
def tiny_grey(tmp_path_factory):
    root = tmp_path_factory.mktemp("grey") / "wood"
    return make_grey_defect_dataset(root, "wood", n_train=6, n_test_good=3, n_test_defect=8,
                                    size=32, seed=3)


def test_family_2_builds_and_reads_back_as_one_grey_channel(tiny_grey):
    from PIL import Image

    data = read_defect_dataset(tiny_grey)
    assert data.images.shape == (17, 1, 32, 32) and data.images.dtype == np.uint8
    assert data.train.sum() == 6 and (data.kinds[~data.train] == "good").sum() == 3
    for kind in GREY_DEFECT_KINDS:
        assert (data.kinds == kind).sum() == 2
    assert data.masks[data.labels == 1].any(axis=(1, 2)).all()
    assert not data.masks[data.labels == 0].any()
    with Image.open(tiny_grey / "test/cut/001.png") as image:
        assert image.mode == "L"
    info = json.loads((tiny_grey / "dataset.json").read_text())
    assert info["family"] == 2 and "never used to choose" in info["use"]
    assert info["defects"] == dict.fromkeys(GREY_DEFECT_KINDS, 2)


def test_family_2_the_same_seed_gives_the_same_files_and_another_seed_other_files(
        tiny_grey, tmp_path):
    again = make_grey_defect_dataset(tmp_path / "again", "wood", 6, 3, 8, size=32, seed=3)
    other = make_grey_defect_dataset(tmp_path / "other", "wood", 6, 3, 8, size=32, seed=4)
    files = sorted(p.relative_to(tiny_grey) for p in tiny_grey.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((tiny_grey / f).read_bytes() == (again / f).read_bytes() for f in files)
    for name in ("train/good/000.png", "test/stain/000.png", "ground_truth/cut/000_mask.png"):
        assert (tiny_grey / name).read_bytes() != (other / name).read_bytes()


def test_family_2_more_test_images_leave_the_training_images_alone(tiny_grey, tmp_path):
    more = make_grey_defect_dataset(tmp_path / "more", "wood", 6, 5, 12, size=32, seed=3)
    for i in range(6):
        name = f"train/good/{i:03d}.png"
        assert (tiny_grey / name).read_bytes() == (more / name).read_bytes()


@pytest.mark.parametrize("kind", GREY_DEFECT_KINDS)
@pytest.mark.parametrize("texture", GREY_TEXTURES)
@pytest.mark.parametrize("size", [32, 64])
def test_family_2_masks_are_exact(kind, texture, size):
    rng = np.random.default_rng(0)
    patches = grey_patches(texture, 30, size, rng)
    patches[:3] = 128  # flat patches: every kind must still change its region
    for patch in patches:
        out, mask = add_grey_defect(patch, kind, rng, texture)
        assert out.shape == patch.shape == (1, size, size) and out.dtype == np.uint8
        changed = (out != patch)[0]
        assert mask.any() and mask.mean() < 0.08
        np.testing.assert_array_equal(out[0][~mask], patch[0][~mask])  # bit for bit outside
        assert changed[mask].mean() >= 0.5
        if kind != "swap":  # the mask is the set of changed pixels
            np.testing.assert_array_equal(changed, mask)


def test_family_2_defects_are_one_to_four_percent_of_a_64_pixel_patch():
    rng = np.random.default_rng(1)
    patches = grey_patches("metal", 50, 64, rng)
    sizes = [add_grey_defect(p, kind, rng, "metal")[1].mean()
             for kind in GREY_DEFECT_KINDS for p in patches]
    assert 0.01 < np.mean(sizes) < 0.04


@pytest.mark.parametrize("texture", GREY_TEXTURES)
def test_family_2_normal_variation_is_larger_than_a_subtle_defects_change(texture):
    """The point of the family: lighting moves whole normal images by more than a stain, a
    swap or a dent moves its region's mean, so brightness alone does not find them (a cut is
    dark on purpose)."""
    rng = np.random.default_rng(2)
    patches = grey_patches(texture, 200, 64, rng)
    spread = patches.reshape(len(patches), -1).mean(axis=1).std()  # ~14 grey levels
    for kind in ("stain", "swap", "dent"):
        shifts = []
        for patch in patches[:60]:
            out, mask = add_grey_defect(patch, kind, rng, texture)
            shifts.append(abs(out[0][mask].mean() - patch[0][mask].astype(np.float64).mean()))
        assert max(shifts) < spread / 1.4, (kind, max(shifts), spread)


def test_family_2_textures_differ_from_each_other_and_from_image_to_image():
    rng = np.random.default_rng(3)
    patches = {t: grey_patches(t, 20, 64, rng).astype(np.float64) for t in GREY_TEXTURES}
    for t, p in patches.items():
        assert p.shape == (20, 1, 64, 64)
        assert (np.diff(p, axis=0) != 0).any(axis=(1, 2, 3)).all()  # no two neighbours alike
        across, along = np.abs(np.diff(p, axis=2)).mean(), np.abs(np.diff(p, axis=3)).mean()
        if t == "grain":  # granular: no direction
            assert 0.8 < across / along < 1.25
        else:  # wood grain and brushed metal run along the rows
            assert across > 1.5 * along


def test_family_2_bad_arguments_are_one_line_errors(tiny_grey, tmp_path):
    with pytest.raises(ReconadError, match="unknown grey texture"):
        make_grey_defect_dataset(tmp_path / "x", "brick")
    with pytest.raises(ReconadError, match="patch size"):
        make_grey_defect_dataset(tmp_path / "x", "wood", 2, 1, 1, size=8)
    with pytest.raises(ReconadError, match="unknown grey defect kinds"):
        make_grey_defect_dataset(tmp_path / "x", "wood", 2, 1, 1, size=32, kinds=("scratch",))
    with pytest.raises(ReconadError, match="not empty"):
        make_grey_defect_dataset(tiny_grey, "wood", 2, 1, 1, size=32)
    with pytest.raises(ReconadError, match="unknown grey defect kind"):
        add_grey_defect(np.zeros((1, 32, 32), np.uint8), "blot", np.random.default_rng(0))
    with pytest.raises(ReconadError, match="unknown grey texture"):
        grey_patches("marble", 1, 32, np.random.default_rng(0))
