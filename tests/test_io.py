"""Atomic writes leave files and folders with the modes the user's umask asks for, never mkstemp's 0600."""

import os
import stat

import pandas as pd
import pytest

from focal.core.atomic import atomic_dir, write_json, write_parquet, write_text


@pytest.fixture(params=[0o022, 0o027, 0o002])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_files_honour_the_umask(tmp_path, umask):
    write_text(tmp_path / "a.txt", "hi")
    write_json(tmp_path / "sub" / "b.json", {"x": 1})
    write_parquet(tmp_path / "c.parquet", pd.DataFrame({"x": [1]}))
    for name in ("a.txt", "sub/b.json", "c.parquet"):
        assert mode(tmp_path / name) == 0o666 & ~umask, name
    assert (tmp_path / "a.txt").read_text() == "hi"
    assert not [p for p in tmp_path.rglob(".*.tmp")]  # no temp file left behind


def test_a_replaced_file_gets_the_umask_too(tmp_path, umask):
    (tmp_path / "a.txt").write_text("old")
    os.chmod(tmp_path / "a.txt", 0o600)
    write_text(tmp_path / "a.txt", "new")
    assert mode(tmp_path / "a.txt") == 0o666 & ~umask and (tmp_path / "a.txt").read_text() == "new"


def test_atomic_dir_honours_the_umask_and_replaces_the_old_folder(tmp_path, umask):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "stale.bin").write_text("x")
    with atomic_dir(tmp_path / "model") as tmp:
        (tmp / "weights.bin").write_text("w")
    assert mode(tmp_path / "model") == 0o777 & ~umask
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["weights.bin"]


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    write_text(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "d"):
            raise RuntimeError("boom")
    with pytest.raises(TypeError):
        write_json(tmp_path / "a.txt", {"x": object()})
    assert (tmp_path / "a.txt").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
