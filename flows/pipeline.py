"""The pipeline as a Prefect flow: the same stage functions `dvc repro` runs, in dvc.yaml's order.

    python -m flows.pipeline [--params params.yaml] [--stages prepare,judge,validate]

    from flows.pipeline import pipeline
    pipeline("params.yaml", stages=["prepare"])   # {"prepare": ["data/prompts/train.parquet", ...]}

One task per stage, each calling `stages.<name>.run(params)` and returning the
paths it wrote. Order: model, rubrics (only when base.rubric_set names
rubricgen.out_set, as in dvc.yaml; or when named in `stages`), prepare, rollouts,
judge, validate, train, evaluate. Only the network-bound stages (rubrics, rollouts, judge)
are retried, twice, 10 s apart; the API clients inside them already retry single
requests. Unlike `dvc repro`, every selected stage runs: nothing is skipped
because its inputs did not change (the rollout and judge caches make reruns cheap).

While the flow runs, FOCAL_SERVE_KEEP=1: a vLLM server started by one stage is
reused by the next; every recorded server is stopped at the end, whatever
happened. The flow publishes a markdown artifact listing each stage's outputs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from focal.config import Params, load_params
from focal.serve import KEEP_ENV, stop_recorded

STAGES = ("model", "rubrics", "prepare", "rollouts", "judge", "validate", "train", "evaluate")  # dvc.yaml's order
NETWORK = ("rubrics", "rollouts", "judge")  # the only stages retried
ARTIFACT_KEY = "focal-pipeline-outputs"


def parse_stages(text: str | None) -> list[str] | None:
    """'prepare,judge' -> ['prepare', 'judge']; None or '' -> None (all stages)."""
    names = [s.strip() for s in (text or "").split(",") if s.strip()]
    return names or None


def add_stages_option(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--stages", type=parse_stages, default=None,
                    help=f"comma-separated stages to run (default: all): {','.join(STAGES)}")


def plan(params_path: str, stages: list[str] | None = None) -> tuple[Params, list[str]]:
    """The params and the stages to run, in dvc.yaml's order; ValueError on a bad file or stage name."""
    params = load_params(params_path)
    if stages is None:
        return params, [s for s in STAGES if s != "rubrics" or params.base.rubric_set == params.rubricgen.out_set]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage {unknown[0]!r}; stages: {', '.join(STAGES)}")
    return params, [s for s in STAGES if s in stages]


@task
def run_stage(name: str, params: Params) -> list[str]:
    """Run stages.<name>.run(params); the paths it wrote."""
    return [str(p) for p in importlib.import_module(f"stages.{name}").run(params)]


TASKS = {name: run_stage.with_options(name=name, retries=2 if name in NETWORK else 0,
                                      retry_delay_seconds=10 if name in NETWORK else 0) for name in STAGES}


def outputs_markdown(outputs: dict[str, list[str]]) -> str:
    """A link table: one row per output of each stage."""
    rows = [f"| {stage} | [{p}]({Path(p).resolve().as_uri()}) |" for stage, paths in outputs.items() for p in paths]
    return "\n".join(["# Focal pipeline outputs", "", "| stage | output |", "|---|---|", *rows])


@flow(name="focal-pipeline", log_prints=True)
def pipeline(params_path: str = "params.yaml", stages: list[str] | None = None) -> dict[str, list[str]]:
    """Run the stages (all, or only `stages`) in dvc.yaml's order; returns {stage: written paths}."""
    params, names = plan(params_path, stages)
    before = os.environ.get(KEEP_ENV)
    os.environ[KEEP_ENV] = "1"  # a server started by one stage stays up for the next
    outputs = {}
    try:
        for name in names:
            outputs[name] = TASKS[name](name, params)
    finally:
        if before is None:
            os.environ.pop(KEEP_ENV)
        else:
            os.environ[KEEP_ENV] = before
        if stopped := stop_recorded(params.serve):
            print(f"pipeline: stopped {stopped} model server(s)")
    create_markdown_artifact(outputs_markdown(outputs), key=ARTIFACT_KEY,
                             description=f"outputs of {', '.join(outputs) or 'no stage'} ({params_path})")
    return outputs


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml", help="the params file")
    add_stages_option(ap)
    args = ap.parse_args(argv)
    try:
        plan(args.params, args.stages)  # a bad file or stage name fails here in one line, before Prefect starts
        print(pipeline(args.params, args.stages))
    except ValueError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
