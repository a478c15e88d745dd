"""Recurring retraining: experiments with lineage, champion and challenger, a failed run undone, another worker.

Fast (default): the promotion rule on hand-worked numbers; what changed between two prompt tables; the
registry (GTO) on a tiny repo, and a second clone that gets the champion's weights from the DVC remote;
the retrain flow on a synthetic project (the real prepare stage, a one-second train and evaluate whose
scores the test sets): a first run promoted against the base model, a second warm-started from it and
rejected, a third that fails and leaves the champion and the workspace as they were.
Slow: the real pipeline on a tiny model, deployed from prefect.yaml to a process work pool on a real
Prefect server, two scheduled runs (README walkthrough).
"""

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from flows.workspace import DvcFailed
from focal.evaluation import promotion as registry
from focal.evaluation.promotion import PromotionRule, decide, prompt_changes
from helpers import ROOT, artifacts, dvc, project, sh

RULE = PromotionRule(min_ci_low=0.0, max_min_category_drop=0.05, max_strict_drop=0.1)


def metrics(ci_low=0.02, ref=(0.6, 0.5, 0.25), cand=(0.7, 0.5, 0.25), reference="base") -> dict:
    """metrics/eval.json for one benchmark: (rubric_score, min_category, strict_completion) of each policy."""
    pol = lambda v: {"rubric_score": v[0], "min_category": v[1], "strict_completion": v[2]}  # noqa: E731
    return {"eval": {"policies": {reference: pol(ref), "trained": pol(cand)},
                     "paired": {f"trained_vs_{reference}": {"diff": cand[0] - ref[0], "ci_low": ci_low,
                                                            "ci_high": 0.2, "prompts": 4, "missing": 0}}}}


def test_the_promotion_rule_by_hand():
    ok, why = decide(metrics(), "base", RULE)
    assert ok and why.startswith("promoted against base: eval: paired rubric score +0.100 [+0.020, +0.200] over "
                                 "4 prompts (ok: lower bound > 0)")
    assert decide(metrics(ci_low=0.0), "base", RULE)[0] is False  # the bound must be above 0, not at it
    # min category 0.50 -> 0.45: a drop of 0.05 is within the tolerance; 0.44 is not
    assert decide(metrics(cand=(0.7, 0.45, 0.25)), "base", RULE)[0] is True
    ok, why = decide(metrics(cand=(0.7, 0.44, 0.25)), "base", RULE)
    assert not ok and "min category 0.500 -> 0.440 (FAIL: drop 0.060 > 0.05)" in why
    ok, why = decide(metrics(cand=(0.7, 0.5, 0.1), reference="champion"), "champion", RULE)
    assert not ok and "strict completion 0.250 -> 0.100 (FAIL: drop 0.150 > 0.1)" in why
    assert decide(metrics(ci_low=math.nan), "base", RULE)[0] is False  # no paired prompts: no evidence
    assert decide(metrics(ref=(0.6, math.nan, 0.25)), "base", RULE)[0] is True  # not measured: not held against it
    two = metrics() | {"health": metrics(ci_low=-0.01)["eval"]}
    ok, why = decide(two, "base", RULE)
    assert not ok and why.count("paired rubric score") == 2  # every benchmark must pass
    with pytest.raises(ValueError, match="do not compare 'trained' with 'champion'.*paired: trained_vs_base"):
        decide(metrics(), "champion", RULE)
    with pytest.raises(ValueError, match="rule.max_strict_drop must be >= 0"):
        PromotionRule(max_strict_drop=-0.1)


def test_prompt_changes():
    old = pd.DataFrame({"prompt_id": ["p1", "p2", "p3"], "prompt": ["a", "b", "c"], "criteria": ["x", "y", "z"]})
    new = pd.DataFrame({"prompt_id": ["p2", "p3", "p4"], "prompt": ["b", "c", "d"], "criteria": ["y", "z2", "w"]})
    assert prompt_changes(old, new) == {"new": ["p4"], "changed": ["p3"], "removed": ["p1"]}
    assert prompt_changes(None, new) == {"new": ["p2", "p3", "p4"], "changed": [], "removed": []}


