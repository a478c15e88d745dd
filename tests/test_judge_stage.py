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
from stages import judge as judge_stage
from stages import prepare

ROOT = Path(__file__).parents[1]
COLUMNS = ["prompt_id", "rollout_id", "criterion_id", "key", "category", "weight", "pitfall", "source", "raw", "score",
           "reason", "cached", "latency_s"]


def setup(tmp_path: Path, base_url: str, concurrency=2) -> Path:
    """Prompt tables for 3 train prompts, 3 rollouts each, and params pointing at the fake judge."""
    raw = {"paths": {"rubrics": str(ROOT / "rubrics"), **{k: str(tmp_path / v) for k, v in {
               "train_prompts": "train.parquet", "eval_prompts": "eval.parquet", "rollouts": "rollouts.parquet",
               "judgments": "judgments.parquet", "judge_cache": "cache.sqlite", "judge_stats": "stats.json"}.items()}},
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


def test_judge_stage_writes_the_table(tmp_path):
    with FakeOpenAI() as server:
        params = load_params(setup(tmp_path, server.base_url))
        judge_stage.run(params)
        calls = server.calls
    df = pd.read_parquet(params.paths.judgments)
    assert list(df.columns) == COLUMNS
    judged = df[df.source == "judge"]
    assert calls == len(judged) > 0 and (df.source == "check").any()
    assert df.score.between(0, 1).all() and not df.duplicated(["rollout_id", "criterion_id"]).any()
    stats = yaml.safe_load(Path(params.paths.judge_stats).read_text())
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
        judge_stage.run(load_params(setup(clean, server.base_url)))
        total = server.calls
    with FakeOpenAI(delay_s=0.15) as server:
        params_path = setup(crash, server.base_url, concurrency=1)
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
