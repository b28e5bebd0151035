"""Runs name images and classes in the user's words: an image read from a file is named by
its path relative to the source (scores.csv, samples.npz, report captions), and a class with a
name (a folder, a defect kind) names its group. Every image here carries its own index in its
first pixel and its class and index in its file name, so each row's id is checked against the
image it stands for: through seeded splits, subsets, streaming, scenarios and whole runs."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import reconad.pipeline as pipeline
from reconad.config import DataConfig, ScenarioConfig, load_config
from reconad.data import SOURCES, Dataset, load_dataset
from reconad.errors import ReconadError
from reconad.report import image_caption, overlay_caption, short_id
from reconad.scenarios import class_group, make_splits
from reconad.sweep import score_gap

SIDE = 8
CLASSES = {"good": 40, "smooth": 30, "scratch": 20, "dent": 20}  # sub-folders, sorted on load
NORMAL = {"good", "smooth"}
NAME = re.compile(r"(?:^|/)([a-z]+)_(\d{3})\.png(\+\w+)?$")  # .../scratch_017.png[+noise]


def _write_image(path: Path, index: int, rng: np.random.Generator, side: int = SIDE) -> None:
    image = rng.integers(0, 256, (side, side), dtype=np.uint8)
    image[0, 0] = index  # the image knows which file it is
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def _write_classes(root: Path, counts: dict[str, int], first: int = 0) -> Path:
    """``root/<class>/<class>_<index>.png``, indices counted from ``first`` over all classes."""
    rng = np.random.default_rng(first)
    index = first
    for cls, n in counts.items():
        for _ in range(n):
            _write_image(root / cls / f"{cls}_{index:03d}.png", index, rng)
            index += 1
    return root


def _parse(image_id: str) -> tuple[str, int, str]:
    """(class, index, noise suffix) that a file id names."""
    match = NAME.search(image_id)
    assert match, image_id
    return match.group(1), int(match.group(2)), (match.group(3) or "")[1:]


def _first_pixels(images) -> np.ndarray:
    """The index each image carries: its first pixel as a grey level 0..255."""
    x = np.asarray(images)
    first = x.reshape(len(x), -1)[:, 0]
    return first.astype(int) if x.dtype == np.uint8 else np.rint(first * 255).astype(int)


def _check_named(ids, images, labels, class_names, root: Path, prefix: str = "") -> None:
    """Each id is ``prefix`` + a file's path under ``root``, and the file's name gives the
    image's index and class."""
    assert len(ids) == len(images) == len(labels) > 0
    for image_id, index, label in zip(ids.tolist(), _first_pixels(images), labels.tolist(),
                                      strict=True):
        assert image_id.startswith(prefix), image_id
        assert (root / image_id.removeprefix(prefix)).is_file(), image_id
        cls, number, _ = _parse(image_id)
        assert (number, cls) == (index, class_names[label]), image_id


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> Path:
    return _write_classes(tmp_path_factory.mktemp("parts") / "parts", CLASSES)


@pytest.mark.parametrize("stream", [False, True])
def test_folder_ids_follow_their_images_through_the_split_and_subsets(parts, stream):
    data = load_dataset(DataConfig(source=str(parts), test_fraction=0.3, max_train=40,
                                   max_test=20, stream=stream), seed=3)
    assert data.class_names == ("dent", "good", "scratch", "smooth")
    assert (len(data.train_x), len(data.test_x)) == (40, 20)
    _check_named(data.train_ids, data.train_x, data.train_y, data.class_names, parts)
    _check_named(data.test_ids, data.test_x, data.test_y, data.class_names, parts)
    assert not set(data.train_ids.tolist()) & set(data.test_ids.tolist())


@pytest.mark.parametrize("stream", [False, True])
def test_a_separate_test_folder_names_its_images_behind_test(parts, tmp_path, stream):
    held = _write_classes(tmp_path / "held", {"good": 6, "scratch": 3, "dent": 3}, first=150)
    data = load_dataset(DataConfig(source=str(parts), test_source=str(held), max_test=8,
                                   stream=stream), seed=0)
    _check_named(data.train_ids, data.train_x, data.train_y, data.class_names, parts)
    _check_named(data.test_ids, data.test_x, data.test_y, data.class_names, held, "test/")
    assert len(data.test_ids) == 8


