"""The install fits users' machines: the core library needs none of the training or pipeline packages.

- fast: in a fresh interpreter where torch, TRL, transformers, DVC, Prefect, Great Expectations, DeepSpeed, ...
  cannot be imported (sys.modules[name] = None), `import focal` and the core names import, and FocalReward scores
  completions through the judge client against a loopback judge (CORE_SCRIPT);
- fast: the package metadata: Python 3.12 admitted, no exact version anywhere (those live in the install lock),
  the core free of the heavy packages, `all` = every other extra;
- slow: a fresh Python 3.12 venv, `pip install .` without extras: CORE_SCRIPT again (nothing blocked: the heavy
  packages are simply absent), then the core's own test modules (CORE_TESTS) under 3.12. It needs the package
  registry for the 3.12 wheels (numpy, pandas, pyarrow, ...). 104-173 s here (2 cores, 2026-12-06, warm pip cache):
  python -m pytest -m slow tests/test_install.py
"""

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# import names of what only the extras bring (train, pipeline, ifeval, deepspeed)
HEAVY = ("torch", "trl", "transformers", "peft", "accelerate", "datasets", "gguf", "deepspeed", "dvc", "dvclive",
         "gto", "prefect", "great_expectations", "matplotlib", "scipy", "if_verifiable")
# the test modules of the core: they pass with nothing but the core installed (the slow test runs them on 3.12)
CORE_TESTS = ("test_aggregate.py", "test_api.py", "test_checks.py", "test_config.py", "test_io.py", "test_judge.py",
              "test_metrics_and_sim.py", "test_rubric.py", "test_simulate.py")

# Run as `python -c CORE_SCRIPT REPO TMP BLOCK`: imports the core names and scores two prompts' completions with
# FocalReward through the judge client (OpenAIJudge, the public API of the README) against tests/fake_openai.py's loopback judge, which says
# "met" when a response contains GOOD. Prints JSON: the rewards, the judge's calls, and which HEAVY modules loaded.
CORE_SCRIPT = """
import asyncio, json, sys
from pathlib import Path
repo, tmp, block = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "block"
HEAVY = %r
if block:
    for name in HEAVY:
        sys.modules[name] = None  # `import name` raises ImportError, as if it were not installed
sys.path.append(str(repo / "tests"))  # fake_openai only: focal itself comes from sys.path as the caller set it

import focal
from focal import AGGREGATORS, FocalReward, OpenAIJudge, aggregate, load_rubric_set  # the public names only
from fake_openai import FakeOpenAI

rubrics = load_rubric_set(repo / "rubrics" / "default")
items = rubrics.split("train")[:2]
ids = [it.id for it in items for _ in range(2)]
completions = ["GOOD: short and kind.", "no"] * len(items)
with FakeOpenAI() as server:
    judge = OpenAIJudge(server.base_url, "judge", cache=str(tmp / "judge.sqlite"), max_retries=0, timeout_s=10.0)
    reward = FocalReward(items, aggregator="focal", judge=judge)
    rewards = asyncio.run(reward([""] * len(ids), completions, prompt_id=ids))
    calls = server.calls
loaded = sorted(n for n in HEAVY if sys.modules.get(n) is not None)
print(json.dumps({"rewards": rewards, "calls": calls, "loaded": loaded, "focal": focal.__file__,
                  "aggregators": sorted(AGGREGATORS), "python": sys.version_info[:2]}))
""" % (HEAVY,)


