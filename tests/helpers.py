"""What several test modules share: a tiny rubric, project copies, a judge-stage project, shell helpers.

    from helpers import ITEMS, judge_project, project, sh

Test modules import shared things from here (fixtures are in conftest.py), never from each other.
Two self-contained fakes keep their own modules: fake_openai.py (a loopback OpenAI-compatible server)
and tiny.py (a tiny random model and tokenizer).
"""

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from fake_openai import FakeOpenAI
from focal.config import Judge as JudgeConfig
from focal.rubrics.sets import Check, Criterion, Item, Scale
from focal.serving.endpoints import Endpoint

ROOT = Path(__file__).parents[1]

# ---- a tiny rubric every criterion of which is decided by a check ------------------------

CRITERIA = (Criterion("short", "At most 5 words.", 3.0, "essential", check=Check("max_words", {"n": 5}), key="short"),
            Criterion("sun", "Mentions the sun.", 2.0, "important", check=Check("contains_any", {"words": ["sun"]}), key="sun"),
            Criterion("bang", "Uses an exclamation mark.", 2.0, "pitfall", pitfall=True,
                      check=Check("min_count", {"text": "!", "n": 1}), key="bang"))
ITEMS = [Item(f"p{i}", q, CRITERIA) for i, q in enumerate(["why is the sun green", "what is a good list",
                                                           "how can the cat sleep", "tips for the moon"])]


# ---- a judged item and a judge client for a loopback server -------------------------------

BINARY = Criterion("relevant", "The response answers the question.", 3.0, "essential")
PITFALL = Criterion("rude", "The response is rude.", 2.0, "pitfall", pitfall=True)
LIKERT = Criterion("clarity", "How clear is it?", 1.0, "optional", scale=Scale("likert", 1, 5))
CHECKED = Criterion("short", "At most 3 words.", 1.0, check=Check("max_words", {"n": 3}))
JUDGE_ITEM = Item("p1", "What is 2+2?", (BINARY, PITFALL, LIKERT, CHECKED))


def fake_endpoint(server, model="judge"):
    """An Endpoint for a loopback fake server (its identity names the URL and model)."""
    return Endpoint(server.base_url, model, f"test:{server.base_url}|{model}")


def judge_cfg(**kw):
    """A judge section with small timeouts and backoffs, for loopback servers."""
    base = dict(model="judge", concurrency=4, timeout_s=0.5, max_retries=3, backoff_s=0.01, max_backoff_s=0.05,
                parse_retries=1, mode="per_criterion")  # JSON answers; judge.mode one_token has tests of its own
    base.update(kw)
    return JudgeConfig(**base)


class Always(FakeOpenAI):
    """A loopback judge that gives every request the same verdict."""

    def __init__(self, met: bool):
        super().__init__()
        self.met = met

    def answer(self, body):
        with self.lock:
            self.requests.append(body)
        return 200, self.completion(body, json.dumps({"explanation": "same", "criteria_met": self.met})), ""


def string_splits(module: str) -> list[str]:
    """The str.split-like calls (split, rsplit, partition, rpartition) in a module of this repository: where a
    string is cut back into parts (an id or a metric name should not be: structure stays structure)."""
    tree = ast.parse((ROOT / module).read_text(encoding="utf-8"))
    return [f"{module}:{n.lineno} {n.func.attr}" for n in ast.walk(tree) if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Attribute) and n.func.attr in ("split", "rsplit", "partition", "rpartition")]


# ---- processes and projects -------------------------------------------------------------

def one_stage_dvc(name: str, out: str) -> str:
    """A dvc.yaml of one stage `python <name>.py` writing `out`."""
    return f"stages:\n  {name}:\n    cmd: python {name}.py\n    deps: [{name}.py]\n    outs: [{out}]\n"


# Python lines a stand-in stage runs: start a stand-in model server (`sleep 300`) and record it as focal.serving.server
# records a server kept for the next stage, owned by the run (focal run / the flow) that started the stage.
STANDIN_SERVER = """\
import subprocess
from focal.config import Serve
from focal.serving.server import env_owner, record
server = subprocess.Popen(["sleep", "300"], start_new_session=True)
record(Serve(), "models/base", server.pid, "http://127.0.0.1:9/v1", env_owner())
"""

