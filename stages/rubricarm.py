"""Rubric-ARM: warm a rubric generator and a pairwise judge up with SFT, train them by alternating GRPO on pairs
labelled by checkers, and measure each phase on held-out pairs.

    python -m stages.rubricarm [--params params.yaml]

With `rubricarm.enabled: false` (the default) it writes only its report saying so, an empty pairs table and
empty model folders (so `paths.judge_model` / `paths.rubric_model` pointing there fail with one line saying why).
Enabled (configs/rubricarm.yaml), for the seed `base.seed`:
1. pairs (focal/training/rubricarm.py `prepare_run`): `rubricarm.pair_generations` rollouts of each prompt of
   `rubricarm.rubric_set` (the vLLM server, or transformers: `rubricarm.backend`; rollouts.* client settings;
   cached in paths.rollout_cache), paired where they follow a different number of instructions, capped per prompt;
   train prompts' pairs train, eval prompts' are held out; written to `paths.rubricarm_pairs`.
2. the phases (`learn`): untrained, SFT, the alternating GRPO, each measured on the held-out pairs; each finished
   phase kept under `paths.rubricarm_work` (a rerun resumes after the last one).
3. the last phase's generator and judge to `paths.rubricarm_generator` / `paths.rubricarm_judge` (plain HF
   folders, DVC-cached), every phase's figures to `paths.rubricarm_report`.

`python -m benchmarks.rubricarm_learning` runs the same for several seeds, one record per (seed, phase).
To serve them: configs/rubricarm.yaml (docs/rubricarm.md).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from focal.config import Params
from focal.core.atomic import atomic_dir, write_json, write_parquet
from focal.core.stage import run_stage
from focal.training.pairs import frame
from focal.training.rubricarm import PHASES, learn, models_after, prepare_run, run_key

READS = ('base', 'rollouts', 'rubricarm', 'serve')  # params sections this stage reads: dvc.yaml declares exactly these (a test checks)
EMPTY_MODEL = "This folder holds no model: rubricarm.enabled was false when the rubricarm stage last ran.\n"


def run(params: Params) -> list[Path]:
    a, paths = params.rubricarm, params.paths
    outs = [Path(paths.rubricarm_pairs), Path(paths.rubricarm_generator), Path(paths.rubricarm_judge),
            Path(paths.rubricarm_report)]
    if not a.enabled:
        write_parquet(paths.rubricarm_pairs, frame([]))
        for folder in (paths.rubricarm_generator, paths.rubricarm_judge):
            with atomic_dir(folder) as tmp:
                (tmp / "README.md").write_text(EMPTY_MODEL)
        write_json(paths.rubricarm_report, {"enabled": False})
        print("rubricarm: disabled (rubricarm.enabled: false); nothing trained")
        return outs
    arm = prepare_run(a, paths, params.rollouts, params.serve, params.base.seed)
    write_parquet(paths.rubricarm_pairs, arm.pairs)
    counts = arm.pairs.split.value_counts().to_dict()
    print(f"rubricarm: {len(arm.pairs)} pairs ({counts.get('train', 0)} train, {counts.get('heldout', 0)} held out) "
          f"of {arm.pairs.prompt_id.nunique()} prompts -> {paths.rubricarm_pairs}")
    generator, judge = a.generator or paths.base_model, a.judge or paths.base_model
    work = Path(paths.rubricarm_work) / run_key(arm, generator, judge)
    report = dict(learn(arm, generator, judge, work))
    trained = models_after(PHASES[-1], {"generator": generator, "judge": judge}, work, a.rounds)
    for src, dst in ((trained["generator"], paths.rubricarm_generator), (trained["judge"], paths.rubricarm_judge)):
        with atomic_dir(dst) as tmp:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
    write_json(paths.rubricarm_report, {"enabled": True, "seed": params.base.seed, "work": str(work),
                                        "pairs": {"train": counts.get("train", 0), "heldout": counts.get("heldout", 0),
                                                  "prompts": int(arm.pairs.prompt_id.nunique())}, **report})
    print(f"rubricarm: generator -> {paths.rubricarm_generator}, judge -> {paths.rubricarm_judge}, "
          f"figures -> {paths.rubricarm_report}")
    return outs


if __name__ == "__main__":
    run_stage(run, __doc__, READS)
