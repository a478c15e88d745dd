"""The judge stage end to end against a fake server: table schema, and kill mid-run then rerun."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from fake_openai import FakeOpenAI
from focal.config import load_params
from helpers import ROOT, judge_project
from stages import judge as judge_stage

COLUMNS = ["prompt_id", "rollout_id", "criterion_id", "key", "category", "weight", "pitfall", "source", "raw", "score",
           "failure", "reason", "cached", "latency_s"]


def test_judge_stage_writes_the_table(tmp_path):
    with FakeOpenAI() as server:
        params = load_params(judge_project(tmp_path, server.base_url))
        judge_stage.run(params)
        calls = server.calls
    df = pd.read_parquet(params.paths.judgments)
    assert list(df.columns) == COLUMNS
    judged = df[df.source == "judge"]
    assert df.score.between(0, 1).all() and not df.duplicated(["rollout_id", "criterion_id"]).any()
    stats = yaml.safe_load(Path(params.paths.judge_stats).read_text())
    probes = sum(stats[f"{m}/{k}"] for m in ("agreement", "consistency", "consistency/repeat")
                 for k in ("n", "missing"))
    assert probes > 0  # the judge is measured too (against checks, and against itself)
    assert calls == len(judged) + probes and (df.source == "check").any()
    assert stats["judge/calls"] == calls and stats["judge/failures"] == 0


def cached_rows(path) -> int:
    try:
        with sqlite3.connect(path, timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_kill_mid_run_then_rerun_equals_an_uninterrupted_run(tmp_path):
    clean, crash = tmp_path / "clean", tmp_path / "crash"
    clean.mkdir()
    crash.mkdir()
    with FakeOpenAI() as server:
        judge_stage.run(load_params(judge_project(clean, server.base_url)))
        total = server.calls
    with FakeOpenAI(delay_s=0.15) as server:
        params_path = judge_project(crash, server.base_url, concurrency=1)
        cache = crash / "cache.sqlite"
        proc = subprocess.Popen([sys.executable, "-m", "stages.judge", "--params", str(params_path)], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while cached_rows(cache) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        done = cached_rows(cache)
        assert 4 <= done < total, "the kill should land mid-run"
        assert not (crash / "judgments.parquet").exists()  # nothing half-written
        before = server.calls
        judge_stage.run(load_params(params_path))
        rerun_calls = server.calls - before
    assert rerun_calls == total - done  # nothing already judged was asked again
    keep = ["prompt_id", "rollout_id", "criterion_id", "source", "raw", "score", "reason"]
    a = pd.read_parquet(clean / "judgments.parquet")[keep]
    b = pd.read_parquet(crash / "judgments.parquet")[keep]
    pd.testing.assert_frame_equal(a, b)


def focal_judge(params_path, rollouts, out):
    """`focal judge ROLLOUTS` through the CLI entry point (typer's runner, in process)."""
    from typer.testing import CliRunner

    from flows.cli import app

    result = CliRunner().invoke(app, ["judge", str(rollouts), "--out", str(out), "--params", str(params_path)])
    assert result.exit_code == 0, result.output
    return result.output


def with_judge(path: Path, **judge) -> Path:
    raw = yaml.safe_load(path.read_text())
    raw["judge"].update(judge)
    path.write_text(yaml.safe_dump(raw))
    return path


def test_judge_cache_is_keyed_by_who_judges_and_how(tmp_path):
    """A rerun makes 0 calls; a new temperature, model name or endpoint each makes every call again."""
    with FakeOpenAI() as a, FakeOpenAI(root="/srv/other-weights") as b:
        path = judge_project(tmp_path, a.base_url)
        rollouts, out = load_params(path).paths.rollouts, tmp_path / "out.parquet"
        focal_judge(path, rollouts, out)
        first = a.calls
        assert first > 0
        focal_judge(path, rollouts, out)
        assert a.calls == first  # rerun: every answer from the cache
        focal_judge(with_judge(path, temperature=0.5), rollouts, out)
        assert a.calls == 2 * first  # new decoding setting: asked again
        focal_judge(with_judge(path, model="other"), rollouts, out)
        assert a.calls == 3 * first  # another model name at the same endpoint: asked again
        focal_judge(with_judge(path, base_url=b.base_url), rollouts, out)
        assert b.calls == first and a.calls == 3 * first  # another endpoint: asked again, there


def test_a_model_the_endpoint_does_not_serve_is_refused(tmp_path):
    with FakeOpenAI(models=("judge",)) as server:
        params = load_params(with_judge(judge_project(tmp_path, server.base_url), model="nope"))
        try:
            judge_stage.run(params)
        except ValueError as e:
            assert "serves no model named 'nope'" in str(e) and "judge.base_url" in str(e)
        else:
            raise AssertionError("judging with a model the endpoint does not serve must fail")
        assert server.calls == 0


def test_focal_judge_against_a_dead_endpoint_fails_fast_in_one_line(tmp_path):
    """Acceptance (issue 11): judge.base_url at a port where nothing listens -> non-zero within 30 s, one line
    naming the URL and the param."""
    from focal.serving.server import free_port

    with FakeOpenAI() as server:
        path = judge_project(tmp_path, server.base_url)  # prompt tables and rollouts
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with_judge(path, base_url=dead)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "judge", str(load_params(path).paths.rollouts),
                           "--params", str(path)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert time.monotonic() - t0 < 30
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and dead in error[0] and "judge.base_url" in error[0]


def test_the_judge_stage_fails_when_too_many_calls_fail(tmp_path):
    with FakeOpenAI() as server:
        path = judge_project(tmp_path, server.base_url)
        rollouts = pd.read_parquet(load_params(path).paths.rollouts)
        rollouts["completion"] = rollouts.completion + " [[fault:500:all]]"  # every judge call fails
        rollouts.to_parquet(load_params(path).paths.rollouts)
        params = load_params(with_judge(path, max_retries=0))
        try:
            judge_stage.run(params)
        except ValueError as e:
            message = str(e)
        else:
            raise AssertionError("the judge stage must fail when every call fails")
    assert "judge: 27 of 27 judge calls failed (100.0% > judge.max_failure_share 20%): server_error 27" in message
    assert not Path(params.paths.judgments).exists()  # nothing half-good is written


def test_a_stage_that_failed_on_transient_errors_only_exits_75(tmp_path):
    """focal.core.stage.EX_TEMPFAIL when every failed call was transient (the flows retry the stage), 1 otherwise."""
    from focal.core.stage import EX_TEMPFAIL

    for always, code in (("500", EX_TEMPFAIL), ("malformed", 1)):  # a server error may pass; a bad answer stays bad
        with FakeOpenAI(always=always) as server:
            folder = tmp_path / always
            folder.mkdir()
            path = judge_project(folder, server.base_url)
            raw = yaml.safe_load(path.read_text())
            raw["judge"].update(max_retries=0, mode="per_criterion")
            path.write_text(yaml.safe_dump(raw))
            proc = subprocess.run([sys.executable, "-m", "stages.judge", "--params", str(path)], cwd=ROOT,
                                  capture_output=True, text=True, timeout=120)
        assert proc.returncode == code, proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
