"""`reconad score` reads in batches: stable ids, same scores as in memory, flat peak memory."""

from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import require_tool
from PIL import Image
from scoring_fixtures import SIDE, image_folder, train_tiny_detector

from reconad.config import ScenarioConfig
from reconad.data import Dataset, iter_batches, load_images, open_collection
from reconad.detector import Detector
from reconad.engines import Extremes, score_collection
from reconad.errors import ReconadError
from reconad.report import select_extremes
from reconad.scenarios import make_splits, resolve_class_names


@pytest.fixture(scope="module")
def detector_path(tmp_path_factory):
    return train_tiny_detector(tmp_path_factory.mktemp("det"))


@pytest.fixture(scope="module")
def detector(detector_path):
    return Detector.load(detector_path)


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_folder_streamed_by_workers_equals_in_memory_scores(detector, tmp_path):
    root = image_folder(tmp_path / "photos", side=20)
    coll = open_collection(root, detector.input_shape_, resize=(SIDE, SIDE))
    summary = score_collection(detector, coll, tmp_path / "s.csv", batch_size=7, workers=2)
    rows = read_rows(tmp_path / "s.csv")
    x, y = load_images(root, resize=(SIDE, SIDE))  # the in-memory oracle, same listing order
    expected = detector.anomaly_score(x)
    np.testing.assert_allclose([float(r["score"]) for r in rows], expected, rtol=1e-4, atol=1e-6)
    ids = [r["id"] for r in rows]
    assert ids[:2] == ["bad/000.png", "bad/001.png"]
    assert ids[12:14] == ["good/000.png", "good/001.png"] and ids[24] == "good/more/000.png"
    assert [r["class"] for r in rows] == ["bad"] * 12 + ["good"] * 24
    assert [int(r["label"]) for r in rows] == y.tolist()
    flags = (expected > detector.threshold_).astype(int)
    assert [int(r["flag"]) for r in rows] == flags.tolist()
    assert (summary.n_scored, summary.n_flagged) == (36, int(flags.sum()))
    assert not list(tmp_path.glob(".*partial*"))  # the temporary was renamed into place


def test_arrays_keep_their_dtype_and_are_named_by_position(detector, tmp_path):
    rng = np.random.default_rng(3)
    images = (rng.random((50, SIDE, SIDE)) * 255).astype(np.uint8)
    np.save(tmp_path / "x.npy", images)
    coll = open_collection(tmp_path / "x.npy", detector.input_shape_)
    assert isinstance(coll.images, np.memmap) and coll.images.dtype == np.uint8
    batches = list(iter_batches(coll, batch_size=16))
    assert [len(b.index) for b in batches] == [16, 16, 16, 2]
    assert all(b.x.dtype == np.float32 for b in batches)
    streamed = np.concatenate([detector.anomaly_score(b.x) for b in batches])
    np.testing.assert_allclose(streamed, detector.anomaly_score(images), rtol=1e-4, atol=1e-6)
    assert coll.ids(np.array([0, 49])) == ["x.npy[0]", "x.npy[49]"]
    # An .npz with (N, 1) text labels: flattened, named.
    np.savez(tmp_path / "d.npz", x=images[:4], y=np.array([["cat"], ["dog"], ["cat"], ["ant"]]))
    coll = open_collection(tmp_path / "d.npz", detector.input_shape_)
    assert coll.describe(np.arange(4)) == (
        ["d.npz[0]", "d.npz[1]", "d.npz[2]", "d.npz[3]"], pytest.approx([1, 2, 1, 0]),
        ["cat", "dog", "cat", "ant"])


