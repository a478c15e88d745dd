"""The evidence protocol end to end on the tiny model: 2 aggregators x 1 seed x 2 steps, records, skip, resume."""

import json
from pathlib import Path

import pytest
import yaml

from benchmarks import compare_training
from focal.config import load_params
from tiny import make_tiny_model


TRAIN = {"max_steps": 2, "prompts_per_step": 1, "num_generations": 2, "max_completion_length": 4, "save_steps": 1,
         "learning_rate": 0.01, "lora_r": 2, "lora_alpha": 4}


def write_params(tmp_path, tiny, more=None, **compare):
    raw = {**(more or {}), "compare": {"aggregators": ["static", "focal"], "seeds": [0], "policy": str(tiny),
                       "train": TRAIN, "rubric_set": "ifeval", "eval_prompts": 2, "eval_samples": 2,
                       "eval_max_tokens": 4, "results": str(tmp_path / "results.json"),
                       "work_dir": str(tmp_path / "runs"), "adapters": str(tmp_path / "adapters"), **compare}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_params(path)


def test_protocol_records_every_run_and_skips_finished_ones(tmp_path, capsys, monkeypatch):
    tiny = make_tiny_model(tmp_path / "tiny")
    params = write_params(tmp_path, tiny)
    new = compare_training.run(params)
    assert [(r["aggregator"], r["seed"]) for r in new] == [("base", None), ("static", 0), ("focal", 0)]
    records = json.loads((tmp_path / "results.json").read_text())["records"]
    assert len(records) == 3
    for r in records[1:]:
        assert r["steps"] == 2 and r["eval_prompts"] == 2 and r["samples_per_prompt"] == 2
        # IFEval's metrics through its checkers, with per-prompt figures on the same prompts for pairing
        m = r["ifeval"]
        assert set(m["prompt_scores"]["prompt_strict"]) == set(records[0]["ifeval"]["prompt_scores"]["prompt_strict"])
        assert all(0 <= m[f] <= 1 for f in ("prompt_strict", "prompt_loose", "instruction_strict", "instruction_loose"))
        assert m["responses"] == 4 and m["group_pass_rates"]
        assert "reward" in r["curves"] and len(r["curves"]["reward"]) == 2
        # a record says what produced it: the aggregator that trained it, when, and from which code
        assert r["settings"]["train"]["aggregator"] == r["aggregator"]
        assert r["finished_at"].endswith("+00:00") and set(r["code"]) == {"commit", "dirty"}
        # the run's adapter is kept (fp16) for later re-evaluation
        adapter = tmp_path / "adapters" / r["protocol"] / f"{r['aggregator']}-s0"
        assert (adapter / "adapter_config.json").exists() and (adapter / "adapter_model.safetensors").exists()
    focal_curves = records[2]["curves"]
    assert any(k.endswith("/saturation") for k in focal_curves)
    # the report pairs focal with static on the same seed, checks ranges, and draws the picture
    from benchmarks import compare_report

    text = compare_report.report(tmp_path / "results.json")
    assert "every per-prompt score is in [0, 1]" in text and "| static | 1 |" in text and "| focal - static |" in text
    assert (tmp_path / "results.png").read_bytes()[:4] == b"\x89PNG"
    # a rerun trains nothing: every run of this protocol is recorded
    assert compare_training.run(params) == []
    assert "recorded, skipped" in capsys.readouterr().out
    # a changed protocol (more steps) is a new set of runs
    more = write_params(tmp_path, tiny, aggregators=["static"], train={**TRAIN, "max_steps": 3})
    new_base, _ = compare_training.run(more)
    assert new_base["aggregator"] == "base" and new_base["protocol"] != records[0]["protocol"]
    assert new_base["ifeval"] == records[0]["ifeval"]  # the base evaluation does not depend on training: reused
    # --evaluate-on: base and every recorded run of this protocol on a file the project has never seen
    unseen = tmp_path / "unseen.jsonl"
    unseen.write_text("".join(json.dumps(r) + "\n" for r in [
        {"key": 7, "prompt": "Say hi. Do not use any commas.", "instruction_id_list": ["punctuation:no_comma"],
         "kwargs": [{}]},
        {"key": 8, "prompt": "Name a fruit. Use lowercase only.", "instruction_id_list": ["change_case:english_lowercase"],
         "kwargs": [{"unused": None}]}]))
    capsys.readouterr()
    compare_training.main(["--params", str(tmp_path / "params.yaml"), "--evaluate-on", str(unseen),
                           "--out", str(tmp_path / "completions")])
    out = capsys.readouterr().out
    assert "| static | 1 |" in out and "prompt_strict" in out
    for name in ("base", "static-s0"):
        lines = [json.loads(x) for x in (tmp_path / "completions" / f"{name}.jsonl").read_text().splitlines()]
        assert [x["prompt"] for x in lines] == ["Say hi. Do not use any commas.", "Name a fruit. Use lowercase only."]
        assert all(isinstance(x["response"], str) for x in lines)
    # the report adds every evaluated file of the protocol, its pre-registered secondaries labelled
    text = compare_report.report(tmp_path / "results.json", "prompt_strict", ("instruction_strict", "ifeval:prompt_strict"))
    assert "## evaluate_on-unseen-" in text and "2 responses scored, 0 left out" in text
    assert "Secondary (pre-registered): prompt_strict" in text.split("## evaluate_on-unseen-")[1]
    other = compare_report.report(tmp_path / "results.json", "prompt_strict", ("instruction_strict",))
    assert "Nothing pre-registered for this file" in other and "(primary)" not in other.split("## evaluate_on-unseen-")[1]
    # a rerun samples nothing: what was sampled is scored again from its completions files
    def no_sampling(*args, **kwargs):
        raise AssertionError("sampled again")

    store = next(tmp_path.glob("evaluate_on-unseen-*.json"))
    kept = json.loads(store.read_text())
    for r in kept["records"]:
        r["ifeval"]["prompt_strict"] = -1.0  # as if scored by an older checker
    store.write_text(json.dumps(kept))
    monkeypatch.setattr(compare_training, "sample_eval", no_sampling)
    compare_training.main(["--params", str(tmp_path / "params.yaml"), "--evaluate-on", str(unseen),
                           "--out", str(tmp_path / "completions")])
    assert "| static | 1 |" in capsys.readouterr().out
    assert all(0 <= r["ifeval"]["prompt_strict"] <= 1 for r in json.loads(store.read_text())["records"])
    monkeypatch.undo()
    # several samples: one file per sample index (IFEval's scorer keys responses by prompt)
    compare_training.main(["--params", str(tmp_path / "params.yaml"), "--evaluate-on", str(unseen), "--samples", "2",
                           "--out", str(tmp_path / "two")])
    for k in (0, 1):
        lines = (tmp_path / "two" / f"static-s0-k{k}.jsonl").read_text().splitlines()
        assert [json.loads(x)["prompt"] for x in lines] == ["Say hi. Do not use any commas.",
                                                            "Name a fruit. Use lowercase only."]
    with pytest.raises(SystemExit, match="--samples must be at least 1"):
        compare_training.main(["--params", str(tmp_path / "params.yaml"), "--evaluate-on", str(unseen), "--samples", "0"])
    # a file the registry cannot check fails before any sampling, naming the line and the instruction
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"key": 1, "prompt": "p", "instruction_id_list": ["punctuation:no_coma"], "kwargs": [{}]}) + "\n")
    monkeypatch.setattr(compare_training, "sample_eval", no_sampling)
    with pytest.raises(SystemExit, match=r"bad.jsonl:1.*punctuation:no_coma"):
        compare_training.main(["--params", str(tmp_path / "params.yaml"), "--evaluate-on", str(bad)])


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


