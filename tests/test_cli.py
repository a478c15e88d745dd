"""The `focal` command: every --help, user mistakes in one line (exit 2), `focal judge` against a fake judge,
and Ctrl-C on `focal run --flow` stopping the flow, its stage and the server it started within seconds."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import typer
import yaml
from typer.testing import CliRunner

from fake_openai import FakeOpenAI
from flows.cli import app
from focal.config import load_params
from stages import judge as judge_stage
from helpers import ROOT, STANDIN_SERVER, copy_project, judge_project, one_stage_dvc, project, running

runner = CliRunner()


COMMANDS = typer.main.get_command(app).commands


def flat(text: str) -> str:
    """Help text as words: without the boxes and backticks of the rendering, wrapped lines joined."""
    return " ".join(re.sub(r"[│╭╮╰╯─`]", " ", text).split())


def test_the_help_lists_every_command_with_what_it_does():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    assert sorted(COMMANDS) == ["deploy", "eval", "judge", "new", "retrain", "run", "serve", "validate"]
    for name, command in COMMANDS.items():
        first_sentence = command.help.split(": ")[0].split(". ")[0].split(" (")[0]
        assert re.search(rf"\b{name} {re.escape(flat(first_sentence))}", flat(result.output)), (name, result.output)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_help_says_what_it_does_and_every_option(name):
    command = COMMANDS[name]
    result = runner.invoke(app, [name, "--help"])
    assert result.exit_code == 0, result.output
    out = flat(result.output)
    assert command.help and flat(command.help.split("\n\n")[0]) in out, out
    for param in command.params:
        shown = param.name.upper() if param.param_type_name == "argument" else param.opts[0]
        assert param.help and f"{shown} " in out and flat(param.help) in out, (shown, out)
    assert runner.invoke(app, [name, "--no-such-option"]).exit_code == 2


def test_a_flag_is_not_shown_as_taking_a_value():
    outputs = [runner.invoke(app, ["--help"]).output] + [runner.invoke(app, [n, "--help"]).output for n in COMMANDS]
    assert all("<bool>" not in out for out in outputs), [out for out in outputs if "<bool>" in out][0]
    assert "--flow " in flat(runner.invoke(app, ["run", "--help"]).output)


def assert_one_line_error(code: int, stderr: str, *expected: str):
    lines = stderr.strip().splitlines()
    assert code == 2, stderr
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: "), stderr
    assert "Traceback" not in stderr
    for text in expected:
        assert text in lines[0]


def test_user_mistakes_are_one_line_with_exit_code_2(tmp_path, monkeypatch):
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
    monkeypatch.chdir(ROOT)
    result = runner.invoke(app, ["run", "--flow", "--stages", "prepare,nope"])
    assert_one_line_error(result.exit_code, result.stderr, "stage 'nope' is not in dvc.yaml")
    result = runner.invoke(app, ["retrain", "--rubric-set", "nope"])
    assert_one_line_error(result.exit_code, result.stderr, "rubric set 'nope' is not a folder of rubrics/")
    result = runner.invoke(app, ["retrain", "--steps", "0"])
    assert_one_line_error(result.exit_code, result.stderr, "train.max_steps must be >= 1")
    # the real process, as a user sees it
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "run", "--params", str(bad)], cwd=ROOT,
                          capture_output=True, text=True)
    assert_one_line_error(proc.returncode, proc.stderr, str(bad))


def test_focal_judge_equals_the_judge_stage(tmp_path):
    with FakeOpenAI() as server:
        params_path = judge_project(tmp_path, server.base_url)  # prompt tables, rollouts.parquet, the fake judge
        params = load_params(params_path)
        result = runner.invoke(app, ["judge", params.paths.rollouts, "--params", str(params_path)])
        assert result.exit_code == 0, result.output
        calls = server.calls
        judge_stage.run(params)
        stats = json.loads(Path(params.paths.judge_stats).read_text())
        probes = sum(stats[f"{m}/{k}"] for m in ("agreement", "consistency", "consistency/repeat")
                     for k in ("n", "missing"))
        assert server.calls == calls + probes  # the same cache: the stage asks only its measurement probes
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


def test_focal_judge_in_one_token_mode(tmp_path):
    """Soft verdicts written; a reply without yes/no is a failed judgment with its reason; a rerun makes no call;
    another mode asks every call again."""
    with FakeOpenAI() as server:
        params_path = judge_project(tmp_path, server.base_url)
        raw = yaml.safe_load(params_path.read_text())
        raw["judge"]["mode"] = "one_token"
        params_path.write_text(yaml.safe_dump(raw))
        params = load_params(params_path)
        rollouts = pd.read_parquet(params.paths.rollouts)
        silent = rollouts.iloc[[0]].assign(rollout_id="silent", completion="GOOD [[fault:noverdict:all]]")
        pd.concat([rollouts, silent]).to_parquet(params.paths.rollouts)

        def judge(*more):
            before = server.calls
            result = runner.invoke(app, ["judge", params.paths.rollouts, "--params", str(params_path), *more])
            assert result.exit_code == 0, result.output
            return server.calls - before

        calls = judge()
        df = pd.read_parquet(tmp_path / "rollouts.judgments.parquet")
        llm = df[df.source == "judge"]
        assert calls == len(llm) > 0 and all(b["max_tokens"] == 1 for b in server.requests)
        ok = llm[llm.rollout_id != "silent"]
        assert set(ok.score.round(4)) <= {0.25, 0.75} and ok.score.notna().all()  # soft: P(yes) / (P(yes) + P(no))
        bad = llm[llm.rollout_id == "silent"]
        assert len(bad) and bad.score.isna().all() and (bad.failure == "no_verdict").all()
        assert bad.reason.str.startswith("no_verdict: none of yes/no among the most likely first tokens").all()
        assert judge() == 0  # a rerun: everything from the cache, the failed verdicts included
        raw["judge"]["mode"] = "per_criterion"
        params_path.write_text(yaml.safe_dump(raw))
        assert judge() == len(llm)  # a change of mode asks every call again


def test_focal_run_is_dvc_repro(tmp_path, monkeypatch, git_identity):
    proj = copy_project(tmp_path / "proj")
    monkeypatch.chdir(proj)
    result = runner.invoke(app, ["run", "--stages", "prepare"])
    assert result.exit_code == 0, result.output
    assert (proj / "data/prompts/train.parquet").exists() and (proj / "dvc.lock").exists()
    (proj / "other.yaml").write_text((proj / "params.yaml").read_text())
    result = runner.invoke(app, ["run", "--params", "other.yaml"])  # another file needs --flow
    assert result.exit_code == 2 and "dvc repro reads ./params.yaml" in result.stderr


SLOW_DVC = one_stage_dvc("slow", "never.txt")
SLOW_PY = STANDIN_SERVER + """import json, os, pathlib, time
pathlib.Path("pids.json").write_text(json.dumps({"stage": os.getpid(), "server": server.pid}))
time.sleep(300)
"""


@pytest.mark.timeout(240)
def test_ctrl_c_stops_the_flow_its_stage_and_its_server_within_seconds(tmp_path, git_identity):
    proj = project(tmp_path / "proj", SLOW_DVC, commit=False)
    (proj / "slow.py").write_text(SLOW_PY)
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    log = tmp_path / "cli.log"  # a file, not a pipe: a stray process holding a pipe open cannot hang the test
    with log.open("w") as sink:
        # SIGINT back to its default in the child: a test run started in the background of a non-interactive
        # shell (`bash -c "make test" &`, as some CI runners do) ignores SIGINT, and a child inherits that
        cli = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", "--flow", "--stages", "slow"], cwd=proj,
                               env=env, start_new_session=True, stdout=sink, stderr=subprocess.STDOUT, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 180
        while not (proj / "pids.json").exists() and cli.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert (proj / "pids.json").exists(), log.read_text()[-3000:] if cli.poll() is not None else "no stage"
        time.sleep(0.5)
        pids = json.loads((proj / "pids.json").read_text())
        t0 = time.monotonic()
        os.killpg(cli.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: SIGINT to the foreground group
        try:
            cli.wait(timeout=90)
        except subprocess.TimeoutExpired:
            pytest.fail(f"focal run --flow still running 90 s after Ctrl-C:\n{log.read_text()[-3000:]}")
        took = time.monotonic() - t0
        out = log.read_text()
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
    assert cli.returncode == 130, out
    assert took < 20, f"{took:.1f} s:\n{out}"
    assert not running(pids["stage"]) and not running(pids["server"]), out
    assert not list((proj / ".focal/servers").glob("*.json"))
    assert "focal: stopping flows.pipeline (SIGTERM" in out, out[-3000:]  # the CLI forwarded Ctrl-C once
    assert "stopped 1 model server(s)" in out, out[-3000:]  # the flow stopped the server kept for the next stage
    assert re.search(r"Flow run '[^']+' - Finished in state Crashed\(", out), out[-3000:]  # not Completed


MISTAKES = """\
- id: p1
  prompt: Say hi.
  criteria:
    - {id: polite, text: Greet them, then ask how they are, weight: 2}
    - id: short
      text: At most 5 words.
      wieght: 2
      check: {max_words: 5}
