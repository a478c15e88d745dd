"""Rubric-ARM: train a rubric generator and a judge by alternating GRPO on preference pairs.

    python -m stages.rubricarm [--params params.yaml]

With `rubricarm.enabled: false` (the default) it writes only its report saying so, an empty pairs table and
empty model folders (so `paths.judge_model` / `paths.rubric_model` pointing there fail with one line saying why).
Enabled (configs/rubricarm.yaml):
1. pairs (focal/training/pairs.py): with `rubricarm.pairs_source: checks`, G rollouts (rollouts.*: the rollouts stage's
   sampling, so its cache answers what it already sampled) of the first `rubricarm.max_prompts` train prompts of
   `rubricgen.source_set`, paired where their checked criteria differ; else the pairs file, imported. Split by
   prompt into train and held-out (`rubricarm.heldout_share`), written to `paths.rubricarm_pairs`.
2. the alternation (focal/training/rubricarm.py): the untrained pair measured, then `rubricarm.rounds` rounds of a judge
   phase and a generator phase (TRL's GRPO), each measured; finished phases kept under `paths.rubricarm_work`
   (a rerun resumes after the last one).
3. the trained generator and judge to `paths.rubricarm_generator` / `paths.rubricarm_judge` (plain HF folders,
   DVC-cached: `dvc checkout` restores them), the figures of every phase to `paths.rubricarm_report`.

To use them: `paths.judge_model: models/rubricarm/judge` (with `judge.mode: per_response`, the prompt it was
trained on) and `paths.rubric_model: models/rubricarm/generator` (the rubrics stage); docs/rubricarm.md.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from focal.config import Params
from focal.core.atomic import atomic_dir, write_json, write_parquet
from focal.core.stage import run_stage
from focal.judging.prompts import decide_checks, requests_for, set_template
from focal.rubrics.sets import load_rubric_set
from focal.serving.rollouts import Sampling, sample_policy
from focal.training.pairs import build_pairs, frame, import_pairs, split_by_prompt
from focal.training.rubricarm import Arm, alternate, run_key

READS = ('base', 'rollouts', 'rubricarm', 'rubricgen', 'serve')  # params sections this stage reads: dvc.yaml declares exactly these (a test checks)
EMPTY_MODEL = "This folder holds no model: rubricarm.enabled was false when the rubricarm stage last ran.\n"


def pairs_and_probes(params: Params, items: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(pairs split by prompt, the held-out prompts' rollouts for the agreement probes)."""
    a = params.rubricarm
    if a.pairs_source != "checks":
        pairs = import_pairs(a.pairs_source, a.pairs_format)
        return split_by_prompt(pairs, a.heldout_share), pd.DataFrame(columns=["prompt_id", "rollout_id", "completion"])
    chosen = sorted((it for it in items.values() if it.split == "train"), key=lambda it: it.id)[: a.max_prompts or None]
    r = params.rollouts
    sampling = Sampling(r.num_generations, r.temperature, r.top_p, r.max_tokens, params.base.seed)
    rollouts = sample_policy(chosen, r.policy or params.paths.base_model, sampling, r.backend, r, params.serve,
                             params.paths.rollout_cache)
    checked = decide_checks([q for q in requests_for(rollouts, items, "rubricarm rollouts") if q.criterion.check])
    pairs = build_pairs(rollouts, pd.DataFrame([j.__dict__ for j in checked]), items)
    if pairs.empty:
        raise ValueError(f"rubricarm: no pair: no two rollouts of a prompt differ on their checked criteria "
                         f"({len(rollouts)} rollouts of {len(chosen)} prompts of {params.rubricgen.source_set}); "
                         "raise rubricarm.max_prompts or rollouts.num_generations, or import pairs (rubricarm.pairs_source)")
    pairs = split_by_prompt(pairs, a.heldout_share)
    held = set(pairs.prompt_id[pairs.split == "heldout"])
    return pairs, rollouts[rollouts.prompt_id.isin(held)]


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
    source = load_rubric_set(Path(paths.rubrics) / params.rubricgen.source_set)
    items = {it.id: it for it in source.items}
    pairs, probes = pairs_and_probes(params, items)
    write_parquet(paths.rubricarm_pairs, pairs)
    counts = pairs.split.value_counts().to_dict()
    print(f"rubricarm: {len(pairs)} pairs ({counts.get('train', 0)} train, {counts.get('heldout', 0)} held out) "
          f"of {pairs.prompt_id.nunique()} prompts -> {paths.rubricarm_pairs}")
    arm = Arm(pairs, items, probes, set_template(source), a, params.rubricgen.min_criteria,
              params.rubricgen.max_criteria, params.base.seed)
    generator, judge = a.generator or paths.base_model, a.judge or paths.base_model
    work = Path(paths.rubricarm_work) / run_key(arm, generator, judge)
    gen_dir, judge_dir, report = alternate(arm, generator, judge, work)
    for src, dst in ((gen_dir, paths.rubricarm_generator), (judge_dir, paths.rubricarm_judge)):
        with atomic_dir(dst) as tmp:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
    write_json(paths.rubricarm_report, {"enabled": True, "pairs": {"train": counts.get("train", 0),
                                                                   "heldout": counts.get("heldout", 0),
                                                                   "prompts": int(pairs.prompt_id.nunique())},
                                        "work": str(work), **report})
    print(f"rubricarm: generator -> {paths.rubricarm_generator}, judge -> {paths.rubricarm_judge}, "
          f"figures -> {paths.rubricarm_report}")
    return outs


if __name__ == "__main__":
    run_stage(run, __doc__, READS)