def test_a_protocol_with_the_llm_judge_in_the_reward(tmp_path):
    """compare.checks_only false: criteria without a check are judged (a loopback judge) in training and evaluation,
    and the judge is part of the protocol's identity."""
    from fake_openai import FakeOpenAI

    tiny = make_tiny_model(tmp_path / "tiny")
    with FakeOpenAI() as server:
        def params_for(model):
            judge = {"judge": {"base_url": server.base_url, "model": model, "max_retries": 0, "timeout_s": 5.0},
                     "paths": {"judge_cache": str(tmp_path / "judge.sqlite")}}
            return write_params(tmp_path, tiny, more=judge, checks_only=False, aggregators=["focal"],
                                rubric_set="default")

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
    """Two seeds that disagree completely: +0.5 on every prompt on one, -0.5 on the other. Resampling seeds and
    prompts must show the spread: a draw of seed 0 twice gives +0.5, of seed 1 twice -0.5."""
    from benchmarks import compare_report

    def run(seed, score):
        scores = {f"p{i}": score for i in range(8)}
        return {"seed": seed, "ifeval": {"prompt_strict": score, "prompt_scores": {"prompt_strict": scores}}}

    c = compare_report.compare([run(0, 0.25), run(1, 0.75)], [run(0, 0.75), run(1, 0.25)], "prompt_strict")
    assert c["per_seed"] == [0.5, -0.5] and c["mean"] == 0.0
    assert c["sp_low"] == -0.5 and c["sp_high"] == 0.5
    assert compare_report.verdict(c) == "too few seeds to test"  # two seeds: MIN_SEEDS is 3
    c3 = compare_report.compare([run(0, 0.25), run(1, 0.75), run(2, 0.5)], [run(0, 0.75), run(1, 0.25), run(2, 0.5)],
                                "prompt_strict")
    assert compare_report.verdict(c3) == "no difference detected"


