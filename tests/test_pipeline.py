"""The prepare stage, run three ways: as a function, under real `dvc repro`, and as a Prefect flow."""

import json
import re
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from focal.config import load_params, params_from_dict, render_params_yaml
from focal.rubrics.sets import item_from_row, load_rubric_set
from helpers import ROOT, copy_project, dvc, sh
from stages import prepare


def params_in(tmp_path, **prepare_knobs):
    raw = {"paths": {"rubrics": str(ROOT / "rubrics"), "train_prompts": str(tmp_path / "train.parquet"),
                     "eval_prompts": str(tmp_path / "eval.parquet"), "judge_template": str(tmp_path / "template.md")},
           "prepare": prepare_knobs}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_committed_params_yaml_is_the_generated_one():
    assert (ROOT / "params.yaml").read_text() == render_params_yaml(load_params(ROOT / "params.yaml"))


def test_params_errors_name_the_key(tmp_path):
    with pytest.raises(ValueError, match=r"`prepare.max_train` is not a known key; known keys of `prepare`: max_train_prompts"):
        params_from_dict({"prepare": {"max_train": 3}}, "params.yaml")
    with pytest.raises(ValueError, match=r"`prepare.max_eval_prompts` must be int, got 'x'"):
        params_from_dict({"prepare": {"max_eval_prompts": "x"}}, "params.yaml")
    with pytest.raises(ValueError, match=r"prepare.max_eval_prompts must be >= 0"):
        params_from_dict({"prepare": {"max_eval_prompts": -1}}, "params.yaml")


def test_prepare_writes_round_trippable_tables(tmp_path):
    params = load_params(params_in(tmp_path, max_train_prompts=5))
    prepare.run(params)
    train, evals = pd.read_parquet(tmp_path / "train.parquet"), pd.read_parquet(tmp_path / "eval.parquet")
    assert len(train) == 5 and set(train.split) == {"train"} and set(evals.split) == {"eval"}
    rs = load_rubric_set(ROOT / "rubrics" / "default")
    by_id = {it.id: it for it in rs.items}
    for _, row in train.iterrows():
        assert item_from_row(row) == by_id[row.prompt_id]


def test_stage_script_reports_bad_rubric_in_one_line(tmp_path):
    bad = tmp_path / "rubrics" / "broken"
    bad.mkdir(parents=True)
    (bad / "set.yaml").write_text("format: focal\n")
    (bad / "prompts.yaml").write_text("- id: p1\n  prompt: hi\n  criteria:\n    - id: c\n      text: t\n")
    raw = {"base": {"rubric_set": "broken"}, "paths": {"rubrics": str(tmp_path / "rubrics"),
           "train_prompts": str(tmp_path / "t.parquet"), "eval_prompts": str(tmp_path / "e.parquet"),
           "judge_template": str(tmp_path / "template.md")}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    proc = subprocess.run([sys.executable, "-m", "stages.prepare", "--params", str(tmp_path / "params.yaml")],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "prompts.yaml:4: item 'p1' criterion 'c' field 'weight' is missing" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "t.parquet").exists()  # nothing half-written


def test_dvc_repro_runs_prepare_then_is_a_no_op_and_swaps_domain(tmp_path, git_identity):
    """The walkthrough of the README: swapping the domain is one value in params.yaml."""
    proj = copy_project(tmp_path / "proj")
    out = dvc(proj, "repro", "prepare")
    assert "Running stage 'prepare'" in out
    direct = tmp_path / "direct"
    direct.mkdir()
    prepare.run(load_params(params_in(direct)))
    assert (proj / "data/prompts/train.parquet").read_bytes() == (direct / "train.parquet").read_bytes()
    again = dvc(proj, "repro", "prepare")
    assert "didn't change" in again and "Running" not in again
    # swapping the domain is one value in params.yaml
    params = (proj / "params.yaml").read_text().replace("rubric_set: default", "rubric_set: health")
    (proj / "params.yaml").write_text(params)
    status = dvc(proj, "status", "prepare")
    assert re.search(r"prepare:\n\tchanged deps:.*params.yaml:\n\t+modified: +base\n", status, re.S)  # prepare is stale
    assert "Running stage 'prepare'" in dvc(proj, "repro", "prepare")
    ids = pd.read_parquet(proj / "data/prompts/train.parquet").prompt_id
    assert ids.str.startswith("h").all()


def test_prefect_flow_writes_the_same_outputs_as_the_stage(tmp_path, prefect_harness, git_identity):
    """The flow's prepare is `dvc repro --single-item prepare`: the same bytes as the stage function."""
    from flows.pipeline import pipeline

    direct, proj = tmp_path / "stage", tmp_path / "proj"
    direct.mkdir()
    prepare.run(load_params(params_in(direct)))
    copy_project(proj)
    assert pipeline(["prepare"], repo=str(proj)) == {"prepare": "ran"}
    for name in ("train.parquet", "eval.parquet"):
        assert (direct / name).read_bytes() == (proj / "data" / "prompts" / name).read_bytes()


def test_dvc_exp_run_sweeps_a_param_and_exp_show_lists_it(tmp_path, git_identity):
    proj = copy_project(tmp_path / "proj")
    sh(proj, "git", "add", "-A")
    sh(proj, "git", "commit", "-qm", "init")
    for n in (3, 5):
        dvc(proj, "exp", "run", "prepare", "-S", f"prepare.max_train_prompts={n}")
    shown = json.loads(dvc(proj, "exp", "show", "--json"))
    values = sorted(exp["data"]["params"]["params.yaml"]["data"]["prepare"]["max_train_prompts"]
                    for commit in shown for exp in [e for x in (commit.get("experiments") or []) for e in x["revs"]])
    assert values == [3, 5]