- id: p2
  prompt: Say bye.
  criteria:
    - {id: brief, text: Is brief., weight: 1, check: {max_wordz: 3}}
"""


def test_focal_validate_reports_every_mistake_in_one_run_and_writes_nothing(tmp_path, monkeypatch):
    folder = tmp_path / "rubrics" / "mine"
    folder.mkdir(parents=True)
    (folder / "set.yaml").write_text("format: focal\n")
    (folder / "prompts.yaml").write_text(MISTAKES)
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    result = runner.invoke(app, ["validate", "rubrics/mine"])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert [e.split(": ")[1] for e in errors] == ["rubrics/mine/prompts.yaml:4", "rubrics/mine/prompts.yaml:5",
                                                  "rubrics/mine/prompts.yaml:12"], result.stderr
    assert 'quote the text: `text: "Greet them, then ask how they are"`' in errors[0]
    assert "field 'wieght' is not a criterion field: did you mean 'weight'?" in errors[1]
    assert "unknown check 'max_wordz': did you mean 'max_words'?" in errors[2]
    assert "rubrics/mine: 3 errors; fix them and run `focal validate rubrics/mine` again" in result.stderr
    assert sorted(tmp_path.rglob("*")) == before  # no params file read, no DVC, nothing written
    (folder / "prompts.yaml").write_text(MISTAKES.replace(", then ask how they are", "").replace("wieght", "weight")
                                         .replace("max_wordz", "max_words"))
    result = runner.invoke(app, ["validate", "rubrics/mine"])
    assert result.exit_code == 0 and result.stdout.startswith("rubrics/mine: valid rubric set 'mine': 2 items "
                                                              "(2 train, 0 eval), 3 criteria (2 checked, 1 judged)")


def test_focal_new_writes_a_set_that_focal_validate_passes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["new", "support"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "rubrics" / "support").iterdir()) == ["prompts.yaml", "set.yaml"]
    result = runner.invoke(app, ["validate", "rubrics/support"])
    assert result.exit_code == 0, result.output
    assert "valid rubric set 'support': 2 items (1 train, 1 eval), 4 criteria (2 checked, 2 judged)" in result.stdout
    result = runner.invoke(app, ["new", "support"])  # never overwrites
    assert_one_line_error(result.exit_code, result.stderr, "rubrics/support: already exists")
