"""Recurring retraining: every run is a named DVC experiment, and a model is promoted only on evidence.

    python -m flows.retrain [--aggregator focal] [--rubric-set default] [--steps 3] [--seed N] [--repo .]
    focal retrain ...                          # the same options (flows/run_options.py declares them once)
    prefect deploy --name focal-retrain        # prefect.yaml: scheduled, on a process work pool (docs/operations.md)

A run, top to bottom (one task each; the flow only calls tasks):
1. Start from the committed configuration (params.yaml at HEAD), this run's
   settings (deployment parameters: aggregator, rubric set, steps), a new sampling
   seed (base.seed, recorded) and the current champion from the registry
   (focal/evaluation/promotion.py, GTO tags): rollouts are sampled from the champion, training
   warm-starts from it, and the evaluation compares the new model with it. With no
   champion yet, the base model plays that part. All of it is written to
   params.yaml, so DVC sees it and `dvc exp show` lists it.
2. Reproduce every dvc.yaml stage through DVC (flows/pipeline.py's tasks, with
   --pull when a DVC remote is configured): what did not change is skipped; the new
   seed and policy make rollouts, judge, train and evaluate run on fresh samples.
3. Decide with the promotion rule (registry.PromotionRule) on metrics/eval.json:
   the paired rubric-score difference candidate - reference, and no drop beyond a
   tolerance in minimum category pass rate or strict completion.
4. Save the workspace as the DVC experiment named after the run (`dvc exp save`),
   push what the run made to the DVC remote, then register the experiment's model
   as a new registry version, assigned `champion` or `rejected` with the reason.
5. Publish a table artifact of the metrics and a markdown artifact with the
   decision, what was new since the last run (prompts, rubrics, settings) and the
   plots. With --git-remote, push the experiment and the registry tags there too.

A run that fails, or is stopped (Ctrl-C, SIGTERM, a task timeout), leaves the
champion as it was and the DVC workspace as it was: params.yaml, dvc.lock and every
output come back from a snapshot and DVC's cache, so `dvc status` is what it was. A
failed run publishes a failure artifact naming the stage and its error line. One
run at a time per repository (a lock file; the deployment's concurrency limit is 1).
"""

# no `from __future__ import annotations`: Prefect validates the flow's parameters with pydantic, which cannot
# resolve the string "PromotionRule" when a served runner loads the flow from its entrypoint
import argparse
import base64
import fcntl
import json
import os
import re
import secrets
import shutil
import sys
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import yaml
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.pipeline import STAGE_TIMEOUT_S, failed, retry_transient, run_stages
from flows.run_options import add_arguments, given, params_settings
from flows.workspace import (DvcFailed, default_remote, git, head_params, plan, restore, run_dvc, save_experiment,
                             snapshot)
from focal.config import Params, load_params, params_from_dict, render_params_yaml
from focal.core.atomic import write_text
from focal.evaluation import promotion as registry
from focal.evaluation.promotion import PromotionRule

LOCK = ".dvc/tmp/focal-retrain.lock"
METRICS_KEY, REPORT_KEY, FAILURE_KEY = "focal-retrain-metrics", "focal-retrain-report", "focal-retrain-failure"


@dataclass
class Run:
    """One retraining run: its name, where it starts from, and what it was asked to do."""

    name: str
    repo: str
    seed: int
    reference: str  # the evaluation's reference policy: 'base' or 'champion'
    champion: dict | None  # the champion's registry record (None: the base model)
    policy: str  # the folder rollouts sample from and training starts from ('' = paths.base_model)
    settings: dict  # rubric_set, aggregator, steps, judge, seed: the choices a reader compares between runs
    previous: dict | None  # the last registered run (what was new is measured against it)
    remote: str | None  # the DVC remote it pulls from and pushes to


# ---- the configuration of a run ------------------------------------------------------------------

def configured(repo: str, options: dict | None = None) -> Params:
    """params.yaml as committed, with this run's options that set params (flows/run_options.py; None or absent: as
    committed); ValueError saying the fix."""
    raw = yaml.safe_load(head_params(repo)) or {}
    for key, value in params_settings(given(options or {})).items():
        section, field = key.split(".")
        raw.setdefault(section, {})[field] = value
    params = params_from_dict(raw, "params.yaml at HEAD with this run's settings")
    folder = Path(repo) / params.paths.rubrics / params.base.rubric_set
    if not folder.is_dir():
        sets = sorted(p.name for p in (Path(repo) / params.paths.rubrics).iterdir() if p.is_dir())
        raise ValueError(f"rubric set {params.base.rubric_set!r} is not a folder of {params.paths.rubrics}/; "
                         f"rubric sets: {', '.join(sets)}")
    return params


