"""The Rubric-ARM measurement over seeds (python -m benchmarks.rubricarm_learning): the whole command on a tiny model
(the policy's rollouts scripted, the judge and the generator the tiny model's own; SFT and one GRPO step per phase)
writes one record per phase and skips them when run again; the report's figures worked by hand."""

import json

import pytest
import yaml

from test_rubricarm import make_tiny_bytes_model, script, scripted_generate, tiny_project

KEYS = {"seed", "phase", "heldout_accuracy", "well_formed", "heldout_pairs", "forced_accuracy", "accuracy_ab",
        "accuracy_ba", "accuracy_both", "minutes", "protocol", "generated_accuracy", "norubric_accuracy",
        "rubric_valid", "forced_prefers_a", "finished_at", "code"}


def policy_only(prompt: str, index: int, sampled: bool):
    """The policy's rollouts by the script (so the pairs are known); the judge and the generator: the model's own."""
    if "fair and impartial judge" in prompt or "Write a rubric for judging" in prompt:
        return None
    return script(prompt, index, sampled)


def test_the_whole_command_on_a_tiny_model_records_three_phases_and_resumes(tmp_path, monkeypatch, capsys):
    from benchmarks import rubricarm_learning

    model = make_tiny_bytes_model(tmp_path / "tiny")
    asked = []
    scripted_generate(monkeypatch, model, policy_only, asked)
    params = tiny_project(tmp_path, model, enabled=False, rounds=1, steps_per_phase=1, seeds=[0],
                          sft={"max_steps": 1, "batch_size": 4, "learning_rate": 1e-2, "lora_r": 4, "lora_layers": 1})
    rubricarm_learning.main(["--params", str(params)])
    records = json.loads((tmp_path / "results.json").read_text())["records"]
    assert [r["phase"] for r in records] == ["untrained", "sft", "arm"] and {r["seed"] for r in records} == {0}
    for r in records:
        assert KEYS <= set(r), KEYS - set(r)
        assert r["heldout_pairs"] == 3 and r["train_pairs"] == 10 and r["minutes"] >= 0
        for name in ("heldout_accuracy", "well_formed", "accuracy_ab", "accuracy_ba", "accuracy_both",
                     "forced_accuracy", "forced_prefers_a", "generated_accuracy", "norubric_accuracy"):
            assert 0.0 <= r[name] <= 1.0, (r["phase"], name, r[name])
        if r["well_formed"] == 0.0:  # nothing but coin flips: exactly chance
            assert (r["heldout_accuracy"], r["accuracy_both"]) == (0.5, 0.25)
    assert records[1]["sft_judge_steps"] == records[1]["sft_generator_steps"] == 1 and records[2]["arm_judge_rewards"]
    out = capsys.readouterr().out
    assert "| untrained | 1 |" in out and "| arm | 1 |" in out
    before = (tmp_path / "results.json").read_text()
    asked.clear()
    rubricarm_learning.main(["--params", str(params)])  # every (seed, phase) recorded: skipped, nothing sampled
    assert "seed 0: recorded, skipped" in capsys.readouterr().out
    assert asked == [] and (tmp_path / "results.json").read_text() == before
    raw = yaml.safe_load(params.read_text())
    raw["rubricarm"]["format_weight"] = 0.2  # another protocol: not the recorded one's
    params.write_text(yaml.safe_dump(raw))
    from benchmarks.rubricarm_learning import protocol
    from focal.config import load_params

    assert protocol(load_params(params)) != records[0]["protocol"]


def record(seed, phase, accuracy, **more):
    return {"seed": seed, "phase": phase, "protocol": "p", "finished_at": f"2026-12-0{seed + 1}",
            "heldout_accuracy": accuracy, **more}


def test_the_report_by_hand():
    from benchmarks.rubricarm_learning import report

    records = [record(s, "untrained", 0.5) for s in range(3)] + \
        [record(s, "sft", a) for s, a in zip(range(3), (0.6, 0.7, 0.8))] + \
        [record(0, "arm", 0.9)] + [{**record(9, "untrained", 0.1), "protocol": "old", "finished_at": "2025"}]
    text = report(records)
    assert "seeds [0, 1, 2]" in text and "(1 records of other protocols not shown)" in text
    assert "| untrained | 3 | 0.500 ± 0.000 |" in text
    assert "| sft | 3 | 0.700 ± 0.100 |" in text  # mean and sample std of 0.6, 0.7, 0.8
    assert "| arm | 1 | 0.900 |" in text
    # sft - untrained per seed: 0.1, 0.2, 0.3: mean 0.2, sd 0.1, t(0.975, 2) = 4.3027 -> 0.2 -/+ 0.2484
    assert "| sft | heldout_accuracy | 3 | +0.200 | [-0.048, +0.448] |" in text
    assert "| arm | heldout_accuracy | 1 | +0.400 | - | - |" in text  # one seed: no interval
    assert report([]).startswith("rubricarm_learning: no records yet")


def test_a_bad_sft_key_says_the_known_ones(tmp_path):
    from focal.config import load_params

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"rubricarm": {"sft": {"epochs": 2}}}))
    with pytest.raises(ValueError, match="rubricarm.sft.epochs is not an sft key; known: batch_size, generator_epochs"):
        load_params(path)
    path.write_text(yaml.safe_dump({"rubricarm": {"sft": {"batch_size": 0}}}))
    with pytest.raises(ValueError, match="rubricarm.sft: sft.batch_size must be >= 1, got 0"):
        load_params(path)
