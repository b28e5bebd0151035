"""Atomic directories: the lock refuses a second writer, a resume keeps the partial folder."""

from __future__ import annotations

import pytest

from reconad.errors import ReconadError
from reconad.files import atomic_directory, lock_name, partial_dir_name


def test_a_second_writer_of_the_same_directory_is_refused(tmp_path):
    out = tmp_path / "run"
    with atomic_directory(out) as tmp:
        (tmp / "a.txt").write_text("first")
        with pytest.raises(ReconadError, match=r"another reconad process \(pid \d+\) is writing"):
            with atomic_directory(out):
                pass
        assert (tmp / "a.txt").read_text() == "first"  # the refused writer touched nothing
    assert (out / "a.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no lock, no partial left


def test_the_lock_is_free_again_after_a_failure(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError), atomic_directory(out):
        raise RuntimeError("boom")
    assert not lock_name(out).exists() and not partial_dir_name(out).exists()
    with atomic_directory(out) as tmp:
        (tmp / "b.txt").write_text("second")
    assert (out / "b.txt").read_text() == "second"


def test_resume_keeps_what_a_killed_writer_left_and_a_fresh_start_does_not(tmp_path):
    out = tmp_path / "run"
    partial_dir_name(out).mkdir()
    (partial_dir_name(out) / "checkpoint.pt").write_text("epoch 3")
    with atomic_directory(out, resume=True) as tmp:
        assert (tmp / "checkpoint.pt").read_text() == "epoch 3"
        (tmp / "checkpoint.pt").unlink()
    partial_dir_name(tmp_path / "other").mkdir()
    (partial_dir_name(tmp_path / "other") / "stale.txt").write_text("old")
    with atomic_directory(tmp_path / "other") as tmp:
        assert list(tmp.iterdir()) == []