def test_a_class_folder_named_test_beside_a_test_source_is_refused(tmp_path):
    source = _write_classes(tmp_path / "src", {"good": 3, "test": 2})
    held = tmp_path / "held"  # unlabelled: its image's id is test/test_003.png
    _write_image(held / "test_003.png", 3, np.random.default_rng(0))
    with pytest.raises(ReconadError, match="class folder test/.*rename that class folder"):
        load_dataset(DataConfig(source=str(source), test_source=str(held)), seed=0)


@pytest.mark.parametrize("kind", ["holdout", "one-class", "corruption"])
def test_scenario_sets_name_files_and_group_by_folder(parts, kind):
    data = load_dataset(DataConfig(source=str(parts), test_fraction=0.3), seed=1)
    cfg = {"holdout": ScenarioConfig(kind="holdout", dev_anomaly=["scratch"],
                                     eval_anomaly=["dent"]),
           "one-class": ScenarioConfig(kind="one-class", normal=["good", "smooth"]),
           "corruption": ScenarioConfig(kind="corruption", noise="gaussian",
                                        corrupt_fraction=0.2, dev_anomaly_fraction=0.2)}[kind]
    splits = make_splits(data, cfg, seed=1)
    for s in splits.sets.values():
        assert len(set(s.ids.tolist())) == len(s.ids)
        clean = np.array([not i.endswith("+gaussian") for i in s.ids.tolist()])
        for image_id, index, group, label, anomalous in zip(
                s.ids.tolist(), _first_pixels(s.x), s.group.tolist(), s.label.tolist(),
                s.is_anomaly.tolist(), strict=True):
            cls, number, noise = _parse(image_id)
            assert (parts / image_id.removesuffix("+gaussian")).is_file()
            assert data.class_names[label] == cls
            if kind == "corruption":
                assert group == ("gaussian 0.2" if noise else "normal") and anomalous == bool(noise)
            else:
                assert group == ("normal" if cls in NORMAL else cls) and not noise
            if not noise:
                assert index == number, image_id
        assert clean.any()


def test_groups_name_classes_that_have_names_and_keep_numbers_as_they_were():
    fashion = SOURCES["fashion-mnist"].classes
    assert class_group(1, fashion) == "Trouser"
    assert class_group(8, SOURCES["mnist"].classes) == "class 8"  # MNIST's names are digits
    assert class_group(8, None) == "class 8"
    assert class_group(0, ("3", "7")) == "class 3"  # a folder named 3 is class 3, not class 0
    assert class_group(1, ("good", "normal")) == "class normal"  # never mistaken for normals
    y = np.arange(60) % 3
    x = np.zeros((60, 1, 2, 2), np.float32)
    data = Dataset("toy", x, y, x, y, class_names=("T-shirt/top", "Trouser", "Pullover"))
    sizes = make_splits(data, ScenarioConfig(kind="contamination", normal=["T-shirt/top"],
                                             contaminant=["Trouser"], contamination=0.1),
                        seed=0).sizes()
    assert sizes["dev"] == {"normal": 20, "planted Trouser": 2}
    assert sizes["eval"] == {"normal": 20, "Trouser": 2}
    # the sweeps' score gap pools every group but the normal one, whatever its name
    assert score_gap({"normal": {"n": 2, "mean": 0.1}, "blowhole": {"n": 1, "mean": 0.4},
                      "break": {"n": 1, "mean": 0.6}}) == pytest.approx(0.4)


