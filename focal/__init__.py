"""Focal: RL of LLMs with rubric-based rewards, reweighted toward unsaturated criteria.

    from focal import FocalReward, aggregate
"""

__all__ = ["FocalReward", "aggregate"]


def __getattr__(name):  # lazy: `import focal` stays cheap
    if name == "FocalReward":
        from focal.reward import FocalReward

        return FocalReward
    if name == "aggregate":
        from focal.aggregate import aggregate

        return aggregate
    raise AttributeError(name)
