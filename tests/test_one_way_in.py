"""One way in: `focal eval` goes through DVC like every stage, and a retraining run's options are declared once
(flows/run_options.py) and taken alike by `focal retrain`, `focal deploy`, `python -m flows.retrain` and
`python -m flows.deploy`, each value reaching the retrain flow's parameter of the same name."""

import inspect
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

import flows.deploy
import flows.retrain
from flows.cli import app
from flows.run_options import RUN_OPTIONS, flag, taken

ROOT = Path(__file__).parents[1]
runner = CliRunner()
COMMANDS = typer.main.get_command(app).commands
# a train stage and an evaluate stage that reads its output: `focal eval` must reproduce both, through DVC
DVC_YAML = {"stages": {
    "train": {"cmd": "python -c \"open('model.txt', 'w').write('m')\"", "deps": ["in.txt"], "outs": ["model.txt"]},
    "evaluate": {"cmd": "python -c \"open('eval.txt', 'w').write(open('model.txt').read() + '!')\"",
                 "deps": ["model.txt"], "outs": [{"eval.txt": {"cache": False}}]},
}}


def sh(cwd, *cmd) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_focal_eval_is_dvc_repro_evaluate(tmp_path, monkeypatch):
    (tmp_path / "gitconfig").write_text("[user]\n\tname = focal-test\n\temail = test@localhost\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "gitconfig"))
    proj = tmp_path / "proj"
    proj.mkdir()
    shutil.copy(ROOT / "params.yaml", proj / "params.yaml")
    (proj / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    (proj / "in.txt").write_text("x")
    sh(proj, "git", "init", "-q")
    sh(proj, sys.executable, "-m", "dvc", "init", "-q")
    monkeypatch.chdir(proj)
    result = runner.invoke(app, ["eval"])
    assert result.exit_code == 0, result.output
    assert (proj / "eval.txt").read_text() == "m!"  # train ran first: evaluate's input came from DVC's plan
    lock = yaml.safe_load((proj / "dvc.lock").read_text())["stages"]
    assert set(lock) == {"train", "evaluate"}  # recorded by DVC, like any stage
    assert "Data and pipelines are up to date" in sh(proj, sys.executable, "-m", "dvc", "status")
    result = runner.invoke(app, ["eval", "--params", "other.yaml"])  # DVC reads ./params.yaml, as for `focal run`
    assert result.exit_code == 2 and "other.yaml" in result.stderr


def test_every_front_door_takes_the_same_options(capsys):
    flow_params = inspect.signature(flows.retrain.retrain.fn).parameters
    assert set(RUN_OPTIONS) <= set(flow_params)  # each option is the flow's parameter of that name
    for every_run, command, main in ((False, "retrain", flows.retrain.main), (True, "deploy", flows.deploy.main)):
        want = {flag(name): o.help for name, o in taken(every_run).items()}
        typer_options = {p.opts[0]: p.help for p in COMMANDS[command].params if p.opts[0] in want}
        assert typer_options == want, command
        assert (flag("seed") in want) is not every_run  # a deployment's runs draw their own seeds
        with pytest.raises(SystemExit):
            main(["--help"])
        argparse_help = " ".join(capsys.readouterr().out.split())
        for option, text in want.items():
            assert f"{option} {option[2:].upper().replace('-', '_')} {text}" in argparse_help, (option, argparse_help)
    # prefect.yaml's deployment (`prefect deploy`) gives every run the same options, as flow parameters
    [deployment] = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    assert set(taken(every_run=True)) <= set(deployment["parameters"]) <= set(flow_params)


def test_focal_retrain_passes_each_option_to_the_flow(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # configured() reads params.yaml as committed here
    forwarded = []
    monkeypatch.setattr("flows.cli.run_flow", lambda module, *args: forwarded.append((module, args)) or 0)
    result = runner.invoke(app, ["retrain", "--aggregator", "static", "--rubric-set", "default", "--steps", "2",
                                 "--seed", "7", "--remote", "store"])
    assert result.exit_code == 0, result.output
    [(module, args)] = forwarded
    assert module == "flows.retrain"
    got = {}
    monkeypatch.setattr(flows.retrain, "retrain", lambda **kw: got.update(kw) or {})
    flows.retrain.main(list(args))  # the child process's parsing, in this one
    assert {k: got[k] for k in RUN_OPTIONS} == {"aggregator": "static", "rubric_set": "default", "steps": 2,
                                               "seed": 7, "remote": "store"}
    assert got["repo"] == "."


def test_focal_deploy_and_flows_deploy_give_every_run_the_same_options(monkeypatch):
    monkeypatch.chdir(ROOT)
    calls = []
    monkeypatch.setattr(flows.deploy, "serve", lambda repo, cron, interval, **options: calls.append(options))
    result = runner.invoke(app, ["deploy", "--steps", "2", "--remote", "store"])
    assert result.exit_code == 0, result.output
    flows.deploy.main(["--steps", "2", "--remote", "store"])
    given = [{k: v for k, v in c.items() if v is not None} for c in calls]
    assert given == [{"steps": 2, "remote": "store"}] * 2
    assert runner.invoke(app, ["deploy", "--seed", "7"]).exit_code == 2  # not an option of a deployment
