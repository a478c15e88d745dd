"""Real DVC on tiny settings: the stages run through `dvc repro`, and a failed run loses nothing.

prepare -> rollouts (transformers, a tiny model) -> judge (a loopback fake judge) -> validate -> train (1 step),
each `dvc repro --single-item`; then a typo in train.aggregator: the stage fails in one line and the trained
model from the good run is still there, byte for byte (persist: true, atomic writes).
"""

import hashlib
import sys
from pathlib import Path

import yaml

from fake_openai import FakeOpenAI
from helpers import copy_project, dvc, sh
from tiny import make_tiny_model


def tree_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def tiny_settings(proj: Path, judge_url: str, **train) -> None:
    raw = yaml.safe_load((proj / "params.yaml").read_text())
    raw["prepare"].update(max_train_prompts=2, max_eval_prompts=1)
    raw["rollouts"].update(backend="transformers", max_prompts=2, num_generations=2, max_tokens=4)
    raw["judge"].update(base_url=judge_url, model="judge", backoff_s=0.01, timeout_s=5.0)
    raw["train"].update(max_steps=1, prompts_per_step=1, num_generations=2, max_completion_length=4, use_judge=False,
                        **train)
    (proj / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def test_a_failed_train_run_keeps_the_last_good_model(tmp_path, git_identity):
    proj = copy_project(tmp_path / "proj")
    make_tiny_model(proj / "models" / "base")
    with FakeOpenAI() as judge:
        tiny_settings(proj, judge.base_url)
        sh(proj, "git", "add", "-A")
        sh(proj, "git", "commit", "-qm", "tiny")
        for stage in ("prepare", "rollouts", "judge", "validate", "train"):
            dvc(proj, "repro", "--single-item", stage)
        assert judge.calls > 0
    good = tree_hash(proj / "models" / "trained")
    tiny_settings(proj, "http://127.0.0.1:9/v1", aggregator="focla")
    proc = sh(proj, sys.executable, "-m", "dvc", "repro", "--single-item", "train", check=False)
    assert proc.returncode != 0
    assert "error: unknown aggregator 'focla' (params.yaml: train.aggregator); valid aggregators: static, gdpo, pow3r, focal, focal_proj, strict, min" in proc.stderr
    assert tree_hash(proj / "models" / "trained") == good  # nothing to restore: it was never removed
    assert (proj / "dvclive" / "train" / "metrics.json").exists()
