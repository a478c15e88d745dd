"""The Prefect flow and its scheduled deployment, on tiny settings with a fake judge: no vLLM, no network.

- the flow's outputs equal the stage functions' outputs (prepare, judge, validate);
- the flow stops the model servers recorded during the run and publishes its outputs table;
- `python -m flows.deploy --interval 5` against a temporary `prefect server` completes a scheduled run.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, DeploymentFilter, DeploymentFilterId
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL, temporary_settings

from fake_openai import FakeOpenAI
from flows.deploy import DEPLOYMENT
from flows.pipeline import ARTIFACT_KEY, STAGES, pipeline, plan
from focal.config import load_params
from focal.serve import KEEP_ENV, free_port, healthy
from stages import judge, prepare, validate

ROOT = Path(__file__).parents[1]


def tiny_params(folder: Path, judge_url: str = "") -> Path:
    """params.yaml for 3 train prompts whose every output (and server record) lives in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    outs = {"train_prompts": "train.parquet", "eval_prompts": "eval.parquet", "rollouts": "rollouts.parquet",
            "judgments": "judgments.parquet", "judge_cache": "judge.sqlite", "judge_stats": "judge.json",
            "validation_report": "validation.json"}
    raw = {"paths": {"rubrics": str(ROOT / "rubrics"), **{k: str(folder / v) for k, v in outs.items()}},
           "prepare": {"max_train_prompts": 3, "max_eval_prompts": 1},
           "serve": {"state_dir": str(folder / "servers"), "log_dir": str(folder / "logs")}}
    if judge_url:
        raw["judge"] = {"base_url": judge_url, "model": "fake", "concurrency": 2, "backoff_s": 0.01, "timeout_s": 5.0}
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def write_rollouts(params_path: Path, prompt_ids) -> None:
    rows = [{"prompt_id": pid, "rollout_id": f"{pid}-r{g}", "completion": f"answer {g} {'GOOD' if g % 2 else 'meh'}"}
            for pid in prompt_ids for g in range(3)]
    pd.DataFrame(rows).to_parquet(load_params(params_path).paths.rollouts)


def test_plan_follows_dvc_order_and_the_rubrics_rule(tmp_path):
    path = tiny_params(tmp_path)
    assert plan(str(path))[1] == [s for s in STAGES if s != "rubrics"]
    assert plan(str(path), ["validate", "prepare"])[1] == ["prepare", "validate"]
    raw = yaml.safe_load(path.read_text()) | {"base": {"rubric_set": "generated"}}
    path.write_text(yaml.safe_dump(raw))  # base.rubric_set names rubricgen.out_set: rubrics runs first
    assert plan(str(path))[1][:3] == ["model", "rubrics", "prepare"]
    with pytest.raises(ValueError, match="unknown stage 'judg'; stages: model, rubrics"):
        plan(str(path), ["judg"])


def test_flow_equals_the_stage_functions_and_stops_recorded_servers(tmp_path, prefect_harness):
    direct, flowed = tmp_path / "direct", tmp_path / "flow"
    with FakeOpenAI() as server:
        direct_params, flow_params = tiny_params(direct, server.base_url), tiny_params(flowed, server.base_url)
        outs = [prepare.run(load_params(direct_params))]
        ids = pd.read_parquet(direct / "train.parquet").prompt_id
        write_rollouts(direct_params, ids)
        write_rollouts(flow_params, ids)
        outs += [judge.run(load_params(direct_params)), validate.run(load_params(direct_params))]
        # a model server recorded during the run (a stand-in process): the flow stops it at the end
        stand_in = subprocess.Popen(["sleep", "120"], start_new_session=True)
        record = flowed / "servers" / "policy-test.json"
        record.parent.mkdir()
        record.write_text(json.dumps({"pid": stand_in.pid, "base_url": "http://127.0.0.1:9/v1", "model_dir": "x"}))
        try:
            result = pipeline(str(flow_params), ["validate", "judge", "prepare"])
        finally:
            if stand_in.poll() is None:
                stand_in.kill()
    assert result == {s: [str(p).replace(str(direct), str(flowed)) for p in o]
                      for s, o in zip(["prepare", "judge", "validate"], outs)}
    assert list(result) == ["prepare", "judge", "validate"]  # dvc.yaml's order, whatever the order asked
    for name in ("train.parquet", "eval.parquet", "validation.json"):
        assert (direct / name).read_bytes() == (flowed / name).read_bytes(), name
    # judgments and judge stats differ only in measured latencies
    keep = lambda df: df.drop(columns=["latency_s"])  # noqa: E731
    pd.testing.assert_frame_equal(keep(pd.read_parquet(direct / "judgments.parquet")),
                                  keep(pd.read_parquet(flowed / "judgments.parquet")))
    a, b = ({k: v for k, v in json.loads((d / "judge.json").read_text()).items() if k != "judge/latency_s"}
            for d in (direct, flowed))
    assert a == b and a["judge/calls"] > 0
    assert stand_in.wait(timeout=5) is not None and not record.exists()
    assert KEEP_ENV not in os.environ
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[ARTIFACT_KEY])))
    assert any(str(flowed / "judgments.parquet") in a.data for a in artifacts)


def wait_for(check, timeout_s: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    """Poll check() until it returns a truthy value; fail naming `what` (and the log) after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        value = check()
        if value:
            return value
        time.sleep(1)
    pytest.fail(f"{what} within {timeout_s} s; log:\n{log.read_text()[-3000:] if log else ''}")


def stop(proc: subprocess.Popen) -> int:
    """SIGTERM the process (STACK.md: how a served flow stops); its exit code."""
    os.kill(proc.pid, signal.SIGTERM)
    return proc.wait(timeout=90)  # a served process first lets its run in flight finish


@contextlib.contextmanager
def client_of(api: str):
    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        yield client


@pytest.mark.timeout(240)
def test_scheduled_deployment_completes_a_run(tmp_path):
    params_path = tiny_params(tmp_path / "run")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": api,
           "PREFECT_RUNNER_POLL_FREQUENCY": "2", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    server_log, served_log = tmp_path / "server.log", tmp_path / "served.log"
    deployment = f"focal-pipeline/{DEPLOYMENT}"
    with open(server_log, "w") as log:
        server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                   "--port", str(port), "--no-ui"], env=env, cwd=tmp_path, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    served = None
    try:
        wait_for(lambda: healthy(api), 120, "the Prefect server was not healthy", server, server_log)  # GET /api/health
        with open(served_log, "w") as log:
            served = subprocess.Popen([sys.executable, "-m", "flows.deploy", "--interval", "5", "--params",
                                       str(params_path), "--stages", "prepare"], env=env, cwd=ROOT, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True)

        def completed_runs():
            with client_of(api) as client:
                try:
                    dep = client.read_deployment_by_name(deployment)
                except ObjectNotFound:  # not registered yet
                    return None
                runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])))
            failed = [r for r in runs if r.state and r.state.is_final() and not r.state.is_completed()]
            assert not failed, f"{failed[0].state}; log:\n{served_log.read_text()[-3000:]}"
            return [r for r in runs if r.state and r.state.is_completed()]

        runs = wait_for(completed_runs, 150, "no scheduled run completed", served, served_log)
        assert runs[0].parameters["stages"] == ["prepare"]
        assert (tmp_path / "run" / "train.parquet").exists()
        assert stop(served) == 0
        assert stop(server) is not None
    finally:
        for proc in (p for p in (served, server) if p is not None):  # what is left of the groups we started
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
