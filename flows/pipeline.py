"""The pipeline as a Prefect flow: the same stage functions `dvc repro` runs.

    python -m flows.pipeline [--params params.yaml]

Each task calls one stage's `run(params)`; retries only on network-bound tasks.
"""

from __future__ import annotations

import argparse

from prefect import flow, task

from focal.config import Params, load_params
from stages import prepare


@task
def prepare_task(params: Params) -> list[str]:
    """Load and validate the rubric set; write the prompt tables."""
    return [str(p) for p in prepare.run(params)]


@flow(name="focal-pipeline")
def pipeline(params_path: str = "params.yaml") -> dict[str, list[str]]:
    """Run every stage in order; returns the outputs of each."""
    params = load_params(params_path)
    return {"prepare": prepare_task(params)}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    print(pipeline(ap.parse_args().params))