def test_captions_keep_the_file_name_of_a_long_id():
    assert short_id("test/blowhole/exp1_num_4.jpg") == "…/exp1_num_4.jpg"
    assert short_id("good/0001.png") == "good/0001.png"
    assert short_id("test:123+gaussian") == "test:123+gaussian"
    assert short_id("test/good/x.png+gaussian", 20) == "…/x.png+gaussian"
    assert short_id("a/" + "n" * 30 + ".png", 12) == "…" + "n" * 7 + ".png"
    assert image_caption(0.5, "blowhole", "test/blowhole/exp1_num_4.jpg") == (
        "0.5\nlabel blowhole\n…/exp1_num_4.jpg")
    assert image_caption(0.5, 8, "test:123") == "0.5\nlabel 8\ntest:123"  # MNIST as it was
    assert image_caption(0.5, -1) == "0.5\nlabel ?"
    assert overlay_caption(7.0, "test/break/exp6_num_194304.jpg") == (
        "…/break/exp6_num_194304.jpg\nscore 7")


# ------------------------------------------------------------------------------- whole runs


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "scores.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def _description(png: Path) -> str:
    with Image.open(png) as image:
        return image.info.get("Description", "")


@pytest.fixture(scope="module")
def folder_run(parts, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("folder-run") / "run"
    config = load_config("default", [
        f"data.source={parts}", "data.test_fraction=0.3", "scenario.dev_anomaly=[scratch]",
        "scenario.eval_anomaly=[dent]", "train.epochs=1", "model.hidden=[16]",
        "model.latent=4", "train.threads=1"])
    pipeline.run(config, out, progress=False)
    return out


def test_a_folder_run_names_its_rows_by_file_and_its_groups_by_folder(parts, folder_run):
    metrics = json.loads((folder_run / "metrics.json").read_text())
    names = metrics["class_names"]
    assert names == ["dent", "good", "scratch", "smooth"]
    assert set(metrics["dev"]["groups"]) == {"normal", "scratch"}
    assert set(metrics["eval"]["groups"]) == {"normal", "dent"}
    splits = json.loads((folder_run / "splits.json").read_text())
    assert splits["dev"] == {"normal": 21, "scratch": 6} and splits["eval"]["dent"] == 6
    rows = _rows(folder_run)
    assert {r["set"] for r in rows} == {"dev", "eval"}
    for row in rows:
        assert (parts / row["id"]).is_file(), row["id"]
        cls, _, _ = _parse(row["id"])
        assert row["group"] == ("normal" if cls in NORMAL else cls)
        assert names[int(row["label"])] == cls
        assert row["is_anomaly"] == str(int(cls not in NORMAL))
    with np.load(folder_run / "samples.npz") as samples:  # the pictured images are their ids'
        ids, images = samples["ids"], samples["images"]
        scores, labels, kinds = samples["scores"], samples["labels"], samples["kinds"]
    np.testing.assert_array_equal(_first_pixels(images), [_parse(i)[1] for i in ids])
    gallery = _description(folder_run / "plots" / "gallery.png")
    for k in np.flatnonzero(np.isin(kinds, ["top", "bottom"])):
        caption = image_caption(scores[k], names[labels[k]], ids[k]).replace("\n", ", ")
        assert caption in gallery
    assert "label dent" in gallery and "/dent_" in gallery
    assert _description(folder_run / "plots" / "classes_eval.png") == (
        "Classes: dent, good, smooth")
    report = (folder_run / "report.html").read_text()
    assert 'data-group="dent"' in report and 'data-group="scratch"' in report


DEFECT_SIDE = 32


def _write_defects(root: Path) -> Path:
    """MVTec layout, grey: a defect's mask is a bar on the row its index names."""
    rng = np.random.default_rng(7)
    index = 0
    for folder, n in (("train/good", 24), ("test/good", 4), ("test/blowhole", 4),
                      ("test/break", 4)):
        kind = folder.split("/")[1]
        for _ in range(n):
            name = f"{kind}_{index:03d}"
            _write_image(root / folder / f"{name}.png", index, rng, side=DEFECT_SIDE)
            if kind != "good":
                mask = np.zeros((DEFECT_SIDE, DEFECT_SIDE), np.uint8)
                mask[2 + index % 12, 3:9] = 255
                (root / "ground_truth" / kind).mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask).save(root / "ground_truth" / kind / f"{name}_mask.png")
            index += 1
    return root