def test_one_run_at_a_time(tmp_path):
    from flows.retrain import Busy, one_run_at_a_time

    with one_run_at_a_time(str(tmp_path)):
        with pytest.raises(Busy, match=f"another retrain is running in {tmp_path} \\(pid {os.getpid()}\\)"):
            with one_run_at_a_time(str(tmp_path)):
                pass
    with one_run_at_a_time(str(tmp_path)):  # released
        pass


# ---- the registry on a tiny repo ----------------------------------------------------------------

TINY_DVC = """\
stages:
  train:
    cmd: python train.py
    deps: [train.py]
    params: [train]
    outs: [models/trained]
"""
TINY_TRAIN = """\
import pathlib, yaml
steps = yaml.safe_load(open("params.yaml"))["train"]["max_steps"]
pathlib.Path("models/trained").mkdir(parents=True, exist_ok=True)
pathlib.Path("models/trained/weights.txt").write_text(f"trained {steps} steps")
"""


def tiny_repo(folder: Path, remote: Path) -> Path:
    folder.mkdir()
    (folder / "dvc.yaml").write_text(TINY_DVC)
    (folder / "train.py").write_text(TINY_TRAIN)
    (folder / "params.yaml").write_text("train:\n  max_steps: 1\n")
    (folder / ".gitignore").write_text("/models/champions/\n")
    sh(folder, "git", "init", "-q")
    dvc(folder, "init", "-q")
    dvc(folder, "remote", "add", "-d", "store", str(remote))
    sh(folder, "git", "add", "-A")
    sh(folder, "git", "commit", "-qm", "tiny")
    return folder


