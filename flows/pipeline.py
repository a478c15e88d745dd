"""The pipeline as a Prefect flow: one task per dvc.yaml stage, each run through `dvc repro`.

    python -m flows.pipeline [--stages prepare,judge] [--repo .]

    from flows.pipeline import pipeline
    pipeline(stages=["prepare"])          # {"prepare": "ran"}; "skipped" when nothing it depends on changed

One pipeline, two front doors: the flow runs what `dvc repro [TARGETS]` runs, in its
order, and each task is `dvc repro --single-item <stage>` in the repository. So a
stage whose code, data and params did not change is skipped, dvc.lock records what
ran, outputs go to DVC's cache, and `dvc status` is clean afterwards, whether a
person typed `dvc repro` or the scheduler ran the flow. Which stages exist, their
order, and whether the rubric-generation stage runs are read from dvc.yaml through
DVC's graph (flows/workspace.py): `--stages` are targets, run with everything
upstream of them; without them, every stage of dvc.yaml.

A failed stage fails its task with the stage's own one-line error. Only a transient
network failure (a timeout, a dropped connection, 429, 5xx, after the stage's own
per-request retries) is retried, twice, 10 s apart (`retry_transient`); a
configuration or data error never is. Each task has a timeout (`stage_timeout_s`).
Ctrl-C, SIGTERM or a timeout stops the stage's whole process group (DVC, the stage,
a server the stage started) within seconds, and a model server kept for the next
stage is stopped when the flow ends, however it ends. The flow publishes a table
artifact: what each stage did and how long it took; and, when the judge stage was
in the plan (ran or skipped), the judge measured: `paths.judge_stats`' agreement
with the checks and self-agreement (restated; same request), and an ensemble's and
its members' agreement, overall and per criterion key (`focal-judge-agreement`,
focal/judging/agreement.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.states import Failed, State

from flows.workspace import DvcFailed, kept_servers, plan, run_dvc, up_to_date

ARTIFACT_KEY = "focal-pipeline"
JUDGE_ARTIFACT_KEY = "focal-judge-agreement"
STAGE_TIMEOUT_S = 6 * 3600.0  # a task that runs longer fails (and its stage is stopped)
RETRIES, RETRY_DELAY_S = 2, 10


def parse_stages(text: str | None) -> list[str] | None:
    """'prepare,judge' -> ['prepare', 'judge']; None or '' -> None (all stages)."""
    names = [s.strip() for s in (text or "").split(",") if s.strip()]
    return names or None


def add_stages_option(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--stages", type=parse_stages, default=None,
                    help="comma-separated dvc.yaml stages to reproduce, with what is upstream (default: all)")


def retry_transient(task, task_run, state) -> bool:
    """Prefect's retry_condition_fn: retry only a stage that failed on a transient network error."""
    exc = state.result(raise_on_failure=False)
    return isinstance(exc, DvcFailed) and exc.transient


@task(retries=RETRIES, retry_delay_seconds=RETRY_DELAY_S, retry_condition_fn=retry_transient)
def run_stage(stage: str, repo: str = ".", pull: bool = False) -> str:
    """`dvc repro --single-item STAGE` (with --pull: missing outputs come from the DVC remote); what DVC did:
    'skipped' when `dvc status` found nothing changed, else 'ran' (its command ran, or DVC restored its outputs
    from the run cache or the remote)."""
    fresh = up_to_date(repo, stage)
    run_dvc(repo, "repro", "--single-item", *(["--pull"] if pull else []), stage, what=f"stage {stage!r}")
    return "skipped" if fresh else "ran"


def stage_task(stage: str, timeout_s: float):
    return run_stage.with_options(name=stage, timeout_seconds=timeout_s)


def run_stages(stages: list[str], repo: str, timeout_s: float, pull: bool = False) -> list[dict]:
    """Each stage as its task, in order; one row per stage: stage, result (ran / skipped), seconds."""
    rows = []
    with kept_servers(repo):
        for stage in stages:
            t0 = time.monotonic()
            result = stage_task(stage, timeout_s)(stage, repo, pull)
            rows.append({"stage": stage, "result": result, "seconds": round(time.monotonic() - t0, 1)})
    return rows


def failed(error: Exception) -> State:
    """A flow's end on a user-facing error (a stage's error line, a bad setting): Failed with that one line, and
    no traceback in the log; calling the flow still raises the error."""
    return Failed(message=str(error), data=error)


def judge_rows(metrics: dict) -> list[dict]:
    """metrics/judge.json's agreement and consistency tables (and an ensemble's, with each member's) as one table:
    a row per measure and scope."""
    from focal.judging.agreement import MEASURES, rows

    measures = dict(MEASURES, **{"ensemble/agreement": "the ensemble's vote vs the checks"})
    members = sorted({k.split("/")[2] for k in metrics if k.startswith("ensemble/member/") and k.endswith("/agreement/n")})
    measures |= {f"ensemble/member/{n}/agreement": f"ensemble member {n} vs the checks" for n in members}
    return [{"measure": m, "what": what, **r} for m, what in measures.items() for r in rows(metrics, m)]


def publish_judge(repo: str) -> list[dict]:
    """The judge measured (paths.judge_stats of the repo's params.yaml) as a Prefect table artifact; the rows
    ([] and no artifact when nothing was measured)."""
    from focal.config import load_params

    path = Path(repo) / load_params(Path(repo) / "params.yaml").paths.judge_stats
    table = judge_rows(json.loads(path.read_text())) if path.exists() else []
    if table:
        create_table_artifact(table, key=JUDGE_ARTIFACT_KEY, description=f"the judge measured ({path.name}): "
                              "agreement with the checks, self-agreement restated and repeated (docs/judge_quality.md)")
    return table


@flow(name="focal-pipeline", log_prints=True)
def pipeline(stages: list[str] | None = None, repo: str = ".", stage_timeout_s: float = STAGE_TIMEOUT_S,
             pull: bool = False) -> dict[str, str]:
    """Reproduce the stages (dvc.yaml's targets `stages` and what is upstream; default all) through DVC."""
    try:
        rows = run_stages(plan(repo, stages), repo, stage_timeout_s, pull)
    except (DvcFailed, ValueError, TimeoutError) as e:
        return failed(e)
    create_table_artifact(rows, key=ARTIFACT_KEY, description=f"dvc repro {' '.join(stages or [])} in {repo}")
    if any(r["stage"] == "judge" for r in rows):
        publish_judge(repo)
    return {r["stage"]: r["result"] for r in rows}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", default=".", help="the DVC repository (default: the current folder)")
    add_stages_option(ap)
    args = ap.parse_args(argv)
    try:
        plan(args.repo, args.stages)  # an unknown stage fails here in one line, before Prefect starts
        print(pipeline(args.stages, args.repo))
    except (ValueError, DvcFailed, TimeoutError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