def with_run(params: Params, seed: int, policy: str) -> Params:
    """The run's params: a new seed, and the policy to sample from, warm-start and compare with."""
    raw = json.loads(json.dumps(asdict(params)))
    raw["base"]["seed"] = seed
    raw["rollouts"]["policy"] = raw["train"]["policy"] = policy
    raw["evaluate"]["policies"] = [f"champion={policy}" if policy else "base", registry.CANDIDATE]
    return params_from_dict(raw, "this run's params")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-.") or "x"


def run_name() -> str:
    """What ran, readable in Prefect and as the experiment's name: retrain-<UTC time>-<aggregator>-<rubric set>-
    <steps>steps-from-<champion version or base>."""
    from prefect.runtime import flow_run

    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    p = flow_run.parameters
    try:
        params = configured(p.get("repo", "."), dict(p))
        champ = registry.champion(p.get("repo", "."))
    except Exception:  # noqa: BLE001 - the flow itself raises the real error, with its fix
        return f"retrain-{stamp}"
    return _slug(f"retrain-{stamp}-{params.train.aggregator}-{params.base.rubric_set}-{params.train.max_steps}steps"
                 f"-from-{champ.version if champ else 'base'}")


class Busy(Exception):
    """Another retrain holds the repository's lock."""


@contextmanager
def one_run_at_a_time(repo: str):
    """Hold the repository's retrain lock for the block; Busy at once if another run holds it."""
    path = Path(repo) / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise Busy(f"another retrain is running in {Path(repo).resolve()} ({f.read().strip()}); "
                       "one run at a time") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ---- the tasks -------------------------------------------------------------------------------------

@task
def start(repo: str, name: str, params: Params, seed: int | None, remote: str | None) -> Run:
    """Resolve the run (seed, champion, remote) on the configured params and write its params.yaml."""
    champ = registry.champion(repo)
    remote = default_remote(repo, remote)
    policy = ""
    if champ:
        policy = os.path.relpath(registry.materialize(repo, champ, Path(repo) / params.paths.champions, remote), repo)
    seed = secrets.randbelow(2**31) if seed is None else seed
    params = with_run(params, seed, policy)
    write_text(Path(repo) / "params.yaml", render_params_yaml(params))
    j = params.judge
    settings = {"rubric_set": params.base.rubric_set, "aggregator": params.train.aggregator,
                "steps": params.train.max_steps, "judge": f"{j.model} at {j.base_url or 'the local server'}",
                "seed": seed, "start": f"champion {champ.label}" if champ else "base model"}
    previous = registry.history(repo)
    print(f"{name}: seed {seed}, starting from {settings['start']}, DVC remote {remote or 'none'}")
    return Run(name, repo, seed, "champion" if champ else "base", asdict(champ) if champ else None, policy,
               settings, asdict(previous[0]) if previous else None, remote)


@task
def judge_candidate(run: Run, rule: PromotionRule) -> tuple[bool, str, dict]:
    """(promote?, why, the numbers) from the evaluation in metrics/eval.json, by the promotion rule."""
    params = load_params(Path(run.repo) / "params.yaml")
    metrics = json.loads((Path(run.repo) / params.paths.eval_metrics).read_text())
    promote, why = registry.decide(metrics, run.reference, rule)
    print(why)
    return promote, why, registry.summary(metrics, run.reference)


@task
def whats_new(run: Run) -> dict:
    """What this run saw that the last registered run did not: prompts (new, changed, removed), rubric sets,
    settings."""
    from dvc.api import DVCFileSystem
    import pandas as pd

    params = load_params(Path(run.repo) / "params.yaml")
    prev = run.previous
    news = {"since": prev["run"] if prev else None, "splits": {}, "notes": [], "settings": {},
            "rubric_sets_added": []}
    old_fs = DVCFileSystem(run.repo, rev=prev["commit"]) if prev else None
    for split, path in (("train", params.paths.train_prompts), ("eval", params.paths.eval_prompts)):
        old = None
        if old_fs is not None:
            try:
                with old_fs.open(path, "rb") as f:
                    old = pd.read_parquet(f)
            except Exception as e:  # noqa: BLE001 - reported, not fatal: the run itself is fine
                news["notes"].append(f"{split} prompts of {prev['run']} unavailable ({type(e).__name__}: {e})")
        news["splits"][split] = registry.prompt_changes(old, pd.read_parquet(Path(run.repo) / path))
    sets = {p.name for p in (Path(run.repo) / params.paths.rubrics).iterdir() if p.is_dir()}
    if prev:
        then = git(run.repo, "ls-tree", "-d", "--name-only", f"{prev['commit']}:{params.paths.rubrics}").split()
        news["rubric_sets_added"] = sorted(sets - set(then))
        news["settings"] = {k: [prev["settings"].get(k), v] for k, v in run.settings.items()
                            if k not in ("seed", "start") and prev["settings"].get(k) != v}
    return news


