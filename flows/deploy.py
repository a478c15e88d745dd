"""Recurring retraining served from this process: the local shortcut to prefect.yaml's deployment.

    prefect server start --host 127.0.0.1            # another shell; healthy after ~20 s (UI on :4200)
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    python -m flows.deploy [--cron "0 3 * * 0"] [--interval SECONDS] [--repo .] [--aggregator A] [--steps N]
    focal deploy ...                                 # the same (flows/run_options.py declares the run's options)

Registers the deployment `focal-retrain/focal-retrain` (default: Sundays at 03:00)
and runs each scheduled run of flows/retrain.py in a subprocess of this one, one
at a time. `--interval` replaces the cron schedule. A run can also be started by
hand: `prefect deployment run 'focal-retrain/focal-retrain'`. The standard path,
with a worker and a work pool, is `prefect deploy` with prefect.yaml (same flow,
same parameters); this one needs no work pool.

A served flow needs a real API server (PREFECT_API_URL): the ephemeral server a
plain flow call starts has no scheduler. Stop with Ctrl-C, or SIGTERM in a
background job (SIGINT is ignored there). At scale the same flow goes to a
Kubernetes work pool (`prefect work-pool create k8s --type kubernetes`, with
prefect-kubernetes, and `work_pool: {name: k8s, job_variables: {image: ...}}` in
prefect.yaml) with the DVC remote on object storage (prefect.yaml's comments).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flows.retrain import configured, retrain
from flows.run_options import add_arguments, given, taken

DEPLOYMENT = "focal-retrain"
DEFAULT_CRON = "0 3 * * 0"  # Sundays, 03:00


def serve(repo: str = ".", cron: str | None = None, interval: int | None = None, **options) -> None:
    """Register the scheduled deployment (cron, default DEFAULT_CRON, or interval seconds) and run its
    flow runs until SIGTERM or Ctrl-C. options: flows/run_options.py's, given to every run (retrain's parameters)."""
    from prefect.settings import PREFECT_API_URL

    unknown = sorted(set(options) - set(taken(every_run=True)))
    if unknown:
        raise TypeError(f"serve() got {unknown[0]!r}; a deployment's options: {', '.join(taken(every_run=True))}")
    options = given(options)
    configured(repo, options)  # a bad setting fails now, not at the first scheduled run
    if not PREFECT_API_URL.value():
        raise ValueError("PREFECT_API_URL is not set: start `prefect server start --host 127.0.0.1` and "
                         "export PREFECT_API_URL=http://127.0.0.1:4200/api (a served flow needs a real server)")
    if interval is not None and interval < 1:
        raise ValueError(f"--interval must be >= 1 second, got {interval}")
    schedule = {"interval": interval} if interval else {"cron": cron or DEFAULT_CRON}
    retrain.serve(name=DEPLOYMENT, parameters={"repo": str(Path(repo).resolve()), **options},
                  description="Focal's recurring retraining (flows/retrain.py)", limit=1, **schedule)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cron", default=DEFAULT_CRON, help="cron schedule (default: %(default)r, Sundays 03:00)")
    ap.add_argument("--interval", type=int, default=None, help="run every this many seconds instead of --cron")
    ap.add_argument("--repo", default=".", help="the repository each run works in")
    add_arguments(ap, every_run=True)
    a = ap.parse_args(argv)
    try:
        serve(a.repo, a.cron, a.interval, **given(a))
    except ValueError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
