"""docs/architecture.md stays true: it names every module, and its metrics.json contract is
exactly what a real run writes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import reconad.pipeline as pipeline
from reconad.config import load_config
from reconad.evaluation import METHODS

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "reconad"
ARCHITECTURE = REPO / "docs" / "architecture.md"


def _doc() -> str:
    return ARCHITECTURE.read_text(encoding="utf-8")


def _named(doc: str) -> set[str]:
    """Every `code span` of the document (module paths are written relative to src/reconad)."""
    return set(re.findall(r"`([^`\n]+)`", doc))


def _undocumented(modules: list[Path], named: set[str]) -> list[str]:
    missing = []
    for path in modules:
        rel = path.relative_to(PACKAGE).as_posix()
        package = rel.rsplit("/", 1)[0] + "/" if "/" in rel else None
        # A sub-package's row (`report/`) covers its __init__.py and its private modules.
        covered = package is not None and path.name.startswith("_") and package in named
        if rel not in named and not covered:
            missing.append(rel)
    return missing


def test_architecture_names_every_module():
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 20
    missing = _undocumented(modules, _named(_doc()))
    assert missing == [], f"add a row for each to docs/architecture.md: {missing}"


def test_a_new_module_without_a_row_is_caught():
    named = _named(_doc())
    assert _undocumented([PACKAGE / "brand_new.py"], named) == ["brand_new.py"]
    assert _undocumented([PACKAGE / "data" / "brand_new.py"], named) == ["data/brand_new.py"]
    assert _undocumented([PACKAGE / "newpkg" / "_private.py"], named) == ["newpkg/_private.py"]
    assert _undocumented([PACKAGE / "newpkg" / "__init__.py"], named) == ["newpkg/__init__.py"]
    assert _undocumented([PACKAGE / "report" / "_anything.py"], named) == []


def test_every_module_in_the_table_exists():
    rows = [line for line in _doc().splitlines() if line.startswith("| `")]
    listed = {name for row in rows for name in re.findall(r"`([\w/]+\.py)`", row.split("|")[1])}
    assert listed
    gone = sorted(name for name in listed if not (PACKAGE / name).is_file())
    assert gone == [], f"docs/architecture.md names modules that do not exist: {gone}"


# ---------------------------------------------------------------------------------------------
# metrics.json


def _documented_metrics() -> dict:
    match = re.search(r"### metrics\.json\n.*?```json\n(.*?)```", _doc(), re.S)
    assert match, "docs/architecture.md lost its metrics.json example"
    return json.loads(match.group(1))


def _same_as_dev(section: dict) -> bool:
    return set(section) == {"..."}


@pytest.fixture(scope="module")
def written(mnist_dir, tmp_path_factory) -> dict:
    """metrics.json of a tiny real run with every section: dev, eval and final, and every
    threshold method computable (fixed has a value)."""
    config = load_config("holdout-4-8-final", [
        "data.max_train=500", "data.max_test=400", "train.epochs=1", "threshold.value=0.05",
        f"data.data_dir={mnist_dir}"])
    out = tmp_path_factory.mktemp("contract") / "run"
    pipeline.run(config, out, progress=False, report=False)
    return json.loads((out / "metrics.json").read_text())


def test_metrics_json_contract_matches_a_real_run(written):
    doc = _documented_metrics()
    assert set(doc) == set(written), "top-level keys"
    assert set(doc["training"]) == set(written["training"])
    assert set(doc["train"]) == set(written["train"])
    group_keys = set(next(iter(doc["dev"]["groups"].values())))
    entry_keys = set(doc["dev"]["thresholds"]["youden"])
    assert list(doc["dev"]["thresholds"]) == list(METHODS)
    sets = [k for k, v in doc.items()
            if isinstance(v, dict) and ("thresholds" in v or _same_as_dev(v))]
    assert sets == ["dev", "eval", "final"]
    for name in sets:
        section = written[name]
        assert set(section) == set(doc["dev"]), name
        assert set(section["thresholds"]) == set(METHODS), name
        for method, entry in section["thresholds"].items():
            assert set(entry) == entry_keys, (name, method)
        for group, stats in section["groups"].items():
            assert set(stats) == group_keys, (name, group)
    for group, stats in written["train"]["groups"].items():
        assert set(stats) == group_keys, ("train", group)
    # The example's values have the types a run writes.
    for key in ("reconad_version", "name", "scenario", "score", "chosen_threshold"):
        assert isinstance(written[key], str) and isinstance(doc[key], str), key
    assert isinstance(written["score_parts"], list) and isinstance(doc["score_parts"], list)
    assert written["score_parts"] == ["recon"]
