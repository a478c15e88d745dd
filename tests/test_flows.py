"""The pipeline flow runs its stages through DVC: same plan as `dvc repro`, same lock, same skipping.

- the stage plan is DVC's: dvc.yaml's stages, targets with what is upstream, unknown names listed;
- acceptance: after the flow runs `prepare` with a changed `prepare` param, `dvc status prepare` is clean,
  and a second run skips it;
- only a transient network failure is retried; a configuration error fails at once, in one line; a stage
  that outlives its task's timeout is stopped;
"""

import json
import time

import pytest
import yaml

import flows.pipeline
from flows.pipeline import ARTIFACT_KEY, JUDGE_ARTIFACT_KEY, judge_rows, pipeline
from flows.workspace import DvcFailed, error_line, plan, transient
from helpers import ROOT, artifacts, dvc, project, running, set_params

STAGES = ["model", "rubrics", "rubricarm", "prepare", "rollouts", "judge", "validate", "train", "evaluate"]


def test_the_plan_is_dvcs():
    assert plan(ROOT) == STAGES  # every stage of dvc.yaml, in `dvc repro`'s order
    # rubrics and rubricarm are upstream of nothing (until paths.rubric_model / judge_model point at rubricarm's)
    assert plan(ROOT, ["evaluate"]) == [s for s in STAGES if s not in ("rubrics", "rubricarm")]
    assert plan(ROOT, ["prepare"]) == ["prepare"]
    order = plan(ROOT, ["judge", "prepare"])  # DVC's order; model and prepare are independent of each other
    assert sorted(order) == ["judge", "model", "prepare", "rollouts"]
    assert max(order.index("model"), order.index("prepare")) < order.index("rollouts") < order.index("judge")
    with pytest.raises(ValueError, match="stage 'judg' is not in dvc.yaml; stages: model, rubrics, rubricarm, prepare"):
        plan(ROOT, ["judg"])


@pytest.mark.parametrize("lines, expected", [
    (["Running stage 'judge':", "error: judge: 3 of 4 judge calls failed (75.0% > judge.max_failure_share 20%): "
      "timeout 2, server_error 1; fix the judge endpoint",
      "ERROR: failed to reproduce 'judge': failed to run: python -m stages.judge, exited with 75"], True),
    (["error: serve.base_url http://x/v1: sampling failed after 3 retries (rate_limited: 429)",
      "ERROR: failed to reproduce 'rollouts': failed to run: python -m stages.rollouts, exited with 75"], True),
    (["error: judge: 3 of 4 judge calls failed: timeout 2, invalid_answer 1",  # not every failure transient
      "ERROR: failed to reproduce 'judge': failed to run: python -m stages.judge, exited with 1"], False),
    (["openai.APIConnectionError: Connection error.", "ERROR: failed to reproduce 'rubrics'"], False),  # DVC's line
    (["error: judge.base_url http://127.0.0.1:9/v1 refused the connection (4 attempts in a row); check the "
      "server and judge.base_url", "ERROR: failed to reproduce 'judge': failed to run: python -m stages.judge, "
      "exited with 1"], False),
    (["error: params.yaml: `prepare.max_train` is not a known key; known keys of `prepare`: max_train_prompts"], False),
    (["error: train.aggregator 'focla' is unknown; aggregators: static, focal"], False),
])
def test_only_transient_network_failures_are_transient(lines, expected):
    assert transient(lines) is expected
    assert error_line(lines) == next((x[7:] for x in lines if x.startswith("error: ")), lines[-1][7:])


def test_flow_runs_prepare_through_dvc_and_dvc_status_is_clean(tmp_path, prefect_harness, git_identity):
    """The acceptance test: the flow's prepare is `dvc repro`'s prepare, lock and all."""
    proj = project(tmp_path / "proj")
    set_params(proj, prepare={"max_train_prompts": 3})
    assert "prepare" in dvc(proj, "status", "prepare")  # changed: the param
    assert pipeline(["prepare"], repo=str(proj)) == {"prepare": "ran"}
    assert "up to date" in dvc(proj, "status", "prepare")
    lock = yaml.safe_load((proj / "dvc.lock").read_text())["stages"]["prepare"]
    assert lock["params"]["params.yaml"]["prepare"]["max_train_prompts"] == 3
    assert pipeline(["prepare"], repo=str(proj)) == {"prepare": "skipped"}  # nothing changed: DVC skips it
    rows = artifacts(ARTIFACT_KEY)[0].data
    assert "prepare" in rows and "skipped" in rows and "parquet" not in rows  # what ran, not file paths


JUDGE = """\
stages:
  judge:
    cmd: python judge.py
    deps: [judge.py]
    metrics:
      - metrics/judge.json:
          cache: false
"""
JUDGE_PY = """\
import json, pathlib
m = {"judge/calls": 7, "agreement/share": 0.25, "consistency/share": 0.25, "consistency/repeat/temperature": 0.0}
for prefix, (agreement, n) in {"agreement": (0.75, 4), "consistency": (1.0, 2), "consistency/repeat": (0.5, 2)}.items():
    for scope in ("", "/by_key/word_limit"):
        m.update({f"{prefix}{scope}/{'overall' if not scope else 'agreement'}": agreement, f"{prefix}{scope}/kappa": None,
                  f"{prefix}{scope}/n": n, **{f"{prefix}{scope}/{k}": 0 for k in ("tp", "fp", "fn", "tn", "missing")}})
pathlib.Path("metrics").mkdir(exist_ok=True)
pathlib.Path("metrics/judge.json").write_text(json.dumps(m))
"""