@task
def save_run(run: Run, stages: list[str], why: str) -> str:
    """The workspace as the DVC experiment named after the run; its commit."""
    return save_experiment(run.repo, run.name, stages, f"{run.name}: {why}"[:2000])


@task(retries=2, retry_delay_seconds=10, retry_condition_fn=retry_transient)
def push(run: Run) -> None:
    """What the run made, to the DVC remote (outputs in dvc.lock, and the run cache)."""
    run_dvc(run.repo, "push", "--run-cache", "-r", run.remote, what="dvc push")


@task
def register(run: Run, commit: str, rule: PromotionRule, promote: bool, why: str, numbers: dict) -> registry.Record:
    """A new registry version on the experiment's commit: champion or rejected, with the record."""
    params = load_params(Path(run.repo) / "params.yaml")
    reference = f"champion {run.champion['version']}" if run.champion else "base model"
    body = {"run": run.name, "commit": commit, "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model": params.paths.trained_model, "reference": reference, "seed": run.seed,
            "settings": run.settings, "rule": asdict(rule), "metrics": numbers}
    rec = registry.record(run.repo, body, promote, why)
    print(f"registry: {registry.ARTIFACT} {rec.version} {rec.decision} ({rec.run})")
    return rec


@task
def share(run: Run, git_remote: str) -> None:
    """The experiment and the registry's tags to a git remote, so another worker sees them (a warning on failure:
    everything is recorded locally, and the next run pushes all tags again)."""
    try:
        run_dvc(run.repo, "exp", "push", git_remote, run.name, what="dvc exp push")
        git(run.repo, "push", git_remote, "--tags")
    except (DvcFailed, RuntimeError) as e:
        print(f"warning: could not share with git remote {git_remote!r}: {e}")


def metrics_rows(numbers: dict, reference: str) -> list[dict]:
    """The metrics table: per benchmark, the reference and the candidate, and the paired difference."""
    rows = []
    for bench, m in numbers.items():
        p = m["paired"]
        for role, name in (("reference", reference), ("candidate", "trained")):
            rows.append({"benchmark": bench, "policy": name, **{k: round(v, 4) for k, v in m[role].items()},
                         "paired_diff": round(p["diff"], 4) if role == "candidate" else None,
                         "ci_low": round(p["ci_low"], 4) if role == "candidate" else None,
                         "ci_high": round(p["ci_high"], 4) if role == "candidate" else None})
    return rows


def news_markdown(news: dict) -> list[str]:
    """What was new, as markdown lines: prompts per split, rubric sets added, settings changed, notes."""
    if not news["since"]:
        return ["First registered run: everything is new."]
    lines = [f"Since {news['since']}:"]
    for split, ch in news["splits"].items():
        parts = [f"{len(ch[k])} {k}" + (f" ({', '.join(ch[k][:8])}{', ...' * (len(ch[k]) > 8)})" if ch[k] else "")
                 for k in ("new", "changed", "removed")]
        lines.append(f"- {split} prompts: {'; '.join(parts)}")
    if news["rubric_sets_added"]:
        lines.append(f"- rubric sets added: {', '.join(news['rubric_sets_added'])}")
    for k, (old, new) in news["settings"].items():
        lines.append(f"- {k}: {old} -> {new}")
    return lines + [f"- note: {n}" for n in news["notes"]]


def plots_markdown(folder: Path) -> list[str]:
    """The evaluation's PNGs, inline (an artifact holds text, not files)."""
    return [f"![{p.stem}](data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()})"
            for p in sorted(folder.glob("*.png"))]


@task
def publish(run: Run, rec: registry.Record, news: dict, stages: list[dict]) -> None:
    """The metrics table and the run's report (decision, what was new, settings, stages, plots) as artifacts."""
    params = load_params(Path(run.repo) / "params.yaml")
    create_table_artifact(metrics_rows(rec.metrics, run.reference), key=METRICS_KEY,
                          description=f"{run.name}: {rec.decision} ({registry.ARTIFACT} {rec.version})")
    lines = [f"# {run.name}: {rec.decision}", "", f"**{registry.ARTIFACT} {rec.version}**: {rec.why}", "",
             f"Experiment `{run.name}` (commit {rec.commit[:12]}): `dvc exp show`, `gto show {registry.ARTIFACT}`.", "",
             "| setting | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in run.settings.items()], "",
             "## What was new", "", *news_markdown(news), "", "## Stages", "", "| stage | result | seconds |",
             "|---|---|---|", *[f"| {s['stage']} | {s['result']} | {s['seconds']} |" for s in stages], "",
             "## Plots", "", *plots_markdown(Path(run.repo) / params.paths.eval_plots)]
    create_markdown_artifact("\n".join(lines), key=REPORT_KEY, description=f"{run.name}: {rec.decision}")


