"""The committed dvc.lock matches the committed code and params: a fresh clone's `dvc status` reports no changed
dependency, parameter or command, only outputs that a clone does not carry (models and data, until `dvc repro` or
`dvc pull` brings them). Slow-marked: it needs the lock refreshed by a real pipeline run after every code change
(`make run`, then commit dvc.lock and the small metrics files). And `dvc repro model` on a fresh clone writes
models/base with the md5 that dvc.lock records (given the locked packages: requirements/lock-main.txt)."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]
ABSENT = {"not in cache", "deleted"}
CODE = ("focal/", "stages/")
FIX = ("run `make run` (dvc repro: the stage's outputs may change) and commit dvc.lock and the metrics; for a change "
       "that cannot change any output (a move, a docstring) `make lock-dvc` (dvc commit) after a `make run` records "
       "the new code without rerunning")


def stale_code_deps(root: Path = ROOT) -> dict[str, list[str]]:
    """stage -> the code it declares (focal/, stages/ deps in dvc.yaml) that dvc.lock records differently: a path
    the lock lacks or has extra, or a file whose md5 is not the lock's (DVC 3's md5 of a file is its bytes')."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    out = {}
    for name, stage in stages.items():
        declared = sorted(d for d in stage.get("deps", []) if isinstance(d, str) and d.startswith(CODE))
        locked = {d["path"]: d.get("md5") for d in lock.get(name, {}).get("deps", []) if d["path"].startswith(CODE)}
        bad = [f"{p} (not in dvc.lock)" for p in declared if p not in locked]
        bad += [f"{p} (in dvc.lock, not in dvc.yaml)" for p in sorted(set(locked) - set(declared))]
        bad += [f"{p} (changed)" for p in declared if p in locked and (not (root / p).is_file() or
                hashlib.md5((root / p).read_bytes()).hexdigest() != locked[p])]
        if bad:
            out[name] = bad
    return out


def test_dvc_lock_records_the_committed_code():
    """The fast half of the check below: every stage's code deps in dvc.lock are the files of this checkout. A change
    to stage code without a refreshed lock fails here, in the default suite, not only in `make test-slow`."""
    stale = stale_code_deps()
    assert not stale, f"dvc.lock is stale: {stale}; {FIX}"


def test_the_lock_check_sees_a_changed_file(tmp_path):
    for f in ("dvc.yaml", "dvc.lock"):
        (tmp_path / f).write_text((ROOT / f).read_text())
    stage = next(iter(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].values()))
    code = [d for d in stage["deps"] if isinstance(d, str) and d.startswith(CODE)]
    for p in code:
        (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / p).write_bytes((ROOT / p).read_bytes())
    (tmp_path / code[0]).write_text((ROOT / code[0]).read_text() + "\n# an edit\n")
    stale = stale_code_deps(tmp_path)
    assert f"{code[0]} (changed)" in next(iter(stale.values()))


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
