"""The committed dvc.lock matches the committed code and params: a fresh clone's `dvc status` reports no changed
dependency, parameter or command, only outputs that a clone does not carry (models and data, until `dvc repro` or
`dvc pull` brings them). Slow-marked: it needs the lock refreshed by a real pipeline run after every code change
(`make run`, then commit dvc.lock and the small metrics files). And `dvc repro model` on a fresh clone writes
models/base with the md5 that dvc.lock records (given the locked packages: requirements/lock-main.txt)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]
ABSENT = {"not in cache", "deleted"}


@pytest.mark.slow
def test_a_fresh_clone_has_no_stale_stage(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    out = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=clone, env=env, capture_output=True,
                         text=True, check=True).stdout
    stale = {}
    for stage, changes in json.loads(out or "{}").items():
        for change in changes:
            if not isinstance(change, dict):  # e.g. "changed checksum", "always changed"
                stale.setdefault(stage, []).append(change)
                continue
            for kind, entries in change.items():
                flat = {k: v for k, v in entries.items() if not isinstance(v, dict)}
                flat.update({f"{k}:{p}": v for k, d in entries.items() if isinstance(d, dict) for p, v in d.items()})
                # an absent upstream output is absent data, not a stale stage; anything modified or new is stale
                bad = {k: v for k, v in flat.items() if v not in ABSENT}
                if kind not in ("changed deps", "changed outs") or bad:
                    stale.setdefault(stage, []).append({kind: bad or entries})
    assert not stale, f"dvc.lock is stale for {sorted(stale)}: {stale}"


@pytest.mark.slow
def test_a_fresh_clone_builds_the_base_model_the_lock_records(tmp_path):
    """`dvc repro model` on a fresh clone, with the locked packages (requirements/lock-main.txt, what `make install`
    installs), writes models/base with exactly the md5 in the committed dvc.lock: dvc.lock is left unchanged."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PYTHONPATH": str(clone)}
    committed = base_model_md5(clone / "dvc.lock")
    subprocess.run([sys.executable, "-m", "dvc", "repro", "model"], cwd=clone, env=env, check=True,
                   capture_output=True)
    assert base_model_md5(clone / "dvc.lock") == committed, "models/base of a fresh clone differs from dvc.lock's"


def base_model_md5(lock: Path) -> str:
    """The md5 that a dvc.lock records for the model stage's output (models/base)."""
    outs = yaml.safe_load(lock.read_text())["stages"]["model"]["outs"]
    return next(o["md5"] for o in outs if o["path"] == "models/base")
