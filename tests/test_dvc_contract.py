"""What the flows rely on DVC for, checked on a small project of its own, so a DVC upgrade that changes it fails here.

flows/workspace.py drives DVC through `dvc.repo.Repo`'s methods and the `dvc` command, nothing private:
- the plan is `Repo.reproduce(dry=True, force=True)`: every stage `dvc repro TARGETS` visits, in order, none run;
- a stage is up to date (`dvc repro --single-item` skips it) exactly when `Repo.status` of it alone is empty:
  a changed dependency or param makes it stale, and only it and what reads it;
- `Repo.index.stages` gives each stage's cached and uncached outputs and its dependencies;
- `Repo.experiments.ls` finds the commit of an experiment `dvc exp save` made;
- `Repo.config` names the default remote;
and the installed DVC is within pyproject.toml's range.
"""

import os
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from flows.workspace import default_remote, io_paths, plan, run_dvc, save_experiment, up_to_date

ROOT = Path(__file__).parents[1]
# a -> b (b reads a's output and a param), c on its own; c's metrics file is uncached
DVC_YAML = {"stages": {
    "a": {"cmd": "python -c \"open('a.txt', 'w').write(open('in.txt').read())\"", "deps": ["in.txt"],
          "outs": ["a.txt"]},
    "b": {"cmd": "python -c \"open('b.txt', 'w').write(open('a.txt').read() * 2)\"", "deps": ["a.txt"],
          "params": ["b.n"], "outs": [{"b.txt": {"cache": False}}]},
    "c": {"cmd": "python -c \"open('c.json', 'w').write('{}')\"", "deps": ["in.txt"],
          "metrics": [{"c.json": {"cache": False}}]},
}}


def sh(cwd, *cmd) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A git + DVC project with DVC_YAML, committed, nothing reproduced yet."""
    (tmp_path / "gitconfig").write_text("[user]\n\tname = focal-test\n\temail = test@localhost\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "gitconfig"))
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    (proj / "params.yaml").write_text("b:\n  n: 1\n")
    (proj / "in.txt").write_text("x")
    sh(proj, "git", "init", "-q")
    sh(proj, sys.executable, "-m", "dvc", "init", "-q")
    sh(proj, "git", "add", "-A")
    sh(proj, "git", "commit", "-qm", "project")
    return proj


def test_the_plan_is_dvc_repros_and_runs_nothing(project):
    assert plan(project, ["b"]) == ["a", "b"]
    assert plan(project, ["c"]) == ["c"]
    every = plan(project)
    assert sorted(every) == ["a", "b", "c"] and every.index("a") < every.index("b")
    assert plan(project, ["b", "c"]) == [s for s in every if s in ("a", "b", "c")]
    assert not (project / "a.txt").exists() and not (project / "dvc.lock").exists()  # a dry run
    run_dvc(project, "repro", echo=None)
    assert plan(project) == every  # the stages with nothing to do too (the flow shows them as skipped)
    with pytest.raises(ValueError, match="stage 'd' is not in dvc.yaml; stages: a, b, c"):
        plan(project, ["d"])


def test_up_to_date_is_dvc_status_of_the_stage_alone(project):
    assert not any(up_to_date(project, s) for s in "abc")  # never run
    run_dvc(project, "repro", "--single-item", "a", echo=None)
    assert up_to_date(project, "a") and not up_to_date(project, "b")  # b has not run, whatever a did
    run_dvc(project, "repro", echo=None)
    assert all(up_to_date(project, s) for s in "abc")
    (project / "params.yaml").write_text("b:\n  n: 2\n")  # b's param
    assert [up_to_date(project, s) for s in "abc"] == [True, False, True]
    run_dvc(project, "repro", echo=None)
    (project / "in.txt").write_text("y")  # a's and c's dependency; b's, a.txt, is as it was until a runs again
    assert [up_to_date(project, s) for s in "abc"] == [False, True, False]  # what `--single-item` would skip
    run_dvc(project, "repro", echo=None)
    assert all(up_to_date(project, s) for s in "abc") and (project / "b.txt").read_text() == "yy"


def test_outputs_and_dependencies_by_stage(project):
    # a stage's params file is one of its dependencies
    assert io_paths(project) == {"cached": ["a.txt"], "uncached": ["b.txt", "c.json"],
                                 "deps": ["a.txt", "in.txt", "params.yaml"]}
    assert io_paths(project, ["b"]) == {"cached": [], "uncached": ["b.txt"], "deps": ["a.txt", "params.yaml"]}


def test_an_experiment_is_found_by_name_and_the_default_remote_by_config(project):
    run_dvc(project, "repro", echo=None)
    commit = save_experiment(project, "exp-one", ["a", "b", "c"], "a message", echo=None)
    assert len(commit) == 40 and sh(project, "git", "log", "-1", "--format=%B", commit).strip() == "a message"
    assert "b.txt" in sh(project, "git", "show", "--name-only", "--format=", commit)  # untracked output included
    assert default_remote(project) is None and default_remote(project, "other") == "other"
    sh(project, sys.executable, "-m", "dvc", "remote", "add", "-d", "store", str(project.parent / "store"))
    assert default_remote(project) == "store"


def test_the_installed_dvc_is_in_the_range_pyproject_allows():
    pipeline = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["pipeline"]
    dvc = next(Requirement(r) for r in pipeline if Requirement(r).name == "dvc")
    assert dvc.specifier.contains(version("dvc")), f"dvc {version('dvc')} is installed; pyproject allows {dvc}"
