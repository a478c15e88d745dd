"""Recurring retraining: serve the pipeline flow as a scheduled Prefect deployment, in this process.

    prefect server start --host 127.0.0.1            # another shell; healthy after ~20 s (UI on :4200)
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    python -m flows.deploy [--cron "0 3 * * 0"] [--interval SECONDS] [--params params.yaml] [--stages a,b]

Registers the deployment `focal-pipeline/focal-retrain` (default: Sundays at 03:00)
and runs each scheduled flow run in a subprocess of this one, with this folder as
its working directory. Every run reads `--params` and the rubric set at run time,
so it retrains on the latest data and rubrics. `--interval` replaces the cron
schedule. A run can also be started by hand:
`prefect deployment run 'focal-pipeline/focal-retrain'`.

A served flow needs a real API server (PREFECT_API_URL): the ephemeral server a
plain flow call starts has no scheduler. Stop with Ctrl-C, or SIGTERM in a
background job (SIGINT is ignored there): the run in flight finishes first, then
Prefect pauses the schedule (with 3.8.8 a SIGTERM may exit before the pause
lands); the next `python -m flows.deploy` resumes it. One run at a time.

At scale (documentation; not run here): the same flow goes to a work pool, whose
workers start each run on its own infrastructure, e.g. a Kubernetes job per run:

    prefect work-pool create k8s-pool --type kubernetes     # pip install prefect-kubernetes
    pipeline.deploy(name="focal-retrain", work_pool_name="k8s-pool", image="registry.example/focal:0.1",
                    cron="0 3 * * 0", parameters={"params_path": "params.yaml"})
    prefect worker start --pool k8s-pool                    # or Prefect's Helm chart, in the cluster

and tasks can run on a Ray cluster (pip install prefect-ray):

    from prefect_ray import RayTaskRunner
    pipeline.with_options(task_runner=RayTaskRunner(address="ray://head:10001"))

Ray pays off only for tasks submitted concurrently (`.submit` / `.map`, e.g. one
evaluation per policy or a sweep over aggregators): this flow's stages run one
after another, each on the previous one's outputs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flows.pipeline import add_stages_option, pipeline, plan

DEPLOYMENT = "focal-retrain"
DEFAULT_CRON = "0 3 * * 0"  # Sundays, 03:00


def serve(params_path: str = "params.yaml", cron: str | None = None, interval: int | None = None,
          stages: list[str] | None = None) -> None:
    """Register the scheduled deployment (cron, default DEFAULT_CRON, or interval seconds) and run its
    flow runs until SIGTERM or Ctrl-C."""
    from prefect.settings import PREFECT_API_URL

    plan(params_path, stages)  # a bad params file or stage name fails now, not at the first scheduled run
    if not PREFECT_API_URL.value():
        raise ValueError("PREFECT_API_URL is not set: start `prefect server start --host 127.0.0.1` and "
                         "export PREFECT_API_URL=http://127.0.0.1:4200/api (a served flow needs a real server)")
    if interval is not None and interval < 1:
        raise ValueError(f"--interval must be >= 1 second, got {interval}")
    schedule = {"interval": interval} if interval else {"cron": cron or DEFAULT_CRON}
    pipeline.serve(name=DEPLOYMENT, parameters={"params_path": str(Path(params_path).resolve()), "stages": stages},
                   description="Focal's pipeline on the latest data and rubric set (flows/deploy.py)",
                   limit=1, **schedule)  # one run at a time: two runs would write the same outputs


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cron", default=DEFAULT_CRON, help="cron schedule (default: %(default)r, Sundays 03:00)")
    ap.add_argument("--interval", type=int, default=None, help="run every this many seconds instead of --cron")
    ap.add_argument("--params", default="params.yaml", help="the params file each run reads")
    add_stages_option(ap)
    args = ap.parse_args(argv)
    try:
        serve(args.params, args.cron, args.interval, args.stages)
    except ValueError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