def run_core(python: str, tmp_path: Path, block: bool, env=None) -> dict:
    proc = subprocess.run([python, "-c", CORE_SCRIPT, str(ROOT), str(tmp_path), "block" if block else "absent"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_scored(out: dict) -> None:
    rewards = out["rewards"]
    assert len(rewards) == 4 and all(isinstance(r, float) for r in rewards), rewards
    assert rewards[0] > rewards[1] and rewards[2] > rewards[3], rewards  # GOOD beats "no" within each prompt
    assert out["calls"] > 0 and out["loaded"] == []  # the judge client really called the judge; nothing heavy
    assert {"static", "focal", "gdpo", "pow3r"} <= set(out["aggregators"])


def test_the_core_works_without_torch_trl_or_the_pipeline_tools(tmp_path):
    out = run_core(sys.executable, tmp_path, block=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert_scored(out)
    assert Path(out["focal"]).parent == ROOT / "focal"


def blocked(script: str) -> subprocess.CompletedProcess:
    """Run a python script in a fresh interpreter where the HEAVY modules cannot be imported."""
    return subprocess.run([sys.executable, "-c", f"import sys\nfor n in {HEAVY!r}: sys.modules[n] = None\n{script}"],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_a_missing_extra_is_named():
    # the IFEval checkers come with the `ifeval` extra: without it, the error says what to install
    proc = blocked("from focal.rubrics.checks import run_check\nrun_check('ifeval', {'id': 'punctuation:no_comma'}, 'a b')")
    assert proc.returncode == 1 and "pip install 'focal[ifeval]'" in proc.stderr, proc.stderr[-2000:]
    # the README's training dataset needs `datasets`, which comes with the train extra
    proc = blocked("from focal import load_rubric_set\nload_rubric_set('default').dataset()")
    assert proc.returncode == 1 and "ModuleNotFoundError: RubricSet.dataset needs the `datasets` package, which " \
        "comes with TRL: pip install 'focal[train]'" in proc.stderr, proc.stderr[-2000:]
    # the `focal` command starts with the core; a pipeline command says which install it needs, in one line
    proc = blocked("from flows.cli import app\napp(['retrain', '--steps', '1'])")
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and len(lines) == 2 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert "prefect" in lines[0] and "pip install 'focal[all]'" in lines[0], lines


def package_source(source: Path) -> Path:
    """What `pip install .` builds from, copied (building in this checkout would leave build/ behind)."""
    for name in ("focal", "flows", "stages", "benchmarks", "rubrics"):
        shutil.copytree(ROOT / name, source / name, symlinks=True,  # focal/rubrics/shipped stays the link it is
                        ignore=shutil.ignore_patterns("__pycache__", "results"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    return source


def test_the_wheel_ships_the_rubric_sets_and_the_starter(tmp_path):
    """`pip install .` builds this wheel: the shipped sets load by their bare name from any folder, and `focal new`
    finds its starter, with no clone around."""
    source = package_source(tmp_path / "source")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(source),
                           "-w", str(tmp_path / "dist")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("focal-*.whl")
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    shipped = site / "focal" / "rubrics" / "shipped"
    assert sorted(p.name for p in shipped.iterdir()) == ["default", "health", "ifeval"] and not shipped.is_symlink()
    work = tmp_path / "work"
    work.mkdir()
    script = ("from focal.rubrics.sets import load_rubric_set, new_rubric_set\n"
              "print(load_rubric_set('default'), load_rubric_set('health').name)\n"
              "print(load_rubric_set(new_rubric_set('rubrics/support')))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=work,
                          env={**os.environ, "PYTHONPATH": str(site)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == [
        "RubricSet('default': 64 items (48 train, 16 eval), 386 criteria (183 checked, 203 judged), "
        "saturation_key='id') health",
        "RubricSet('support': 2 items (1 train, 1 eval), 4 criteria (2 checked, 2 judged), saturation_key='id')"]


def test_the_docs_and_pyproject_name_the_same_pythons():
    project = PYPROJECT["project"]
    admitted = [f"3.{minor}" for minor in range(8, 16) if f"3.{minor}" in SpecifierSet(project["requires-python"])]
    classified = [c.rsplit(" :: ", 1)[1] for c in project["classifiers"] if c.startswith("Programming Language :: Python :: 3.")]
    assert admitted == classified == ["3.11", "3.12"]
    assert "Focal runs on Python 3.11 or 3.12" in (ROOT / "docs" / "getting-started.md").read_text()
    assert "Python 3.11 or 3.12" in (ROOT / "README.md").read_text()


def requirements() -> dict[str, list[Requirement]]:
    project = PYPROJECT["project"]
    out = {"core": [Requirement(r) for r in project["dependencies"]]}
    out.update({k: [Requirement(r) for r in v] for k, v in project["optional-dependencies"].items()})
    return out


def test_the_metadata_fits_a_gpu_machine():
    assert "3.11" in SpecifierSet(PYPROJECT["project"]["requires-python"])
    assert "3.12" in SpecifierSet(PYPROJECT["project"]["requires-python"])
    reqs = requirements()
    pinned = [str(r) for rs in reqs.values() for r in rs for s in r.specifier if s.operator in ("==", "===")]
    assert not pinned, f"exact versions belong in the install lock, not the package: {pinned}"
    heavy = {"torch", "trl", "transformers", "peft", "accelerate", "deepspeed", "dvc", "dvclive", "prefect",
             "great-expectations", "matplotlib", "if-verifiable"}
    assert not heavy & {r.name for r in reqs["core"]}
    torch = next(r for r in reqs["train"] if r.name == "torch")
    assert "2.6.0" in torch.specifier and "2.13.0" in torch.specifier and "2.9.1" in torch.specifier  # a GPU box's own
    assert {r.name for r in reqs["pipeline"]} >= {"dvc", "prefect", "great-expectations"}
    assert [r.name for r in reqs["deepspeed"]] == ["deepspeed"]
    everything = {name for r in reqs["all"] if r.name == "focal" for name in r.extras}
    assert everything == set(reqs) - {"core", "all", "test", "docs"}, "the `all` extra must bring every other extra"


def python_312() -> str | None:
    """A Python 3.12 interpreter: pyenv's (this machine has 3.12.1 there), else python3.12 on PATH if it runs."""
    for candidate in [*sorted(Path.home().glob(".pyenv/versions/3.12*/bin/python3.12")), shutil.which("python3.12")]:
        if candidate and subprocess.run([str(candidate), "--version"], capture_output=True).returncode == 0:
            return str(candidate)
    return None


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_python_312_installs_the_core_and_passes_its_tests(tmp_path):
    python312 = python_312()
    if python312 is None:
        pytest.skip("no Python 3.12 on this machine (e.g. pyenv install 3.12)")
    venv = tmp_path / "venv312"
    subprocess.run([python312, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    source = package_source(tmp_path / "source")
    proc = subprocess.run([py, "-m", "pip", "install", "--progress-bar", "off", f"{source}[test]"],
                          capture_output=True, text=True, env=env, timeout=800)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    installed = subprocess.run([py, "-m", "pip", "list", "--format=json"], capture_output=True, text=True,
                               check=True).stdout
    names = {p["name"].lower().replace("_", "-") for p in json.loads(installed)}
    assert not names & {"torch", "trl", "transformers", "dvc", "prefect", "great-expectations", "deepspeed"}

    work = tmp_path / "work"
    work.mkdir()
    out = run_core(py, work, block=False, env=env)  # the installed package, not this checkout
    assert out["python"] == [3, 12] and str(venv) in out["focal"]
    assert_scored(out)

    # the core's own tests, under 3.12 (this checkout's tests against this checkout's code, like `make test`)
    tests = [str(ROOT / "tests" / name) for name in CORE_TESTS]
    proc = subprocess.run([py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", *tests],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]
