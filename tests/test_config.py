"""params.yaml validation: every knob's type and range is checked on construction, and the error
names the key (section.key), the allowed range and the value."""

import dataclasses
import math
import re
from pathlib import Path

import pytest

from focal.config import Judge, Params, Serve, Train, load_params, params_from_dict

ROOT = Path(__file__).parents[1]


def test_defaults_and_the_committed_params_are_valid():
    Params()
    load_params(ROOT / "params.yaml")


@pytest.mark.parametrize("section, key, value, expected", [
    # counts
    ("evaluate", "limit", -1, "evaluate.limit must be >= 0, got -1"),
    ("evaluate", "n_bootstrap", 0, "evaluate.n_bootstrap must be in [1, 1000000], got 0"),
    ("evaluate", "num_generations", 0, "evaluate.num_generations must be in [1, 1024], got 0"),
    ("judge", "concurrency", 0, "judge.concurrency must be in [1, 1024], got 0"),
    ("judge", "concurrency", 100_000_000, "judge.concurrency must be in [1, 1024], got 100000000"),
    ("judge", "max_tokens", 0, "judge.max_tokens must be in [1, 1000000], got 0"),
    ("judge", "max_retries", -1, "judge.max_retries must be in [0, 20], got -1"),
    ("judge", "max_retries", 1000, "judge.max_retries must be in [0, 20], got 1000"),
    ("rollouts", "max_tokens", 0, "rollouts.max_tokens must be in [1, 1000000], got 0"),
    ("rollouts", "num_generations", 0, "rollouts.num_generations must be in [1, 1024], got 0"),
    ("rubricgen", "min_criteria", 0, "rubricgen.min_criteria must be >= 1, got 0"),
    ("rubricgen", "refine_rounds", -1, "rubricgen.refine_rounds must be >= 0, got -1"),
    ("train", "num_generations", 1, "train.num_generations must be in [2, 1024], got 1"),
    ("train", "max_steps", 0, "train.max_steps must be >= 1, got 0"),
    ("train", "steps_per_generation", 0, "train.steps_per_generation must be >= 1, got 0"),
    ("train", "lora_r", -1, "train.lora_r must be >= 0, got -1"),
    ("train", "save_steps", -2, "train.save_steps must be >= 0, got -2"),
    ("compare", "eval_samples", 0, "compare.eval_samples must be >= 1, got 0"),
    ("compare", "eval_prompts", -1, "compare.eval_prompts must be >= 0, got -1"),
    ("base", "seed", -1, "base.seed must be >= 0, got -1"),
    ("serve", "port", 70000, "serve.port must be in [0, 65535], got 70000"),
    ("serve", "port", -1, "serve.port must be in [0, 65535], got -1"),
    # shares, temperatures, timeouts
    ("serve", "gpu_memory_utilization", 1.5, "serve.gpu_memory_utilization must be in (0, 1], got 1.5"),
    ("judge", "max_failure_share", 1.2, "judge.max_failure_share must be in [0, 1], got 1.2"),
    ("rollouts", "top_p", 0, "rollouts.top_p must be in (0, 1], got 0.0"),
    ("train", "alpha_min", 0, "train.alpha_min must be in (0, 1], got 0.0"),
    ("train", "ema_beta", 1, "train.ema_beta must be in [0, 1), got 1.0"),
    ("train", "learning_rate", 0, "train.learning_rate must be > 0, got 0.0"),
    ("train", "temperature", 0, "train.temperature must be > 0, got 0.0"),
    ("judge", "temperature", -0.1, "judge.temperature must be >= 0, got -0.1"),
    ("evaluate", "temperature", -1, "evaluate.temperature must be >= 0, got -1.0"),
    ("compare", "eval_temperature", -1, "compare.eval_temperature must be >= 0, got -1.0"),
    ("judge", "timeout_s", 0, "judge.timeout_s must be in (0, 86400], got 0.0"),
    ("judge", "timeout_s", 1e9, "judge.timeout_s must be in (0, 86400], got 1000000000.0"),
    ("serve", "startup_timeout_s", -5, "serve.startup_timeout_s must be in (0, 86400], got -5.0"),
    ("judge", "backoff_s", -1, "judge.backoff_s must be in [0, 600], got -1.0"),
    # NaN and inf, for every float
    ("judge", "timeout_s", math.nan, "`judge.timeout_s` must be float (a finite number), got nan"),
    ("rollouts", "timeout_s", math.inf, "`rollouts.timeout_s` must be float (a finite number), got inf"),
    ("train", "gamma", math.nan, "`train.gamma` must be float (a finite number), got nan"),
    ("validate", "criterion_mean_max", math.nan, "`validate.criterion_mean_max` must be float (a finite number)"),
    # booleans are not numbers, numbers are not booleans
    ("judge", "concurrency", True, "`judge.concurrency` must be int, got True"),
    ("evaluate", "temperature", False, "`evaluate.temperature` must be float (a finite number), got False"),
    ("train", "bf16", 1, "`train.bf16` must be bool (true or false), got 1"),
    ("judge", "structured", "yes", "`judge.structured` must be bool (true or false), got 'yes'"),
    ("evaluate", "limit", 2.5, "`evaluate.limit` must be int, got 2.5"),
    # names
    ("train", "aggregator", "", "train.aggregator must be non-empty text, got ''"),
    ("train", "scale_rewards", "mean", "train.scale_rewards must be one of group, batch, none, got 'mean'"),
    ("rollouts", "backend", "hf", "rollouts.backend must be one of vllm, transformers, got 'hf'"),
    ("rollouts", "split", "test", "rollouts.split must be one of train, eval, got 'test'"),
    ("evaluate", "backend", "hf", "evaluate.backend must be one of vllm, transformers, got 'hf'"),
    ("serve", "dtype", "float64", "serve.dtype must be one of auto, half, float16, bfloat16, float, float32, got 'float64'"),
    ("evaluate", "benchmarks", ["eval", ""], "evaluate.benchmarks must be a non-empty list whose entries are each "
                                             "non-empty text, got ['eval', '']"),
    ("evaluate", "benchmarks", [], "evaluate.benchmarks must be a non-empty list"),
    ("compare", "seeds", [0, -1], "compare.seeds must be a non-empty list whose entries are each an integer >= 0, got [0, -1]"),
    ("compare", "seeds", [True], "compare.seeds must be a non-empty list whose entries are each an integer >= 0, got [True]"),
    ("serve", "extra_args", ["--x", 3], "serve.extra_args must be a list whose entries are each text, got ['--x', 3]"),
    ("paths", "judgments", "", "paths.judgments must be non-empty text, got ''"),
    ("base", "rubric_set", "a/b", "base.rubric_set must be a folder name (non-empty, no '/'), got 'a/b'"),
    ("rubricgen", "out_set", "", "rubricgen.out_set must be a folder name (non-empty, no '/'), got ''"),
])
def test_a_bad_knob_names_key_range_and_value(section, key, value, expected):
    with pytest.raises(ValueError, match=re.escape(f"params.yaml: {expected}")):
        params_from_dict({section: {key: value}}, "params.yaml")