def test_report_reads_per_seed_differences_and_says_no_difference_when_an_interval_holds_zero():
    from benchmarks import compare_report

    def run(agg, seed, v):
        return {"aggregator": agg, "seed": seed, "protocol": "k", "train_seconds": 60.0, "steps": 5,
                "ifeval": {"prompt_strict": v, "instruction_strict": v, "prompt_loose": v, "instruction_loose": v,
                           "min_group": v, "group_pass_rates": {"g": v}, "instruction_pass_rates": {"x": v},
                           "prompt_scores": {"prompt_strict": {"p": v}}}}

    # focal - static per seed: +0.1, +0.2, -0.1 (hand: mean 0.0667, sample std 0.1528, sign-flip p 6/8)
    recs = [run("static", s, 0.3) for s in range(3)] + [run("focal", s, 0.3 + d) for s, d in enumerate([0.1, 0.2, -0.1])]
    text = compare_report.tables(recs, secondary=("min_group",))
    row = next(line for line in text.splitlines() if line.startswith("| focal - static | prompt_strict"))
    assert "| focal - static | prompt_strict (primary) |" in text and "| focal - static | min_group (secondary) |" in text
    assert "| focal - static | prompt_loose |" in text  # neither: unlabelled
    # per seed: the primary and each pre-registered secondary, not the unlabelled figures
    assert "Per seed, prompt_strict:" in text and "Per seed, min_group:" in text and "Per seed, prompt_loose:" not in text
    assert "| 2 | 0.300 | 0.200 | -0.100 |" in text.split("Per seed, min_group:")[1]
    assert "| 3 | 2/3 | +0.067 | 0.153 |" in row and "| 0.750 |" in row and "no difference detected" in row
    # a consistent difference on every seed is read as one (both intervals exclude zero)
    recs = [run("static", s, 0.3) for s in range(4)] + [run("focal", s, 0.4 + 0.01 * s) for s in range(4)]
    row = next(line for line in compare_report.tables(recs).splitlines() if "| focal - static | prompt_strict" in line)
    assert "higher (intervals exclude zero)" in row


def test_where_the_gains_land_per_criterion_hardest_first():
    from benchmarks import compare_report

    def run(agg, seed, a, b):
        return {"aggregator": agg, "seed": seed, "protocol": "k",
                "ifeval": {"instruction_pass_rates": {"easy": b, "hard": a}}}

    recs = [run("base", None, 0.2, 0.9), run("static", 0, 0.3, 0.9), run("static", 1, 0.5, 1.0),
            run("focal", 0, 0.4, 0.8), run("focal", 1, 0.8, 1.0)]
    lines = [line for line in compare_report.criterion_lines(recs).splitlines() if line.startswith("| ")]
    # hand: hard first (base 0.2); static mean 0.4, focal 0.6, focal - static per seed +0.1, +0.3 -> +0.2 on 2/2;
    # easy: static 0.95, focal 0.9, per seed -0.1, 0.0 -> -0.05 on 0/2
    assert lines[0] == "| criterion | base | static | focal | focal - static |"
    assert lines[1] == "| hard | 0.200 | 0.400 | 0.600 | +0.200 (2/2) |"
    assert lines[2] == "| easy | 0.900 | 0.950 | 0.900 | -0.050 (0/2) |"
    assert compare_report.criterion_lines([run("base", None, 0.2, 0.9)]) == ""