def test_registry_champion_rejected_and_another_worker(tmp_path, git_identity):
    from flows.workspace import save_experiment

    repo = tiny_repo(tmp_path / "a", tmp_path / "remote")
    assert registry.champion(repo) is None and registry.history(repo) == []
    commits = {}
    for steps in (1, 2):
        (repo / "params.yaml").write_text(f"train:\n  max_steps: {steps}\n")
        dvc(repo, "repro")
        commits[steps] = save_experiment(repo, f"run-{steps}", ["train"], f"run {steps}", echo=None)
        dvc(repo, "push")  # what the run made, as the retrain flow does
    body = {"when": "2026-01-01T00:00:00+00:00", "model": "models/trained", "settings": {"steps": 1}}
    first = registry.record(repo, {**body, "run": "run-1", "commit": commits[1]}, True, "promoted: better")
    second = registry.record(repo, {**body, "run": "run-2", "commit": commits[2], "when": "2026-01-02T00:00:00+00:00"},
                             False, "rejected: min category dropped")
    assert (first.version, second.version) == ("v0.0.1", "v0.0.2")
    champ = registry.champion(repo)
    assert (champ.version, champ.run, champ.decision, champ.why) == ("v0.0.1", "run-1", "promoted", "promoted: better")
    assert [(r.version, r.decision) for r in registry.history(repo)] == [("v0.0.2", "rejected"), ("v0.0.1", "promoted")]
    folder = registry.materialize(repo, champ, repo / "models" / "champions")
    assert (folder / "weights.txt").read_text() == "trained 1 steps"  # the champion, not the last run
    # another worker: a clone (the registry's tags come with it) with an empty DVC cache gets the weights
    # from the remote
    clone = tmp_path / "b"
    sh(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    assert not (clone / ".dvc" / "cache").exists()
    there = registry.materialize(clone, registry.champion(clone), clone / "models" / "champions")
    assert (there / "weights.txt").read_text() == "trained 1 steps"


# ---- the retrain flow on a synthetic project ----------------------------------------------------------

SYNTHETIC_DVC = """\
stages:
  prepare:
    cmd: python -m stages.prepare
    deps: [stages/prepare.py, "${paths.rubrics}/${base.rubric_set}"]
    params: [base, prepare]
    outs: ["${paths.train_prompts}", "${paths.eval_prompts}"]
  train:
    cmd: python fake.py train
    deps: [fake.py, "${paths.train_prompts}"]
    params: [base, train]
    outs:
      - ${paths.trained_model}:
          persist: true
  evaluate:
    cmd: python fake.py evaluate
    deps: [fake.py, verdict.json, "${paths.trained_model}", "${paths.eval_prompts}"]
    params: [base, evaluate]
    outs:
      - ${paths.eval_plots}:
          cache: false
          persist: true
    metrics:
      - ${paths.eval_metrics}:
          cache: false
          persist: true
"""
FAKE_PY = '''\
"""Stand-ins for train and evaluate: train writes where it started from; evaluate writes verdict.json's scores."""
import json, pathlib, sys, yaml

p = yaml.safe_load(open("params.yaml"))
if sys.argv[1] == "train":
    out = pathlib.Path(p["paths"]["trained_model"])
    out.mkdir(parents=True, exist_ok=True)
    start = p["train"]["policy"] or p["paths"]["base_model"]
    (out / "weights.txt").write_text(f"from {start}, seed {p['base']['seed']}, {p['train']['max_steps']} steps")
else:
    v = json.load(open("verdict.json"))
    if "error" in v:
        sys.exit(f"error: {v['error']}")
    ref = p["evaluate"]["policies"][0].split("=")[0]
    pol = lambda s: {"rubric_score": s, "min_category": 0.5, "strict_completion": 0.25}
    m = {"eval": {"policies": {ref: pol(0.5), "trained": pol(0.5 + v["diff"])},
                  "paired": {f"trained_vs_{ref}": {"diff": v["diff"], "ci_low": v["diff"] - 0.05,
                                                   "ci_high": v["diff"] + 0.05, "prompts": 3, "missing": 0}}}}
    pathlib.Path(p["paths"]["eval_metrics"]).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(p["paths"]["eval_metrics"]).write_text(json.dumps(m))
    plots = pathlib.Path(p["paths"]["eval_plots"])
    plots.mkdir(parents=True, exist_ok=True)
    (plots / "policies.png").write_bytes(bytes.fromhex("89504e470d0a1a0a") + b"stand-in")
'''


def synthetic(tmp_path: Path) -> Path:
    proj = project(tmp_path / "proj", SYNTHETIC_DVC, commit=False)
    (proj / "fake.py").write_text(FAKE_PY)
    verdict(proj, diff=0.2)
    raw = yaml.safe_load((proj / "params.yaml").read_text())
    raw["prepare"].update(max_train_prompts=3, max_eval_prompts=2)
    (proj / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    sh(proj, "git", "add", "-A")
    sh(proj, "git", "commit", "-qm", "synthetic project")
    return proj


def verdict(proj: Path, **v) -> None:
    (proj / "verdict.json").write_text(json.dumps(v))


def workspace_state(proj: Path) -> dict:
    """The files a run may change, by content."""
    names = ["params.yaml", "dvc.lock", "models/trained/weights.txt", "metrics/eval.json",
             "data/prompts/train.parquet", "reports/plots/policies.png"]
    return {n: (proj / n).read_bytes() if (proj / n).exists() else None for n in names}


def exp_names(proj: Path) -> list[str]:
    shown = json.loads(dvc(proj, "exp", "show", "--json"))
    return sorted(e["name"] for base in shown for e in (base.get("experiments") or []) if e.get("name"))


def test_retrain_promotes_warm_starts_rejects_and_undoes_a_failed_run(tmp_path, prefect_harness, git_identity):
    from flows.retrain import FAILURE_KEY, METRICS_KEY, REPORT_KEY, retrain

    proj = synthetic(tmp_path)
    # run 1: no champion yet, so it starts from and is compared with the base model; it wins
    first = retrain(repo=str(proj), seed=11, rule=RULE)
    assert first["decision"] == "promoted" and first["version"] == "v0.0.1" and first["reference"] == "base model"
    assert first["run"].startswith("retrain-") and first["run"].endswith("-focal-default-3steps-from-base")
    assert first["rule"]["max_strict_drop"] == 0.1 and first["settings"]["seed"] == 11
    params = yaml.safe_load((proj / "params.yaml").read_text())
    assert params["base"]["seed"] == 11 and params["train"]["policy"] == "" and params["evaluate"]["policies"] == \
        ["base", "trained"]
    assert (proj / "models/trained/weights.txt").read_text() == "from models/base, seed 11, 3 steps"
    assert "up to date" in dvc(proj, "status")
    # run 2: warm start from the champion; new prompts data; it loses, and the champion stays
    prompts = proj / "rubrics/default/prompts.yaml"
    prompts.write_text(prompts.read_text().replace("photosynthesis is in simple words", "photosynthesis is, simply"))
    verdict(proj, diff=0.01)  # lower bound -0.04: not above 0
    second = retrain(repo=str(proj), aggregator="static", rule=RULE)
    assert second["decision"] == "rejected" and "FAIL: lower bound <= 0" in second["why"]
    assert second["run"].endswith("-static-default-3steps-from-v0.0.1")
    assert second["reference"] == "champion v0.0.1" and second["seed"] != 11
    params = yaml.safe_load((proj / "params.yaml").read_text())
    assert params["train"]["policy"] == params["rollouts"]["policy"] == "models/champions/v0.0.1"
    assert params["evaluate"]["policies"] == ["champion=models/champions/v0.0.1", "trained"]
    assert (proj / "models/champions/v0.0.1/weights.txt").read_text() == "from models/base, seed 11, 3 steps"
    assert (proj / "models/trained/weights.txt").read_text().startswith("from models/champions/v0.0.1, seed ")
    assert registry.champion(proj).version == "v0.0.1"
    assert [r.decision for r in registry.history(proj)] == ["rejected", "promoted"]
    assert "up to date" in dvc(proj, "status")
    assert exp_names(proj) == sorted([first["run"], second["run"]])
    shown = dvc(proj, "exp", "show", "--md")
    for column in ("base.seed", "train.aggregator", "train.policy", "eval.policies.trained.rubric_score",
                   "data/prompts/train.parquet"):
        assert column in shown, column  # params, metrics and data hashes side by side
    report = artifacts(REPORT_KEY)[0].data
    assert "rejected" in report and "1 changed (p001)" in report and "aggregator: focal -> static" in report
    assert "data:image/png;base64," in report
    table = artifacts(METRICS_KEY)[0].data
    assert "champion" in table and "rubric_score" in table and "paired_diff" in table
    # run 3 fails in its evaluation: champion, params, lock and outputs stay as they were; nothing retried
    before = workspace_state(proj)
    verdict(proj, error="evaluate.benchmarks: 'evl' is not a benchmark; benchmarks: eval, health")
    sh(proj, "git", "add", "verdict.json")
    sh(proj, "git", "commit", "-qm", "a broken evaluation")
    before["dvc.lock"] = (proj / "dvc.lock").read_bytes()
    with pytest.raises(DvcFailed, match="stage 'evaluate' failed: evaluate.benchmarks: 'evl' is not a benchmark"):
        retrain(repo=str(proj), rule=RULE)
    assert workspace_state(proj) == before
    assert registry.champion(proj).version == "v0.0.1" and len(registry.history(proj)) == 2
    failure = artifacts(FAILURE_KEY)[0].data
    assert "'evl' is not a benchmark" in failure and "champion is unchanged (v0.0.1" in failure
    assert not list((proj / ".dvc/tmp").glob("focal-snapshot-*"))


# ---- for real: a tiny model, prefect.yaml, a process work pool, a real Prefect server --------------------

TINY = {"prepare": {"max_train_prompts": 2, "max_eval_prompts": 2},
        "rollouts": {"backend": "transformers", "max_prompts": 2, "num_generations": 2, "max_tokens": 4},
        "train": {"max_steps": 1, "prompts_per_step": 1, "num_generations": 2, "max_completion_length": 4,
                  "use_judge": False},
        "evaluate": {"backend": "transformers", "limit": 2, "num_generations": 2, "max_tokens": 4, "n_bootstrap": 50}}
EASY = {"min_ci_low": -1.0, "max_min_category_drop": 1.0, "max_strict_drop": 1.0}  # promotes anything measured
HARD = {"min_ci_low": 1.0, "max_min_category_drop": 0.0, "max_strict_drop": 0.0}  # a difference above 1: never


def tiny_project(tmp_path: Path, judge_url: str) -> Path:
    """This repository, committed with tiny settings: a tiny random model as the base model (model.source),
    transformers for sampling, the loopback fake judge, one training step."""
    from tiny import make_tiny_model

    proj = project(tmp_path / "proj", commit=False)
    raw = yaml.safe_load((proj / "params.yaml").read_text())
    for section, values in TINY.items():
        raw[section].update(values)
    raw["model"]["source"] = str(make_tiny_model(tmp_path / "tiny"))
    raw["judge"].update(base_url=judge_url, model="judge", backoff_s=0.01, timeout_s=5.0)
    (proj / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    dvc(proj, "remote", "add", "-d", "store", str(tmp_path / "dvc-remote"))  # a local-directory DVC remote
    sh(proj, "git", "add", "-A")
    sh(proj, "git", "commit", "-qm", "tiny settings")
    return proj


def prefect(proj: Path, env: dict, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "prefect", *args], cwd=proj, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"prefect {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def wait_for(check, timeout_s: float, what: str, logs=()):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(2)
    pytest.fail(f"{what} within {timeout_s} s; logs:\n" + "\n".join(Path(p).read_text()[-4000:] for p in logs))


@contextlib.contextmanager
def prefect_server(tmp_path: Path, cwd: Path):
    """A real `prefect server` on loopback (scheduler every 2 s); yields (api, env, start) where start(name, *args)
    runs `python -m prefect ARGS` (or `python -m MODULE` when args[0] is "-m") in cwd, logging to name.log.
    Everything started is stopped on the way out: SIGTERM (STACK.md), then SIGKILL to what is left of each group."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from focal.serving.server import free_port, healthy

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": api,
           "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2", "PREFECT_WORKER_QUERY_SECONDS": "2",
           "PREFECT_RUNNER_POLL_FREQUENCY": "2", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
           "OMP_NUM_THREADS": "1"}
    procs, logs = [], []

    def start(name, *args):
        logs.append(tmp_path / f"{name}.log")
        cmd = [sys.executable, *(args if args[0] == "-m" else ("-m", "prefect", *args))]
        with open(logs[-1], "w") as log:
            procs.append(subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))
        return procs[-1]

    try:
        start("server", "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui")
        wait_for(lambda: healthy(api), 120, "the Prefect server was not healthy", logs)
        with temporary_settings({PREFECT_API_URL: api}):
            yield api, env, start, logs
    finally:
        for proc in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=60)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def deployment_runs(client, deployment: str, logs) -> list:
    """The deployment's flow runs; fails at once, with the logs, if one ended other than Completed."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.exceptions import ObjectNotFound

    try:
        dep = client.read_deployment_by_name(deployment)
    except ObjectNotFound:  # not registered yet
        return []
    found = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])))
    bad = [r for r in found if r.state and r.state.is_final() and not r.state.is_completed()]
    assert not bad, f"{bad[0].name}: {bad[0].state}\n" + "\n".join(Path(p).read_text()[-5000:] for p in logs)
    return found


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_two_scheduled_runs_warm_start_and_a_losing_challenger_keeps_the_champion(tmp_path, git_identity):
    """README walkthrough: prefect.yaml deployed to a process work pool; run 1 is promoted against the base
    model; the user tightens the promotion rule from the UI; run 2 warm-starts from run 1's model, loses,
    and the champion stays. After each: `dvc status` clean; `dvc exp show` lists both runs."""
    from fake_openai import FakeOpenAI
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentUpdate
    from prefect.states import Cancelled

    with FakeOpenAI() as judge:
        proj = tiny_project(tmp_path, judge.base_url)
        with prefect_server(tmp_path, proj) as (api, env, start, logs), get_client(sync_client=True) as client:
            prefect(proj, env, "work-pool", "create", "focal-process", "--type", "process")
            # every 60 s: run 2 is not due before the test pauses the schedule while run 1 runs (a run already
            # waiting for the concurrency slot would survive the pause, with the old parameters)
            prefect(proj, env, "--no-prompt", "deploy", "--name", "focal-retrain", "--interval", "60",
                    "--params", json.dumps({"rule": EASY}))
            start("worker", "worker", "start", "--pool", "focal-process")
            dep = client.read_deployment_by_name("focal-retrain/focal-retrain")
            runs = lambda: deployment_runs(client, "focal-retrain/focal-retrain", logs)  # noqa: E731
            first = wait_for(lambda: [r for r in runs() if r.state.is_running()], 300, "no run started", logs)[0]
            client.pause_deployment(dep.id)  # the user pauses the schedule while run 1 is running ...
            wait_for(lambda: client.read_flow_run(first.id).state.is_completed(), 600, "run 1 did not complete", logs)
            assert "up to date" in dvc(proj, "status")
            assert registry.champion(proj).run == client.read_flow_run(first.id).name
            # ... tightens the promotion rule from the UI, and resumes: the next scheduled run uses it
            client.update_deployment(dep.id, DeploymentUpdate(parameters={"rule": HARD}))
            client.resume_deployment(dep.id)
            # as for run 1: pause while run 2 runs, so that no run 3 takes the slot when run 2 ends (a slow run 2
            # outlasts the 60 s interval), and cancel a run 3 already scheduled or waiting for the slot
            second = wait_for(lambda: [r for r in runs() if r.id != first.id and r.state.is_running()], 600,
                              "run 2 did not start", logs)[0]
            client.pause_deployment(dep.id)
            for r in runs():
                if r.id not in (first.id, second.id) and not r.state.is_final() and not r.state.is_running():
                    client.set_flow_run_state(r.id, Cancelled(), force=True)
            done = lambda: (runs(), client.read_flow_run(second.id).state.is_completed())[1]  # noqa: E731 (fails fast)
            wait_for(done, 600, "run 2 did not complete", logs)
            second = client.read_flow_run(second.id)
            assert second.parameters["rule"] == HARD and first.parameters["rule"] == EASY
    assert "up to date" in dvc(proj, "status")
    champ, history = registry.champion(proj), registry.history(proj)
    assert [r.decision for r in history] == ["rejected", "promoted"] and champ.version == "v0.0.1"
    assert history[0].run == second.name and "FAIL: lower bound <= 1" in history[0].why
    assert history[0].reference == "champion v0.0.1" and history[1].reference == "base model"
    # run 2 sampled from, warm-started from and was compared with run 1's promoted model
    params = yaml.safe_load(sh(proj, "git", "show", f"{history[0].commit}:params.yaml").stdout)
    assert params["train"]["policy"] == params["rollouts"]["policy"] == "models/champions/v0.0.1"
    assert params["evaluate"]["policies"] == ["champion=models/champions/v0.0.1", "trained"]
    assert params["base"]["seed"] != yaml.safe_load(sh(proj, "git", "show", f"{history[1].commit}:params.yaml")
                                                    .stdout)["base"]["seed"]
    assert exp_names(proj) == sorted([first.name, second.name])
    assert (tmp_path / "dvc-remote" / "files" / "md5").is_dir()  # each run pushed what it made


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_served_deployment_runs_the_retrain_flow(tmp_path, git_identity):
    """The local shortcut (flows/deploy.py, flow.serve) schedules the same flow: a run completes, promoted."""
    from prefect.client.orchestration import get_client

    proj = synthetic(tmp_path)
    with prefect_server(tmp_path, ROOT) as (api, env, start, logs), get_client(sync_client=True) as client:
        served = start("served", "-m", "flows.deploy", "--interval", "5", "--repo", str(proj), "--steps", "2")
        runs = lambda: deployment_runs(client, "focal-retrain/focal-retrain", logs)  # noqa: E731
        done = wait_for(lambda: [r for r in runs() if r.state.is_completed()], 300, "no served run completed", logs)
        os.kill(served.pid, signal.SIGTERM)
        assert served.wait(timeout=120) == 0
    assert done[0].parameters["steps"] == 2
    assert registry.champion(proj).run == done[0].name and done[0].name.endswith("-2steps-from-base")