def test_judge_rows_are_each_measure_overall_then_by_key():
    m = {f"{p}/{k}": 1 for p in ("agreement", "consistency") for k in ("overall", "kappa", "n", "tp", "fp", "fn", "tn",
                                                                         "missing")}
    table = judge_rows(m | {"agreement/by_key/w/agreement": 0.5, **{f"agreement/by_key/w/{k}": 0 for k in (
        "kappa", "n", "tp", "fp", "fn", "tn", "missing")}})
    assert [(r["measure"], r["scope"]) for r in table] == [("agreement", "overall"), ("agreement", "by_key/w"),
                                                           ("consistency", "overall")]
    assert table[1]["agreement"] == 0.5 and judge_rows({}) == []
    ensemble = {f"ensemble/{p}/{k}": 1 for p in ("agreement", "member/b/agreement", "member/judge/agreement")
                for k in ("overall", "kappa", "n", "tp", "fp", "fn", "tn", "missing")}
    assert [r["measure"] for r in judge_rows(ensemble)] == ["ensemble/agreement", "ensemble/member/b/agreement",
                                                           "ensemble/member/judge/agreement"]


def test_the_flow_publishes_the_judge_measured_after_the_judge_stage(tmp_path, prefect_harness, git_identity):
    proj = project(tmp_path / "proj", JUDGE, commit=False)
    (proj / "judge.py").write_text(JUDGE_PY)
    assert pipeline(["judge"], repo=str(proj)) == {"judge": "ran"}
    data = artifacts(JUDGE_ARTIFACT_KEY)[0].data
    rows = json.loads(data) if isinstance(data, str) else data
    assert [(r["measure"], r["scope"], r["agreement"], r["n"]) for r in rows] == [
        ("agreement", "overall", 0.75, 4), ("agreement", "by_key/word_limit", 0.75, 4),
        ("consistency", "overall", 1.0, 2), ("consistency", "by_key/word_limit", 1.0, 2),
        ("consistency/repeat", "overall", 0.5, 2), ("consistency/repeat", "by_key/word_limit", 0.5, 2)]


FLAKY = """\
stages:
  flaky:
    cmd: python flaky.py
    deps: [flaky.py]
    outs: [out.txt]
  broken:
    cmd: python broken.py
    deps: [out.txt]
    outs: [never.txt]
  sleepy:
    cmd: python sleepy.py
    deps: [sleepy.py]
    outs: [slept.txt]
"""
FLAKY_PY = """\
import pathlib, sys
log = pathlib.Path("flaky.log")
log.write_text(log.read_text() + "x" if log.exists() else "x")
if len(log.read_text()) < 3:  # as focal.core.stage exits on a transient failure (EX_TEMPFAIL)
    print("error: judge: 2 of 2 judge calls failed (100.0% > judge.max_failure_share 20%): timeout 2", file=sys.stderr)
    sys.exit(75)
pathlib.Path("out.txt").write_text("ok")
"""
SLEEPY_PY = """\
import os, pathlib, time
pathlib.Path("sleepy.pid").write_text(str(os.getpid()))
time.sleep(300)
"""
BROKEN_PY = """\
import sys
print("tried", file=open("broken.log", "a"))
sys.exit("error: params.yaml: `judge.temprature` is not a known key")
"""


def test_retries_only_transient_failures_and_a_timeout_stops_the_stage(tmp_path, prefect_harness, git_identity,
                                                                     monkeypatch):
    proj = project(tmp_path / "proj", FLAKY, commit=False)
    (proj / "flaky.py").write_text(FLAKY_PY)
    (proj / "broken.py").write_text(BROKEN_PY)
    (proj / "sleepy.py").write_text(SLEEPY_PY)
    monkeypatch.setattr(flows.pipeline, "run_stage", flows.pipeline.run_stage.with_options(retry_delay_seconds=0))
    with pytest.raises(DvcFailed) as failed:
        pipeline(["broken"], repo=str(proj))
    assert (proj / "flaky.log").read_text() == "xxx"  # two transient failures, retried; the third attempt passed
    assert (proj / "broken.log").read_text() == "tried\n"  # a configuration error: one attempt
    assert str(failed.value) == ("stage 'broken' failed: params.yaml: `judge.temprature` is not a "
                                 "known key")
    assert "flaky" in yaml.safe_load((proj / "dvc.lock").read_text())["stages"]  # what succeeded is recorded
    # a stage that outlives its task's timeout is stopped, with DVC, within seconds
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        pipeline(["sleepy"], repo=str(proj), stage_timeout_s=5)
    assert time.monotonic() - t0 < 30 and not running(int((proj / "sleepy.pid").read_text()))
