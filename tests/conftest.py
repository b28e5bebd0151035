"""Shared fixtures: where the real MNIST lies, tiny synthetic images, a headless browser."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import Phase, settings

REPO = Path(__file__).resolve().parents[1]


def _mnist_dir() -> Path:
    env = os.environ.get("RECONAD_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data" / "mnist"


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The folder holding the four canonical MNIST IDX .gz files."""
    path = _mnist_dir()
    if not (path / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"MNIST not found in {path}; set RECONAD_DATA to the folder with the IDX files")
    return path


@pytest.fixture(scope="session")
def tiny_images() -> tuple[np.ndarray, np.ndarray]:
    """400 synthetic 1x16x16 images in [0, 1] from 4 classes (bars at class-specific rows)."""
    rng = np.random.default_rng(0)
    n, side = 400, 16
    y = np.repeat(np.arange(4), n // 4)
    x = rng.uniform(0, 0.1, size=(n, 1, side, side)).astype(np.float32)
    for cls in range(4):
        rows = slice(2 + cls * 3, 4 + cls * 3)
        x[y == cls, 0, rows, 2:14] += 0.8
    return np.clip(x, 0, 1), y.astype(np.int64)


def require_tool(available: bool, reason: str) -> None:
    """Skip when a system tool is missing, but fail in CI (CI=true), where it must be there."""
    if available:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: .ci/run must install it)")
    pytest.skip(reason)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A headless Chromium driven by Selenium (report.html, the ``reconad serve`` page)."""
    have = (CHROMIUM is not None and Path(CHROMEDRIVER).is_file()
            and importlib.util.find_spec("selenium") is not None)
    require_tool(have, "headless Chromium test needs apt `chromium chromium-driver` and pip "
                       "`selenium`")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
                 "--window-size=1280,1000"):
        options.add_argument(flag)
    # An explicit driver path: Selenium Manager never downloads anything.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


# Hypothesis: examples per property from $HYPOTHESIS_PROFILE (dev by default; CI sets ci).
# derandomize: the same examples every run, so a CI failure reproduces; benchmarks/fuzz.py
# draws fresh random ones. No shrinking: with files on disk it can take minutes, and the
# unshrunk failing input is reported all the same.
_PHASES = [Phase.explicit, Phase.reuse, Phase.generate]
settings.register_profile("dev", max_examples=30, deadline=None, derandomize=True,
                          phases=_PHASES)
settings.register_profile("ci", max_examples=300, deadline=None, derandomize=True,
                          phases=_PHASES)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