def test_bad_files_stop_the_run_or_are_skipped(detector, tmp_path):
    root = tmp_path / "mixed"
    root.mkdir()
    for i in range(5):
        Image.fromarray(np.full((SIDE, SIDE), 40 * i, np.uint8)).save(root / f"{i}.png")
    (root / "2b.png").write_text("not an image")
    Image.new("L", (30, 20)).save(root / "9.png")
    coll = open_collection(root, detector.input_shape_)
    with pytest.raises(ReconadError, match=r"2b\.png is not an image Pillow can read"):
        score_collection(detector, coll, tmp_path / "s.csv", batch_size=3)
    assert not (tmp_path / "s.csv").exists()  # never a half-written file
    summary = score_collection(detector, coll, tmp_path / "s.csv", batch_size=3, skip_bad=True)
    assert [s[0] for s in summary.skipped] == ["2b.png", "9.png"]
    assert "pass --resize 16 16" in summary.skipped[1][1]
    assert [r["id"] for r in read_rows(tmp_path / "s.csv")] == [f"{i}.png" for i in range(5)]


@pytest.mark.parametrize("n", [1, 5, 9, 40])
def test_gallery_heaps_keep_what_select_extremes_picks(n):
    rng = np.random.default_rng(n)
    scores = np.round(rng.random(n), 1)  # many ties
    if n > 5:
        scores[3] = np.nan  # NaN counts as the highest score
    k = 4
    extremes = Extremes(k)
    for start in range(0, n, 3):  # batches of 3
        part = slice(start, start + 3)
        columns = {"score": scores[part], "id": [str(i) for i in range(n)][part],
                   "class": [None] * len(scores[part]), "label": [None] * len(scores[part])}
        extremes.add(columns, np.arange(n)[part])
    top, bottom = select_extremes(scores, k)
    kept_top = [e[2] for e in sorted(extremes._top, key=lambda e: e[0], reverse=True)]
    assert kept_top == top.tolist()
    kept_bottom = {e[2] for e in extremes._bottom} - set(kept_top)
    assert kept_bottom == set(bottom.tolist())


def test_gallery_file_is_written(detector, tmp_path):
    root = image_folder(tmp_path / "photos", n_per_class=3, side=SIDE)
    coll = open_collection(root, detector.input_shape_)
    score_collection(detector, coll, tmp_path / "s.csv", gallery=tmp_path / "g.png", gallery_k=2)
    with Image.open(tmp_path / "g.png") as image:
        assert image.format == "PNG" and min(image.size) > 50


def peak_rss_script(detector_path, images_path, out_path) -> str:
    """Python code scoring ``images_path`` with the CLI, then printing its peak RSS in bytes.

    The peak is /proc/self/status VmHWM (this program's own memory since exec): ru_maxrss
    would also count the memory of the pytest process the child was forked from.
    """
    return textwrap.dedent(f"""
        import resource, sys
        import reconad.data._collections
        from reconad.cli import main
        reconad.data._collections.RELEASE_BYTES = 2**20  # small files here: give pages back often
        sys.argv = ["reconad", "score", {str(detector_path)!r}, {str(images_path)!r},
                    "--out", {str(out_path)!r}, "--batch-size", "512"]
        try:
            main()
        except SystemExit as exc:
            assert not exc.code, exc.code
        try:
            status = open("/proc/self/status").read().split("VmHWM:")[1]
            print(int(status.split()[0]) * 1024)
        except OSError:  # not Linux
            print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    """)