def failure_markdown(name: str, error: BaseException, champion: str) -> str:
    """The failure artifact: what failed, its error line, the end of its output, and what was left as it was."""
    lines = [f"# {name}: failed", "", f"**{error}**", ""]
    if isinstance(error, DvcFailed) and error.tail:
        lines += ["Last lines of its output:", "", "```", *error.tail[-25:], "```", ""]
    return "\n".join(lines + [f"The champion is unchanged ({champion}); the workspace (params.yaml, dvc.lock, "
                              "outputs) was restored as it was before the run."])


# ---- the flow ----------------------------------------------------------------------------------------

@flow(name="focal-retrain", flow_run_name=run_name, log_prints=True, retries=0)
def retrain(aggregator: str | None = None, rubric_set: str | None = None, steps: int | None = None,
            seed: int | None = None, rule: PromotionRule = PromotionRule(), repo: str = ".",
            remote: str | None = None, git_remote: str | None = None,
            stage_timeout_s: float = STAGE_TIMEOUT_S) -> dict:
    """Retrain from the champion on fresh samples, evaluate against it, promote only by `rule`; a DVC experiment.

    aggregator, rubric_set, steps: train.aggregator, base.rubric_set, train.max_steps (None: as committed).
    seed: the run's sampling seed (None: a new one). remote: the DVC remote (None: the default one, if any).
    git_remote: push the experiment and the registry tags there. stage_timeout_s: each stage's time limit.
    """
    from prefect.runtime import flow_run

    try:
        return run_once(flow_run.name or run_name(), aggregator, rubric_set, steps, seed, rule, repo, remote,
                        git_remote, stage_timeout_s)
    except (DvcFailed, ValueError, TimeoutError, Busy) as e:  # the error line says it all: no traceback
        return failed(e)


def run_once(name: str, aggregator, rubric_set, steps, seed, rule, repo, remote, git_remote, stage_timeout_s) -> dict:
    """The flow's body: its tasks in order, the workspace restored if anything fails."""
    # a bad setting fails here, before anything changes
    params = configured(repo, dict(aggregator=aggregator, rubric_set=rubric_set, steps=steps))
    with one_run_at_a_time(repo):
        snap = snapshot(repo, Path(repo) / f".dvc/tmp/focal-snapshot-{os.getpid()}")
        champ_before = registry.champion(repo)
        try:
            run = start(repo, name, params, seed, remote)
            stages = plan(repo)
            rows = run_stages(stages, repo, stage_timeout_s, pull=bool(run.remote))
            promote, why, numbers = judge_candidate(run, rule)
            news = whats_new(run)
            commit = save_run(run, stages, why)
            if run.remote:
                push(run)
            rec = register(run, commit, rule, promote, why, numbers)
        except BaseException as e:
            restore(repo, snap)
            if isinstance(e, Exception):
                create_markdown_artifact(failure_markdown(name, e, champ_before.label if champ_before else "none"),
                                         key=FAILURE_KEY, description=f"{name}: failed")
            raise
        finally:
            shutil.rmtree(snap.folder, ignore_errors=True)
        if git_remote:
            share(run, git_remote)
        publish(run, rec, news, rows)
    return asdict(rec)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", default=".", help="the DVC repository (default: the current folder)")
    add_arguments(ap)
    ap.add_argument("--git-remote", help="git remote to push the experiment and the registry tags to")
    for f in ("min_ci_low", "max_min_category_drop", "max_strict_drop"):
        ap.add_argument(f"--{f.replace('_', '-')}", type=float, default=getattr(PromotionRule(), f),
                        help=f"promotion rule: {PromotionRule.__dataclass_fields__[f].metadata['help'].replace('%', '%%')} "
                             "(default: %(default)s)")
    a = ap.parse_args(argv)
    try:
        rule = PromotionRule(a.min_ci_low, a.max_min_category_drop, a.max_strict_drop)
        configured(a.repo, given(a))  # a bad setting fails here, before Prefect starts
        print(json.dumps(retrain(rule=rule, repo=a.repo, git_remote=a.git_remote, **given(a)), indent=2, default=str))
    except (ValueError, DvcFailed, TimeoutError, Busy) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