def test_checks_name_criteria_and_prompts_that_cannot_tell_the_arms_apart():
    from benchmarks import compare_report

    def run(agg, seed, moving, p2):
        return {"aggregator": agg, "seed": seed, "protocol": "k",
                "ifeval": {"instruction_pass_rates": {"frozen": 0.5, "moving": moving, "never": 0.0},
                           "prompt_scores": {"prompt_strict": {"p1": 0.0, "p2": p2, "p3": 1.0}}}}

    recs = [run("base", None, 0.2, 0.0), run("static", 0, 0.4, 0.25), run("focal", 0, 0.4, 1.0)]
    lines = compare_report.range_checks(recs, ("prompt_strict",))
    assert "- criteria met by no policy in any run: never" in lines
    # 'moving' has one rate in the two trained runs but another in base's: it moved
    assert "- criteria with the same pass rate in every run (no policy moved them): frozen" in lines
    assert any(line.startswith("- prompts whose prompt_strict is 0 for every policy in every run: 1 of 3; "
                               "1 for every policy in every run: 1") for line in lines)


def test_instruction_level_intervals_pool_instructions_not_prompts():
    """40 prompts with 3 instructions each gain 0.3 of their instructions, 40 with 1 instruction lose 0.6: pooled over
    instructions (IFEval's instruction-level accuracy) that is +0.075, averaged over prompts -0.15. The interval
    resampling seeds and prompts must be about the pooled figure."""
    from benchmarks import compare_report

    counts = {f"a{i}": 3 for i in range(40)} | {f"b{i}": 1 for i in range(40)}

    def run(seed, shares):
        pooled = sum(shares[k] * counts[k] for k in counts) / sum(counts.values())
        return {"aggregator": "x", "seed": seed, "ifeval": {"instruction_strict": pooled, "prompt_instructions": counts,
                                                            "prompt_scores": {"instruction_strict": shares}}}

    base = {k: 0.5 for k in counts}
    better = {k: 0.5 + (0.3 if k.startswith("a") else -0.6) for k in counts}
    c = compare_report.compare([run(0, base), run(1, base)], [run(0, better), run(1, better)], "instruction_strict")
    assert c["mean"] == pytest.approx(0.075)
    assert c["sp_low"] < 0.075 < c["sp_high"] and c["sp_low"] > -0.05


def test_evaluate_on_records_must_be_scored_alike_and_find_their_completions(tmp_path, monkeypatch):
    from benchmarks import compare_report

    def rec(agg, seed, responses, unavailable):
        return {"aggregator": agg, "seed": seed, "protocol": "k", "file": "f.jsonl", "registry": "ifbench",
                "samples_per_prompt": 1, "ifeval": {"responses": responses, "unavailable": unavailable,
                                                     "unavailable_prompts": 0, "prompt_scores": {"prompt_strict": {}}}}

    with pytest.raises(ValueError, match=r"scored on different responses than base's \(static seed 0\)"):
        compare_report.evaluate_on_report([rec("base", None, 10, []), rec("static", 0, 9, ["x"])], "k")
    # completions are named relative to the store's folder; older records, relative to the working directory
    store = tmp_path / "results" / "evaluate_on-f-abc.json"
    (tmp_path / "results" / "evaluate_on-f-abc").mkdir(parents=True)
    (tmp_path / "results" / "evaluate_on-f-abc" / "base.jsonl").write_text("")
    monkeypatch.chdir(tmp_path)
    assert compare_training.kept_path(store, "evaluate_on-f-abc/base.jsonl") == store.parent / "evaluate_on-f-abc/base.jsonl"
    assert compare_training.kept_path(store, "results/evaluate_on-f-abc/base.jsonl") == \
        Path("results/evaluate_on-f-abc/base.jsonl")