def test_peak_memory_does_not_grow_with_the_number_of_images(detector_path, tmp_path):
    """Score memory-mapped .npy files of N and 4N images; the peak RSS must stay flat.

    Pages read from a memory map count in the RSS until they are given back (every
    ``RELEASE_BYTES``, set to 1 MiB in the child here): the allowed growth is a third of the
    extra file size (30 MB here) — keeping the read pages, as scoring did before, grows by
    the whole extra file, and holding the images as float32 by four times it.
    """
    n = 40_000
    rng = np.random.default_rng(0)
    peaks = {}
    for count in (n, 4 * n):
        path = tmp_path / f"x{count}.npy"
        images = np.lib.format.open_memmap(path, "w+", np.uint8, (count, SIDE, SIDE))
        for start in range(0, count, n):  # written in parts: this process stays small too
            images[start:start + n] = rng.integers(0, 256, (n, SIDE, SIDE), dtype=np.uint8)
        images.flush()
        del images
        out = tmp_path / f"s{count}.csv"
        done = subprocess.run([sys.executable, "-c", peak_rss_script(detector_path, path, out)],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        peaks[count] = int(done.stdout.split()[-1])
        with open(out) as handle:
            assert sum(1 for _ in handle) == count + 1
    extra_file = 3 * n * SIDE * SIDE  # bytes of uint8 pixels in the 3N extra images
    growth = peaks[4 * n] - peaks[n]
    assert growth < extra_file / 3, (peaks, extra_file)


def test_classes_selected_by_name():
    y = np.repeat(np.arange(3), 20)
    x = np.zeros((60, 1, 4, 4), np.float32)
    data = Dataset("toy", x, y, x, y, class_names=("bad", "good", "odd"))
    cfg = ScenarioConfig(kind="holdout", normal=["good"], dev_anomaly=["bad"], eval_anomaly=[2])
    resolved = resolve_class_names(cfg, data)
    assert (resolved.normal, resolved.dev_anomaly, resolved.eval_anomaly) == ([1], [0], [2])
    by_number = make_splits(data, ScenarioConfig(normal=[1], dev_anomaly=[0], eval_anomaly=[2]), 0)
    assert make_splits(data, cfg, 0).sizes() == by_number.sizes()
    with pytest.raises(ReconadError, match=r"names class 'gud'.*known classes: bad, good, odd"):
        resolve_class_names(ScenarioConfig(normal=["gud"]), data)
    with pytest.raises(ReconadError, match=r"classes \[1\] are both normal and anomalous"):
        resolve_class_names(ScenarioConfig(normal=["good"], dev_anomaly=[1]), data)
    unnamed = Dataset("toy", x, y, x, y)
    with pytest.raises(ReconadError, match=r"has no class names"):
        resolve_class_names(ScenarioConfig(normal=["good"]), unnamed)


def test_parquet_of_encoded_images_scores_like_the_same_files(detector, tmp_path):
    require_tool(importlib.util.find_spec("pyarrow") is not None,
                 'pyarrow is not installed (pip install "reconad[ray]")')
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = image_folder(tmp_path / "photos", n_per_class=4, side=20)
    coll = open_collection(root, detector.input_shape_, resize=(SIDE, SIDE))
    score_collection(detector, coll, tmp_path / "files.csv", batch_size=5)
    files = read_rows(tmp_path / "files.csv")
    encoded = [(root / r["id"]).read_bytes() for r in files]
    table = pa.table({"image": encoded, "label": [r["class"] for r in files]})
    pq.write_table(table, tmp_path / "x.parquet", row_group_size=5)
    coll = open_collection(tmp_path / "x.parquet", detector.input_shape_, resize=(SIDE, SIDE))
    score_collection(detector, coll, tmp_path / "pq.csv", batch_size=3)
    rows = read_rows(tmp_path / "pq.csv")
    assert [r["id"] for r in rows] == [f"x.parquet[{i}]" for i in range(12)]
    assert [r["class"] for r in rows] == [r["class"] for r in files]
    np.testing.assert_allclose([float(r["score"]) for r in rows],
                               [float(r["score"]) for r in files], rtol=1e-4, atol=1e-6)
    # The Hugging Face layout: image = {bytes, path}, ids from an "id" column.
    struct = [{"bytes": b, "path": r["id"]} for b, r in zip(encoded, files, strict=True)]
    struct[1] = {"bytes": b"not an image", "path": "x"}
    pq.write_table(pa.table({"id": [r["id"] for r in files], "image": struct}),
                   tmp_path / "hf.parquet")
    coll = open_collection(tmp_path / "hf.parquet", detector.input_shape_, resize=(SIDE, SIDE))
    assert coll.ids(np.array([0, 5])) == [files[0]["id"], files[5]["id"]]
    with pytest.raises(ReconadError, match=r"row 1 \(bad/001\.png\) of .*hf\.parquet is not an "
                                           r"image"):
        score_collection(detector, coll, tmp_path / "hf.csv")
    pq.write_table(pa.table({"pixels": [b"x"]}), tmp_path / "bad.parquet")
    with pytest.raises(ReconadError, match=r"expected the encoded images .* named 'image'"):
        open_collection(tmp_path / "bad.parquet", detector.input_shape_)
