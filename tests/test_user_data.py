"""The user's own data (npz/npy, image folders, CSV) and load_dataset's splits and subsets."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from tolerances import assert_close

from reconad.config import DataConfig
from reconad.data import float_batch, load_dataset, load_images, load_user, prepare, split_indices
from reconad.errors import ReconadError

TRAIN_COUNTS = np.array([5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])


def u8(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


# --- arrays -------------------------------------------------------------------------------


def test_npz_grey_uint8_with_labels(tmp_path):
    x, y = u8((5, 6, 7)), np.array([3, 1, 4, 1, 5])
    np.savez(tmp_path / "d.npz", x=x, y=y)
    got_x, got_y = load_images(tmp_path / "d.npz")
    assert got_x.shape == (5, 1, 6, 7) and got_x.dtype == np.float32
    np.testing.assert_array_equal(got_x[:, 0], x.astype(np.float32) / 255)
    assert got_y.dtype == np.int64 and got_y.tolist() == [3, 1, 4, 1, 5]


def test_channels_last_and_channels_first_give_the_same_images(tmp_path):
    nhwc = u8((4, 5, 6, 3))
    np.savez(tmp_path / "last.npz", images=nhwc, labels=np.arange(4))
    np.save(tmp_path / "first.npy", nhwc.transpose(0, 3, 1, 2).astype(np.float64) / 255)
    last, _ = load_images(tmp_path / "last.npz")
    first, labels = load_images(tmp_path / "first.npy")
    assert last.shape == (4, 3, 5, 6) and labels is None
    assert_close(last[2, 1, 3, 4], nhwc[2, 3, 4, 1] / 255, what="NHWC pixel")
    assert_close(first, last, what="float64 .npy vs uint8 .npz")


def test_other_integers_in_range_and_text_labels(tmp_path):
    x = u8((3, 4, 4)).astype(np.int16)
    np.savez(tmp_path / "d.npz", x=x, y=np.array(["dog", "cat", "dog"]))
    data = load_user(tmp_path / "d.npz")
    assert data.x.dtype == np.uint8  # the same grey levels, kept small until a batch is made
    np.testing.assert_array_equal(data.x[:, 0], x)
    np.testing.assert_array_equal(float_batch(data.x)[:, 0], x / np.float32(255))
    assert data.y.tolist() == [1, 0, 1] and data.class_names == ("cat", "dog")


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.full((2, 4, 4), 300, np.int32), r"32 pixel values of .* lie outside 0\.\.255"),
        (np.array([np.nan, np.inf, -np.inf, 0.5] * 8).reshape(2, 4, 4),
         r"24 pixel values of .* are NaN or infinite; fix or drop"),
        (np.linspace(0, 255, 32).reshape(2, 4, 4),
         r"\d+ pixel values of .* outside \[0, 1\] \(min 0, max 255\); .*divide"),
        (np.zeros((2, 4, 4, 5)), r"has shape \(2, 4, 4, 5\); expected \(N, H, W\)"),
        (np.zeros((2, 4, 4), dtype=complex), r"holds complex128 values"),
    ],
)
def test_bad_arrays(tmp_path, x, message):
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(ReconadError, match=message):
        load_images(tmp_path / "x.npy")


def test_npz_without_expected_arrays_lists_what_it_has(tmp_path):
    np.savez(tmp_path / "d.npz", pixels=u8((2, 4, 4)), targets=np.arange(2))
    with pytest.raises(ReconadError, match=r"holds arrays \['pixels', 'targets'\]; expected the "
                                           r"images in an array named 'x' or 'images'"):
        load_images(tmp_path / "d.npz")


def test_npz_label_count_mismatch_and_pickle(tmp_path):
    np.savez(tmp_path / "d.npz", x=u8((3, 4, 4)), y=np.arange(2))
    with pytest.raises(ReconadError, match=r"3 images in 'x' but 2 labels in 'y'"):
        load_images(tmp_path / "d.npz")
    np.save(tmp_path / "o.npy", np.array([None, 1], dtype=object), allow_pickle=True)
    with pytest.raises(ReconadError, match=r"cannot be loaded without pickle"):
        load_images(tmp_path / "o.npy")


def test_missing_and_unsupported_paths(tmp_path):
    with pytest.raises(ReconadError, match=r"nothere\.npz does not exist; give a \.npz"):
        load_images(tmp_path / "nothere.npz")
    (tmp_path / "a.txt").write_text("hi")
    with pytest.raises(ReconadError, match=r"unsupported file type '\.txt'"):
        load_images(tmp_path / "a.txt")


def test_prepare_grayscale_and_resize():
    rgb = np.random.default_rng(1).uniform(size=(2, 3, 8, 6)).astype(np.float32)
    grey = prepare(rgb, grayscale=True)
    expected = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
    assert_close(grey[:, 0], expected, what="luma")
    constant = np.full((1, 1, 9, 9), 0.25, np.float32)
    small = prepare(constant, resize=(4, 5))
    assert small.shape == (1, 1, 4, 5) and np.allclose(small, 0.25)
    ramp = np.tile(np.linspace(0, 1, 16, dtype=np.float32), (1, 1, 16, 1))  # (1, 1, 16, 16)
    half = prepare(ramp, resize=(8, 8))[0, 0]
    assert np.all(np.diff(half[0]) > 0) and 0 <= half.min() and half.max() <= 1


# --- folders of images --------------------------------------------------------------------


def save_png(path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def test_labelled_folder_sorted_class_names(tmp_path):
    imgs = {("zebra", "a.png"): u8((6, 5), 1), ("ant", "b.png"): u8((6, 5), 2),
            ("ant", "a.png"): u8((6, 5), 3)}
    for (cls, name), pixels in imgs.items():
        save_png(tmp_path / "imgs" / cls / name, pixels)
    data = load_user(tmp_path / "imgs")
    assert data.class_names == ("ant", "zebra") and data.y.tolist() == [0, 0, 1]
    assert data.x.shape == (3, 1, 6, 5) and data.x.dtype == np.uint8  # 8-bit PNGs stay 8-bit
    np.testing.assert_array_equal(data.x[0, 0], imgs[("ant", "a.png")])  # sorted order
    np.testing.assert_array_equal(data.x[2, 0], imgs[("zebra", "a.png")])


def test_unlabelled_rgb_folder_and_grayscale(tmp_path):
    colour = u8((5, 4, 3))
    save_png(tmp_path / "f" / "c.png", colour)
    save_png(tmp_path / "f" / "g.png", u8((5, 4), 7))  # grey: promoted to 3 equal channels
    Image.fromarray(colour).save(tmp_path / "f" / "j.bmp")
    (tmp_path / "f" / ".DS_Store").write_bytes(b"\0\1")  # hidden files are skipped
    x, y = load_images(tmp_path / "f")
    assert y is None and x.shape == (3, 3, 5, 4)
    assert_close(x[0] * 255, colour.transpose(2, 0, 1), what="colour PNG")
    assert np.array_equal(x[1, 0], x[1, 2])
    grey, _ = load_images(tmp_path / "f", grayscale=True)
    pil_grey = np.asarray(Image.fromarray(colour).convert("L"), np.float32) / 255
    assert grey.shape == (3, 1, 5, 4)
    np.testing.assert_allclose(grey[0, 0], pil_grey, atol=1 / 255 + 1e-6)


def test_mixed_sizes_need_resize(tmp_path):
    save_png(tmp_path / "f" / "a.png", u8((28, 28)))
    save_png(tmp_path / "f" / "b.png", u8((32, 30)))
    with pytest.raises(ReconadError, match=r"images differ in size: .*a\.png is 28x28 \(HxW\) "
                       r"but .*b\.png is 32x30; set data\.resize \(CLI: --set "
                       r"data\.resize=\[28,28\]\)"):
        load_images(tmp_path / "f")
    x, _ = load_images(tmp_path / "f", resize=(16, 12))
    assert x.shape == (2, 1, 16, 12)


def test_folder_errors(tmp_path):
    save_png(tmp_path / "f" / "a.png", u8((4, 4)))
    (tmp_path / "f" / "notes.txt").write_text("not an image")
    with pytest.raises(ReconadError, match=r"notes\.txt is not an image Pillow can read"):
        load_images(tmp_path / "f")
    save_png(tmp_path / "g" / "cls" / "a.png", u8((4, 4)))
    save_png(tmp_path / "g" / "b.png", u8((4, 4)))
    with pytest.raises(ReconadError, match=r"holds both files \(e\.g\. b\.png\) and sub-folders"):
        load_images(tmp_path / "g")
    (tmp_path / "e").mkdir()
    with pytest.raises(ReconadError, match=r"e holds no images"):
        load_images(tmp_path / "e")


# --- CSV ----------------------------------------------------------------------------------


def write_csv(path, header, rows) -> None:
    lines = [",".join(header)] + [",".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")


def test_csv_label_and_square_pixels(tmp_path):
    pixels = u8((3, 9))
    rows = [[lbl, *p] for lbl, p in zip([7, 0, 7], pixels, strict=True)]
    write_csv(tmp_path / "m.csv", ["label"] + [f"p{i}" for i in range(9)], rows)
    x, y = load_images(tmp_path / "m.csv")
    assert x.shape == (3, 1, 3, 3) and y.tolist() == [7, 0, 7]
    assert_close(x.reshape(3, 9) * 255, pixels, what="CSV pixels")


def test_csv_label_column_anywhere_with_names(tmp_path):
    write_csv(tmp_path / "m.csv", ["a", "b", "kind", "c", "d"],
              [[0.0, 0.5, "shoe", 1.0, 0.25], [1, 1, "bag", 0, 0]])
    data = load_user(tmp_path / "m.csv", label_column="kind")
    assert data.class_names == ("bag", "shoe") and data.y.tolist() == [1, 0]
    np.testing.assert_allclose(data.x[0, 0], [[0.0, 0.5], [1.0, 0.25]])


@pytest.mark.parametrize(
    ("header", "rows", "message"),
    [
        (["label", "a", "b", "c"], [[1, 2, 3, 4]], r"3 pixel columns, not a square number"),
        (["Label", "a", "b", "c", "d"], [[1, 2, 3, 4, 5]],
         r"no column 'label' \(columns: Label, a, b, c, d\); set data\.label_column"),
        (["1", "2"], [[3, 4]], r"has no header row"),
        (["label", "a", "b", "c", "d"], [[1, 2, 3, 4, 5], [1, 2, "x", 4, 5]],
         r"cannot be read \(could not convert string 'x' to float64 at row 1, column 3\)"),
        (["label", "a", "b", "c", "d"], [[1, 2, 3, 4, 256]], r"1 pixel values .* 0\.\.255"),
        (["label", "a", "b", "c", "d"], [], r"has a header but no rows"),
    ],
)
def test_csv_errors(tmp_path, header, rows, message):
    write_csv(tmp_path / "m.csv", header, rows)
    with pytest.raises(ReconadError, match=message):
        load_images(tmp_path / "m.csv")


# --- load_dataset: splits and subsets -----------------------------------------------------


def test_user_npz_split_is_seeded_stratified_and_disjoint(tmp_path, tiny_images):
    x, y = tiny_images
    np.savez(tmp_path / "t.npz", x=x, y=y)
    ds = load_dataset(DataConfig(source=str(tmp_path / "t.npz"), test_fraction=0.25), seed=3)
    assert ds.name == "t" and ds.train_x.shape == (300, 1, 16, 16)
    assert np.bincount(ds.test_y).tolist() == [25, 25, 25, 25]
    train_idx, test_idx = split_indices(y, len(y), 0.25, seed=3)
    assert set(train_idx).isdisjoint(test_idx) and len(train_idx) + len(test_idx) == 400
    np.testing.assert_array_equal(ds.test_x, x[test_idx])
    again = load_dataset(DataConfig(source=str(tmp_path / "t.npz"), test_fraction=0.25), seed=3)
    np.testing.assert_array_equal(again.test_y, ds.test_y)
    np.testing.assert_array_equal(again.test_x, ds.test_x)


def test_npz_test_arrays_and_max_sizes(tmp_path, tiny_images):
    x, y = tiny_images
    np.savez(tmp_path / "t.npz", x=x[:300], y=y[:300], x_test=x[300:], y_test=y[300:])
    cfg = DataConfig(source=str(tmp_path / "t.npz"), max_train=40, max_test=10)
    ds = load_dataset(cfg, seed=0)
    assert len(ds.train_x) == 40 and len(ds.test_x) == 10
    assert set(ds.test_y.tolist()) == {3}  # x_test held only class 3
    assert sorted(np.bincount(ds.train_y).tolist()) == [13, 13, 14]  # 100/100/100 -> 40


def test_test_source_folder_shares_class_numbers(tmp_path):
    for cls in ("a", "b"):
        for i in range(3):
            save_png(tmp_path / "train" / cls / f"{i}.png", u8((8, 8), i))
    for cls in ("b", "c"):
        save_png(tmp_path / "test" / cls / "0.png", u8((8, 8), 9))
    cfg = DataConfig(source=str(tmp_path / "train"), test_source=str(tmp_path / "test"))
    ds = load_dataset(cfg, seed=0)
    assert ds.train_y.tolist() == [0, 0, 0, 1, 1, 1] and ds.test_y.tolist() == [1, 2]
    bad = DataConfig(source=str(tmp_path / "train"), test_source=str(tmp_path / "other"))
    save_png(tmp_path / "other" / "x.png", u8((10, 10)))
    with pytest.raises(ReconadError, match=r"training images are 1x8x8 but test images are "
                                           r"1x10x10 .* set data\.resize"):
        load_dataset(bad, seed=0)


def test_unknown_source_and_test_source_with_named_source(tmp_path):
    with pytest.raises(ReconadError, match=r"data\.source 'mnsit' is neither a named dataset "
                                           r"\(mnist, fashion-mnist, kmnist\)"):
        load_dataset(DataConfig(source="mnsit"), seed=0)
    with pytest.raises(ReconadError, match=r"mnist has its own test set: remove data\.test_source"):
        load_dataset(DataConfig(source="mnist", test_source=str(tmp_path)), seed=0)


def test_named_source_subsets(mnist_dir, monkeypatch):
    monkeypatch.delenv("RECONAD_DATA", raising=False)
    cfg = DataConfig(source="mnist", data_dir=str(mnist_dir), download=False, max_train=600,
                     max_test=100)
    ds = load_dataset(cfg, seed=0)
    assert ds.train_x.shape == (600, 1, 28, 28) and ds.image_shape == (1, 28, 28)
    counts = np.bincount(ds.train_y, minlength=10)
    assert np.all(np.abs(counts - 600 * TRAIN_COUNTS / 60000) < 1)
    assert len(ds.test_y) == 100 and set(ds.test_y.tolist()) == set(range(10))


def test_npz_labels_of_shape_n_by_1_are_flattened(tmp_path):
    """Keras and MATLAB save labels as (N, 1); they used to be refused."""
    x = np.zeros((3, 4, 4), np.uint8)
    np.savez(tmp_path / "a.npz", x=x, y=np.array([[2], [0], [2]]))
    np.savez(tmp_path / "b.npz", x=x, y=np.array([["cat"], ["ant"], ["cat"]]))
    assert load_user(tmp_path / "a.npz").y.tolist() == [2, 0, 2]
    named = load_user(tmp_path / "b.npz")
    assert named.y.tolist() == [1, 0, 1] and named.class_names == ("ant", "cat")
    np.savez(tmp_path / "c.npz", x=x, y=np.zeros((3, 2)))
    with pytest.raises(ReconadError, match=r"has shape \(3, 2\); labels must be one value"):
        load_user(tmp_path / "c.npz")
