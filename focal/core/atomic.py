"""Atomic file writes: write to a temp file beside the target, then rename.

A crash never leaves a half-written output behind. The temp file or folder is
created with mode 0666 / 0777 and the kernel applies the user's umask (and any
default ACL), so the result has the mode any ordinary write would give it, not
mkstemp's 0600.

    from focal.core.atomic import write_parquet, write_json, write_text
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path


def _create_beside(path: Path, make) -> Path:
    """A new, unused temp name beside `path`, created by `make(name)` (which fails if it exists)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):  # a clash of 48 random bits is already unlikely; 100 in a row is not going to happen
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            make(tmp)
            return tmp
        except FileExistsError:  # another writer's temp: draw another name
            continue
    raise FileExistsError(f"{path.parent}: no free temp name for {path.name} after 100 tries")


def _new_file(p: Path) -> None:
    os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


@contextmanager
def atomic_path(path):
    """Yield a temp path in the target's folder; on success rename it onto `path`."""
    path = Path(path)
    tmp = _create_beside(path, _new_file)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n")


def write_parquet(path, df) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


@contextmanager
def atomic_dir(path):
    """Yield a temp folder beside `path`; on success it replaces `path` (old contents removed)."""
    path = Path(path)
    tmp = _create_beside(path, lambda p: os.mkdir(p, 0o777))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
