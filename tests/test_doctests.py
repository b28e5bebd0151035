"""Every docstring example in reconad runs and prints what it shows (``python -m doctest``).

An example that cannot run quickly on tiny data says ``# doctest: +SKIP`` on its line.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import reconad

MODULES = sorted(info.name for info in pkgutil.walk_packages(reconad.__path__, "reconad.")
                 if not info.name.endswith("__main__"))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             verbose=False, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