def sh(cwd, *cmd, check=True) -> subprocess.CompletedProcess:
    """Run a command in cwd with this python's bin first on PATH."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, f"{' '.join(map(str, cmd))}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def dvc(cwd, *args) -> str:
    """`dvc ARGS` in cwd (asserting success); its stdout."""
    return sh(cwd, sys.executable, "-m", "dvc", *args).stdout


def wait_gone(pids: list[int], timeout_s: float = 10.0) -> list[int]:
    """The pids still running after timeout_s (polled every 0.2 s)."""
    import time

    deadline = time.monotonic() + timeout_s
    while (left := [p for p in pids if running(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return not Path("/proc/self/stat").exists()  # gone, or no /proc to tell a zombie by


def project(dst: Path, dvc_yaml: str | None = None, commit: bool = True) -> Path:
    """This repository's tracked files (as they are in the working tree) in dst, as a fresh git repo (with one
    commit), optionally with another dvc.yaml (and no dvc.lock). Needs the git_identity fixture."""
    dst.mkdir(parents=True, exist_ok=True)
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for rel in files.splitlines():
        if (ROOT / rel).is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            (dst / rel).write_bytes((ROOT / rel).read_bytes())
    if dvc_yaml is not None:
        (dst / "dvc.yaml").write_text(dvc_yaml)
        (dst / "dvc.lock").unlink(missing_ok=True)
    sh(dst, "git", "init", "-q")
    if commit:
        sh(dst, "git", "add", "-A")
        sh(dst, "git", "commit", "-qm", "project")
    return dst


def copy_project(dst: Path) -> Path:
    """Only the pipeline's code, params and rubrics in dst, with a fresh git repo and `dvc init` (no dvc.lock,
    nothing committed): every stage is new to DVC. Needs the git_identity fixture to commit."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", "params.yaml", "pyproject.toml"):
        shutil.copy(ROOT / name, dst / name)
    for name in ("focal", "stages", "flows", "rubrics"):
        shutil.copytree(ROOT / name, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
    sh(dst, "git", "init", "-q")
    dvc(dst, "init", "-q")
    return dst


def set_params(proj: Path, **sections) -> None:
    """Update params.yaml: set_params(proj, prepare={"max_train_prompts": 2})."""
    raw = yaml.safe_load((proj / "params.yaml").read_text())
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    (proj / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def artifacts(key: str) -> list:
    """The Prefect artifacts with this key, newest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                                     sort=ArtifactSort.CREATED_DESC)


# ---- the judge stage's inputs -----------------------------------------------------------

def judge_project(tmp_path: Path, base_url: str, concurrency=2) -> Path:
    """Prompt tables for 3 train prompts, 3 rollouts each, and params pointing at the fake judge; the params path."""
    from focal.config import load_params
    from stages import prepare

    raw = {"paths": {"rubrics": str(ROOT / "rubrics"), **{k: str(tmp_path / v) for k, v in {
               "train_prompts": "train.parquet", "eval_prompts": "eval.parquet", "rollouts": "rollouts.parquet",
               "judge_template": "judge_template.md", "judgments": "judgments.parquet", "judge_cache": "cache.sqlite",
               "judge_stats": "stats.json", "judge_votes": "votes.parquet"}.items()}},
           "prepare": {"max_train_prompts": 3, "max_eval_prompts": 1},
           "judge": {"base_url": base_url, "model": "fake", "concurrency": concurrency, "backoff_s": 0.01,
                     "timeout_s": 5.0}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    params = load_params(path)
    prepare.run(params)
    train = pd.read_parquet(params.paths.train_prompts)
    rows = [{"prompt_id": pid, "rollout_id": f"{pid}-r{g}", "completion": f"answer {g} {'GOOD' if g % 2 else 'meh'}"}
            for pid in train.prompt_id for g in range(3)]
    pd.DataFrame(rows).to_parquet(params.paths.rollouts)
    return path