def _mask_of(root: Path, image_id: str) -> np.ndarray:
    _, kind, name = image_id.split("/")
    path = root / "ground_truth" / kind / name.replace(".png", "_mask.png")
    if not path.is_file():
        return np.zeros((DEFECT_SIDE, DEFECT_SIDE), bool)
    with Image.open(path) as mask:
        return np.asarray(mask) > 127


def test_defect_ids_keep_their_masks_through_a_subset(tmp_path):
    root = _write_defects(tmp_path / "mtd")
    data = load_dataset(DataConfig(source=str(root), max_train=10, max_test=6), seed=2)
    assert data.class_names == ("good", "blowhole", "break")
    _check_named(data.train_ids, data.train_x, data.train_y, data.class_names, root)
    _check_named(data.test_ids, data.test_x, data.test_y, data.class_names, root)
    assert all(i.startswith("train/good/") for i in data.train_ids.tolist())
    assert all(i.startswith("test/") for i in data.test_ids.tolist())
    for image_id, mask in zip(data.test_ids.tolist(), data.masks, strict=True):
        np.testing.assert_array_equal(mask, _mask_of(root, image_id))


def test_a_defect_run_names_rows_by_file_overlays_by_file_and_groups_by_kind(tmp_path):
    root = _write_defects(tmp_path / "mtd")
    config = load_config("defects-ssim", [
        f"data.source={root}", "train.epochs=1", "model.channels=[4,4]", "train.crop=16",
        "scenario.val_fraction=0.2", "train.threads=1"])
    pipeline.run(config, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["class_names"] == ["good", "blowhole", "break"]
    assert set(metrics["eval"]["groups"]) == {"normal", "blowhole", "break"}
    assert set(metrics["eval"]["localization"]["groups"]) == {"blowhole", "break"}
    rows = _rows(run)
    assert {r["id"].split("/")[0] for r in rows if r["set"] == "dev"} == {"train"}
    assert {r["id"].split("/")[0] for r in rows if r["set"] == "eval"} == {"test"}
    for row in rows:
        assert (root / row["id"]).is_file()
        kind = row["id"].split("/")[1]
        assert row["group"] == ("normal" if kind == "good" else kind)
        assert metrics["class_names"][int(row["label"])] == kind == _parse(row["id"])[0]
    with np.load(run / "samples.npz") as samples:
        ids, images, masks = samples["ids"], samples["images"], samples["masks"]
        scores, kinds = samples["scores"], samples["kinds"]
    np.testing.assert_array_equal(_first_pixels(images), [_parse(i)[1] for i in ids])
    for image_id, mask in zip(ids.tolist(), masks, strict=True):
        np.testing.assert_array_equal(mask, _mask_of(root, image_id))
    overlays = _description(run / "plots" / "overlays.png")
    for k in np.flatnonzero(kinds == "top")[:8]:
        assert overlay_caption(scores[k], ids[k]).replace("\n", ", ") in overlays


@pytest.mark.parametrize("max_test", [None, 12])
def test_a_split_arrays_file_names_images_by_their_position_in_the_file(tmp_path, max_test):
    """Regression: a .npz split by data.test_fraction named its test images by their position
    after the split (test:0, test:1...), not in the file as the docs say."""
    x = np.random.default_rng(0).integers(0, 256, (60, SIDE, SIDE), dtype=np.uint8)
    x[:, 0, 0] = np.arange(60)  # each image carries its position in the file
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(60) % 3)
    data = load_dataset(DataConfig(source=str(tmp_path / "d.npz"), max_test=max_test), seed=4)
    for images, index in ((data.train_x, data.train_index), (data.test_x, data.test_index)):
        assert _first_pixels(images).tolist() == index.tolist()
    assert not set(data.train_index.tolist()) & set(data.test_index.tolist())
    splits = make_splits(data, ScenarioConfig(kind="one-class", normal=[0]), seed=4)
    named = 0
    for s in splits.sets.values():  # dev: validation and training images; eval: test images
        for i, image_id in enumerate(s.ids):
            origin, position = image_id.split(":")
            assert _first_pixels(np.asarray(s.x)[i:i + 1])[0] == int(position), image_id
            named += origin == "test"
    assert named == len(data.test_x)
