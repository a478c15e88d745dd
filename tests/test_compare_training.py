"""The evidence protocol end to end on the tiny model: 2 aggregators x 1 seed x 2 steps, records, skip, resume."""

import json

import pytest
import yaml

from benchmarks import compare_training
from focal.config import load_params
from tiny import make_tiny_model


def write_params(tmp_path, tiny, more=None, **compare):
    raw = {**(more or {}), "compare": {"aggregators": ["static", "focal"], "seeds": [0], "policy": str(tiny),
                       "train": {"max_steps": 2, "prompts_per_step": 1, "num_generations": 2,
                                 "max_completion_length": 4, "save_steps": 1, "learning_rate": 0.01},
                       "eval_prompts": 2, "eval_samples": 2, "eval_max_tokens": 4,
                       "results": str(tmp_path / "results.json"), "work_dir": str(tmp_path / "runs"), **compare}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_params(path)


def test_protocol_records_every_run_and_skips_finished_ones(tmp_path, capsys):
    tiny = make_tiny_model(tmp_path / "tiny")
    params = write_params(tmp_path, tiny)
    new = compare_training.run(params)
    assert [(r["aggregator"], r["seed"]) for r in new] == [("base", None), ("static", 0), ("focal", 0)]
    records = json.loads((tmp_path / "results.json").read_text())["records"]
    assert len(records) == 3
    for r in records[1:]:
        assert r["steps"] == 2 and r["eval_prompts"] == 2 and r["samples_per_prompt"] == 2
        assert set(r["prompt_scores"]) == set(records[0]["prompt_scores"])  # paired prompts
        assert r["key_pass_rates"] and 0 <= r["rubric_score"] <= 1 and r["train_seconds"] > 0
        assert "reward" in r["curves"] and len(r["curves"]["reward"]) == 2
    focal_curves = records[2]["curves"]
    assert any(k.endswith("/saturation") for k in focal_curves)
    # the report pairs focal with static on the same seed and prompts, and draws the picture
    from benchmarks import compare_report

    runs = compare_report.by_aggregator(records)
    p = compare_report.paired(runs["static"], runs["focal"], n_boot=50)
    d = [records[2]["prompt_scores"][k] - records[1]["prompt_scores"][k] for k in sorted(records[1]["prompt_scores"])]
    assert p["seeds"] == 1 and p["prompts"] == 2 and p["diff"] == pytest.approx(sum(d) / 2)
    compare_report.report(tmp_path / "results.json")
    assert (tmp_path / "results.png").read_bytes()[:4] == b"\x89PNG"
    # a rerun trains nothing: every run of this protocol is recorded
    assert compare_training.run(params) == []
    assert "recorded, skipped" in capsys.readouterr().out
    # a changed protocol (more steps) is a new set of runs, resumed from the old checkpoints' identity? no: new key
    more = write_params(tmp_path, tiny, aggregators=["static"], train={"max_steps": 3, "prompts_per_step": 1,
                        "num_generations": 2, "max_completion_length": 4, "save_steps": 1, "learning_rate": 0.01})
    assert [r["aggregator"] for r in compare_training.run(more)] == ["base", "static"]


def test_an_interrupted_run_resumes_from_its_checkpoint(tmp_path, capsys):
    tiny = make_tiny_model(tmp_path / "tiny")
    params = write_params(tmp_path, tiny, aggregators=["focal"])
    ident, train_items, _, policy = compare_training.protocol(params)
    key = compare_training.content_key(ident)[:12]
    work = tmp_path / "runs" / f"focal-s0-{key}"
    # a first attempt stopped after one step, with its checkpoint (and focal's state) on disk
    first = params.compare.train.copy()
    first["max_steps"] = 1
    short = write_params(tmp_path, tiny, aggregators=["focal"], train=first)
    compare_training.train_one(short, "focal", 0, train_items, policy, work)
    assert (work / "checkpoint-1" / "focal_state.json").exists()
    # the time spent before the interruption counts in the resumed run's train_seconds (set large to tell it apart)
    (work / "checkpoint-1" / "elapsed_seconds.json").write_text('{"seconds": 1000.0}')
    capsys.readouterr()
    (rec,) = [r for r in compare_training.run(params) if r["aggregator"] == "focal"]
    assert "resuming from" in capsys.readouterr().out
    assert 1000.0 < rec["train_seconds"] < 1100.0


def test_training_curves_are_window_means_over_seeds():
    from benchmarks.compare_report import window_means

    # run 1: steps 1 and 3 in window 0 (mean .5), 12 in window 1; run 2: only step 5 in window 0; run 3: nothing
    steps, means = window_means([[[1, 0.0], [3, 1.0], [12, 0.4]], [[5, 0.9]], []], width=10)
    assert steps.tolist() == [5.0, 15.0]
    assert means.tolist() == pytest.approx([(0.5 + 0.9) / 2, 0.4])


def test_a_protocol_with_the_llm_judge_in_the_reward(tmp_path):
    """compare.checks_only false: criteria without a check are judged (a loopback judge) in training and evaluation,
    and the judge is part of the protocol's identity."""
    from fake_openai import FakeOpenAI

    tiny = make_tiny_model(tmp_path / "tiny")
    with FakeOpenAI() as server:
        def params_for(model):
            judge = {"judge": {"base_url": server.base_url, "model": model, "max_retries": 0, "timeout_s": 5.0},
                     "paths": {"judge_cache": str(tmp_path / "judge.sqlite")}}
            return write_params(tmp_path, tiny, more=judge, checks_only=False, aggregators=["focal"])

        params = params_for("judge")
        ident, train_items, eval_items, _ = compare_training.protocol(params)
        judged = {c.key for it in train_items + eval_items for c in it.criteria if c.check is None}
        assert judged  # the default set has criteria only a judge decides
        new = compare_training.run(params)
        assert [r["aggregator"] for r in new] == ["base", "focal"] and server.calls > 0
        assert all(b["model"] == "judge" for b in server.requests)
        for r in new:  # every judged key that an eval prompt has got a pass rate
            assert {c.key for it in eval_items for c in it.criteria if c.check is None} <= set(r["key_pass_rates"])
        trained = {k.split("/")[1] for k in new[1]["curves"] if k.endswith("/pass_rate")}
        assert trained & judged  # the judged criteria were in the training reward
        # another judge model answering is another protocol
        other = compare_training.protocol(params_for("other"))[0]
        assert compare_training.content_key(other) != compare_training.content_key(ident)
        assert ident["judge"][0] != other["judge"][0]


def test_the_seed_and_prompt_interval_carries_the_seeds_disagreement():
    """Two seeds that disagree completely: +0.5 on every prompt on one, -0.5 on the other. Averaged over seeds each
    prompt's difference is 0, so the prompts-only interval is [0, 0]; resampling seeds too must show the spread."""
    from benchmarks import compare_report

    def run(seed, score):
        return {"seed": seed, "prompt_scores": {f"p{i}": score for i in range(8)},
                **{f: 0.0 for f in compare_report.FIGURES}}

    a = [run(0, 0.25), run(1, 0.75)]
    b = [run(0, 0.75), run(1, 0.25)]
    p = compare_report.paired(a, b, n_boot=400)
    assert p["diff"] == 0.0 and p["ci_low"] == p["ci_high"] == 0.0
    assert p["ci2_low"] == -0.5 and p["ci2_high"] == 0.5  # a draw of seed 0 twice gives +0.5, seed 1 twice -0.5
