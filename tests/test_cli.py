"""The `focal` command: every --help, user mistakes in one line (exit 2), `focal judge` against a fake judge."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from fake_openai import FakeOpenAI
from flows.cli import app
from focal.config import load_params
from stages import judge as judge_stage
from test_judge_stage import setup as judge_setup
from test_pipeline import copy_project

ROOT = Path(__file__).parents[1]
runner = CliRunner()


@pytest.mark.parametrize("command", [[], ["run"], ["serve"], ["judge"], ["eval"], ["deploy"]])
def test_every_command_has_help(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def assert_one_line_error(code: int, stderr: str, *expected: str):
    lines = stderr.strip().splitlines()
    assert code == 2, stderr
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: "), stderr
    assert "Traceback" not in stderr
    for text in expected:
        assert text in lines[0]


def test_user_mistakes_are_one_line_with_exit_code_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("prepare:\n  max_train: 3\n")
    for args in (["run", "--flow", "--params", str(bad)], ["judge", "r.parquet", "--params", str(bad)],
                 ["eval", "--params", str(bad)], ["serve", "--params", str(bad)]):
        result = runner.invoke(app, args)
        assert_one_line_error(result.exit_code, result.stderr, "`prepare.max_train` is not a known key")
    good = tmp_path / "good.yaml"
    good.write_text("{}\n")
    result = runner.invoke(app, ["judge", str(tmp_path / "missing.jsonl"), "--params", str(good)])
    assert_one_line_error(result.exit_code, result.stderr, "missing.jsonl: not found")
    result = runner.invoke(app, ["run", "--flow", "--stages", "prepare,nope", "--params", str(good)])
    assert_one_line_error(result.exit_code, result.stderr, "unknown stage 'nope'")
    # the real process, as a user sees it
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "run", "--params", str(bad)], cwd=ROOT,
                          capture_output=True, text=True)
    assert_one_line_error(proc.returncode, proc.stderr, str(bad))


def test_focal_judge_equals_the_judge_stage(tmp_path):
    with FakeOpenAI() as server:
        params_path = judge_setup(tmp_path, server.base_url)  # prompt tables, rollouts.parquet, the fake judge
        params = load_params(params_path)
        result = runner.invoke(app, ["judge", params.paths.rollouts, "--params", str(params_path)])
        assert result.exit_code == 0, result.output
        calls = server.calls
        judge_stage.run(params)
        assert server.calls == calls  # the same cache: the stage asks nothing again
        # a jsonl file without rollout ids: they are derived from the content, one per row
        adhoc = tmp_path / "adhoc.jsonl"
        pd.read_parquet(params.paths.rollouts)[["prompt_id", "completion"]].to_json(adhoc, orient="records",
                                                                                     lines=True)
        result = runner.invoke(app, ["judge", str(adhoc), "--out", str(tmp_path / "adhoc.parquet"),
                                     "--params", str(params_path)])
        assert result.exit_code == 0, result.output
    keep = ["prompt_id", "rollout_id", "criterion_id", "source", "raw", "score", "reason"]
    cli = pd.read_parquet(tmp_path / "rollouts.judgments.parquet")
    assert calls == (cli.source == "judge").sum() > 0
    pd.testing.assert_frame_equal(cli[keep], pd.read_parquet(params.paths.judgments)[keep])
    derived = pd.read_parquet(tmp_path / "adhoc.parquet")
    assert derived.rollout_id.nunique() == cli.rollout_id.nunique()
    assert derived.score.tolist() == cli.score.tolist()


def test_focal_run_is_dvc_repro(tmp_path, monkeypatch):
    proj = copy_project(tmp_path)
    monkeypatch.chdir(proj)
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(proj / ".gitconfig"))
    result = runner.invoke(app, ["run", "--stages", "prepare"])
    assert result.exit_code == 0, result.output
    assert (proj / "data/prompts/train.parquet").exists() and (proj / "dvc.lock").exists()
    (proj / "other.yaml").write_text((proj / "params.yaml").read_text())
    result = runner.invoke(app, ["run", "--params", "other.yaml"])  # another file needs --flow
    assert result.exit_code == 2 and "dvc repro reads ./params.yaml" in result.stderr
