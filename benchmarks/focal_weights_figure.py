"""The README's picture: Focal's weight per criterion moving toward the lagging criteria, in the simulator.

    python -m benchmarks.focal_weights_figure [--seeds 10] [--steps 600] [--out docs/img/focal_weights.png]

World `neglected_essential` (benchmarks/worlds/: a hard essential criterion `hard` that conflicts with a
cluster of easier ones), Focal with its defaults, trained in the simulator (focal/rewards/simulate.py) with no model
and no network. Every `eval_every` steps the run records, for the last training batch, each criterion's
saturation s (Focal's estimate) and weight w'/w (1 = static); the picture is their mean over seeds, drawn by
focal.evaluation.plots.plot_trajectories (the same panels as reports/plots/focal_trajectories.png of a real run).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from benchmarks.aggregators import WORLDS_DIR
from focal.evaluation.plots import plot_trajectories
from focal.rewards.simulate import SimConfig, Variant, load_world, make_bandit, train

WORLD = "neglected_essential"


def mean_series(histories: list[list[dict]], kind: str) -> dict[str, pd.Series]:
    """{criterion key: mean over seeds of batch/criteria/<key>/<kind>, by step} (a key absent from a seed's
    batch at a step is left out of that step's mean)."""
    rows = [{"step": h["step"], "key": k.split("/")[2], "value": v}
            for history in histories for h in history for k, v in h.items()
            if k.startswith("batch/criteria/") and k.endswith(f"/{kind}")]
    table = pd.DataFrame(rows).groupby(["key", "step"])["value"].mean()
    return {key: table.loc[key] for key in table.index.get_level_values("key").unique()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--out", default="docs/img/focal_weights.png")
    args = ap.parse_args()
    world, cfg = load_world(WORLD, WORLDS_DIR), SimConfig(steps=args.steps)
    histories = [train(make_bandit(world, seed), Variant("focal"), cfg, seed) for seed in range(args.seeds)]
    sat, weight = mean_series(histories, "saturation"), mean_series(histories, "weight")
    lagging_first = sorted(sat, key=lambda k: sat[k].iloc[-1])  # legend and colours: least saturated first
    title = (f"Focal in the simulator ({WORLD}, mean of {args.seeds} seeds): the unsaturated criterion "
             f"'hard' keeps the most weight; a criterion's weight falls as it saturates")
    out = plot_trajectories({k: sat[k] for k in lagging_first}, {k: weight[k] for k in lagging_first},
                            Path(args.out), title)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
