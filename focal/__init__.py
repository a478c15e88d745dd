"""Focal: RL of LLMs with rubric-based rewards, reweighted toward unsaturated criteria.

    from focal import FocalReward, OpenAIJudge, load_rubric_set

    rubrics = load_rubric_set("default")      # a shipped set by name, or your folder: "rubrics/<name>"
    reward = FocalReward(rubrics, aggregator="focal", judge=OpenAIJudge("http://127.0.0.1:8001/v1", "my-judge"))
    # GRPOTrainer(model=..., reward_funcs=[reward], train_dataset=rubrics.dataset("train"), args=GRPOConfig(...))
    # smollm2(): SmolLM2-135M-Instruct as a local folder, for model=... (the README's quickstart)

Every name here is importable without torch, TRL or the pipeline tools (the core install: `pip install .` in a clone).
"""

_NAMES = {
    "FocalReward": "focal.rewards.reward",
    "OpenAIJudge": "focal.judging.judge",
    "Judge": "focal.judging.judge",
    "Cache": "focal.core.cache",
    "load_rubric_set": "focal.rubrics.sets",
    "RubricSet": "focal.rubrics.sets",
    "Item": "focal.rubrics.sets",
    "Criterion": "focal.rubrics.sets",
    "Check": "focal.rubrics.sets",
    "smollm2": "focal.serving.weights",
    "aggregate": "focal.rewards.aggregators",
    "AGGREGATORS": "focal.rewards.aggregators",
}
__all__ = list(_NAMES)


def __getattr__(name):  # lazy: `import focal` stays cheap
    if name not in _NAMES:
        raise AttributeError(f"module 'focal' has no attribute {name!r}; public names: {', '.join(_NAMES)}")
    import importlib

    return getattr(importlib.import_module(_NAMES[name]), name)