@pytest.mark.parametrize("raw, expected", [
    ({"train": {"aggregator": "focall"}}, "unknown aggregator 'focall' (params.yaml: train.aggregator); valid aggregators: static, "
                                          "gdpo, pow3r, focal, focal_proj, strict, min"),
    ({"compare": {"aggregators": ["static", "best"]}}, "unknown aggregator 'best' (params.yaml: compare.aggregators)"),
    ({"compare": {"confirm_arms": ["static", "focla"]}}, "unknown aggregator 'focla' (params.yaml: compare.confirm_arms)"),
])
def test_aggregator_names_are_checked_where_params_become_a_reward(raw, expected):
    """focal.config sits below the aggregators' registry: a name loads, and the CLI, the train stage and the evidence
    protocol check it (check_aggregator_knobs) before any work, naming the knob and listing the valid names."""
    from focal.rewards.aggregators import check_aggregator_knobs

    params = params_from_dict(raw, "params.yaml")
    with pytest.raises(ValueError, match=re.escape(expected)):
        check_aggregator_knobs(params, "params.yaml")


@pytest.mark.parametrize("raw, expected", [
    ({"compare": {"train": {"max_steps": 0}}}, "compare.train: train.max_steps must be >= 1, got 0"),
    ({"compare": {"train": {"temperature": "hot"}}}, "compare.train: `train.temperature` must be float"),
    ({"compare": {"train": {"stepz": 3}}}, "compare.train.stepz is not a train.* key"),
    ({"validate": {"criterion_mean_min": 0.8, "criterion_mean_max": 0.5}},
     "validate.criterion_mean_min must be <= validate.criterion_mean_max, got 0.8 > 0.5"),
    ({"rubricgen": {"min_criteria": 9, "max_criteria": 8}}, "rubricgen needs 1 <= min_criteria <= max_criteria, got 9, 8"),
])
def test_knobs_that_depend_on_each_other(raw, expected):
    with pytest.raises(ValueError, match=re.escape(expected)):
        params_from_dict(raw, "params.yaml")


def test_sections_are_validated_when_built_directly():
    with pytest.raises(ValueError, match=re.escape("`train.num_generations` must be int, got '4'")):
        Train(num_generations="4")
    with pytest.raises(ValueError, match=re.escape("judge.concurrency must be in [1, 1024], got 0")):
        Judge(concurrency=0)
    assert Serve(startup_timeout_s=20).startup_timeout_s == 20.0 and isinstance(Judge(timeout_s=5).timeout_s, float)


def test_every_number_knob_declares_its_range():
    numbers = 0
    for section in dataclasses.fields(Params):
        obj = section.default_factory()
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)  # the default's type, as check_knobs uses it (annotations may be strings)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                numbers += 1
                assert f.metadata.get("rules"), f"{section.name}.{f.name} has no range"
    assert numbers > 50  # the loop saw the number knobs (judge.concurrency, train.gamma, ...)
