"""The `focal` command: a thin front over the stages, the flows and the model server.

    focal run [--stages prepare,judge] [--flow]   # dvc repro (or the same through the Prefect flow)
    focal retrain [--aggregator A] [--rubric-set S] [--steps N]   # one retraining run (flows/retrain.py)
    focal serve [--model DIR]                     # vLLM's OpenAI-compatible server until Ctrl-C / SIGTERM
    focal judge ROLLOUTS [--out OUT]              # judge a rollouts file (parquet or jsonl) ad hoc
    focal validate PATH                           # every mistake of a rubric set, in one run (exit 2 if any)
    focal new DOMAIN                              # write rubrics/DOMAIN/: a commented starter rubric set
    focal eval                                    # dvc repro evaluate: the evaluate stage, through DVC
    focal deploy [--cron "0 3 * * 0"] [--interval SECONDS]   # scheduled retraining, served (flows/deploy.py)
    python -m flows.cli --help                    # the same, without the installed script

It parses arguments and calls existing functions; the work is in stages/, flows/
and focal/. A user mistake (a bad params file, a missing file, a ValueError from
focal) prints one `error: ...` line and a hint, and exits with code 2. A flow
(`run --flow`, `retrain`) runs in a child process of its own session, with its
temporary Prefect server: Ctrl-C or SIGTERM reaches the flow as SIGTERM, and it
stops its stages and model servers and marks the run crashed before the server
goes away (Ctrl-C in a terminal would otherwise kill the server first).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from flows.run_options import flag, given, taken
from focal.config import load_params

# rich_markup_mode=None: click's plain help; Typer's rich help shows a flag as taking a value (`--flow <bool>`).
app = typer.Typer(help=__doc__.split("\n\n")[0], no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False, rich_markup_mode=None)

ParamsOpt = Annotated[str, typer.Option("--params", help="the params file")]
StagesOpt = Annotated[Optional[list[str]], typer.Option(
    "--stages", help="stages to run, comma-separated or repeated (default: all)")]


PARAMS_HINT = "fix what the line above names (every params key is explained in params.yaml)"


def friendly(hint: str):
    """Turn a user mistake into `error: <one line>` plus `hint: ...` on stderr, exit code 2; Ctrl-C into one line,
    exit code 130. The hint is the one of the `hinting` block the error came from, else `hint`."""

    def wrap(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except OSError as e:  # a missing or unreadable file
                message, err = (f"{e.filename}: {e.strerror}" if e.filename else str(e)), e
            except ValueError as e:  # config, rubric and data errors name the file, the key and the fix
                message, err = str(e), e
            except ModuleNotFoundError as e:  # the core install (pip install focal) has no pipeline or training
                message, err = f"{e}; this command needs focal's extras: pip install 'focal[all]' (make install does)", e
            except KeyboardInterrupt:
                typer.echo(f"focal {fn.__name__}: interrupted (Ctrl-C)", err=True)
                raise typer.Exit(130) from None
            typer.echo(f"error: {' '.join(message.split())}", err=True)
            typer.echo(f"hint: {getattr(err, 'focal_hint', None) or hint}", err=True)
            raise typer.Exit(2)

        return run

    return wrap


def with_run_options(every_run: bool = False):
    """Give a command flows/run_options.py's options (declared there once, for every command that takes them) as
    typer options; the command receives them as keyword arguments (**options, None when not given)."""

    def add(fn):
        sig = inspect.signature(fn, eval_str=True)
        own = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                   annotation=Annotated[Optional[o.type], typer.Option(flag(name), help=o.help)])
                 for name, o in taken(every_run).items()]
        fn.__signature__ = sig.replace(parameters=own + extra)
        return fn

    return add


@contextlib.contextmanager
def hinting(hint: str):
    """A user mistake raised inside the block gets this hint (the innermost block's wins)."""
    try:
        yield
    except (OSError, ValueError) as e:
        if not getattr(e, "focal_hint", None):
            e.focal_hint = hint
        raise


def repo_params(path: str):
    """load_params; when the params file sits beside a dvc.yaml (the repository) in another folder than this one,
    its relative path knobs are made relative to that folder, so a command works from any folder."""
    from focal.config import resolve_paths

    from focal.judging.modes import get_mode
    from focal.rewards.aggregators import check_aggregator_knobs

    params = load_params(path)
    check_aggregator_knobs(params, path)  # config sits below the aggregators' registry: their names are checked here
    get_mode(params.judge.mode, f"{path}: judge.mode")  # and below the judge modes' registry
    root = Path(path).resolve().parent
    if root != Path.cwd().resolve() and (root / "dvc.yaml").exists():
        resolve_paths(params, root)
    return params


def stage_list(stages: list[str] | None) -> list[str] | None:
    """['prepare,judge', 'train'] -> ['prepare', 'judge', 'train']; None -> None (all)."""
    from flows.pipeline import parse_stages

    return parse_stages(",".join(stages or []))


def dvc_targets(stages: list[str] | None, repo: Path = Path(".")) -> list[str]:
    """The `dvc repro` targets: the named stages, else every stage of repo's dvc.yaml (the rubrics stage is
    upstream of nothing: a repro of the last stage alone would leave it stale)."""
    import yaml

    if not (repo / "dvc.yaml").exists():
        raise ValueError(f"{repo / 'dvc.yaml'}: not found; run focal from the repository root, or pass --params "
                         "with the params.yaml beside dvc.yaml")
    known = list(yaml.safe_load((repo / "dvc.yaml").read_text())["stages"])
    unknown = [s for s in stages or [] if s not in known]
    if unknown:
        raise ValueError(f"stage {unknown[0]!r} is not in dvc.yaml; stages: {', '.join(known)}")
    return stages or known


STOP_WAIT_S = 60.0  # after forwarding Ctrl-C / SIGTERM, how long a flow has to clean up before it is killed


def run_flow(module: str, *args: str) -> int:
    """`python -m MODULE ARGS` in a session of its own; Ctrl-C or SIGTERM is forwarded as one SIGTERM, and the
    child's whole group is killed if it has not exited STOP_WAIT_S later. Returns its exit code."""
    proc = subprocess.Popen([sys.executable, "-m", module, *args], start_new_session=True)

    def forward(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, forward), signal.getsignal(signal.SIGINT)
    try:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            typer.echo(f"focal: stopping {module} (SIGTERM; it stops its stages and servers)", err=True)
            proc.send_signal(signal.SIGTERM)
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not orphan the child
            try:
                proc.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                pass
            return 130
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of its group (its temporary Prefect server)
        proc.wait()


FlowOpt = Annotated[bool, typer.Option("--flow", help="run it as the Prefect flow (flows/pipeline.py)")]


@app.command()
@friendly(f"{PARAMS_HINT}; `focal run --help`")
def run(params: ParamsOpt = "params.yaml", stages: StagesOpt = None, flow: FlowOpt = False):
    """Reproduce the pipeline with `dvc repro` (changed stages only), directly or as a Prefect flow.

    Without --stages, every stage in dvc.yaml; with --stages, those stages and
    what they depend on. --flow runs the same stages as one Prefect task each (`dvc repro --single-item`).
    A model server started by one stage is reused by the next and stopped at the end.
    """
    repro(params, stage_list(stages), flow)


def repro(params: str, names: list[str] | None, flow: bool) -> None:
    """`dvc repro` of the named stages (None: all), or the Prefect flow of them; exits with its code."""
    from focal.serving.server import KEEP_ENV, OWNER_ENV, stop_recorded

    p = repo_params(params)
    repo = Path(params).resolve().parent  # DVC runs there, whatever this folder is
    if Path(params).name != "params.yaml":
        raise ValueError(f"--params {params}: dvc repro reads ./params.yaml (the one beside dvc.yaml); vary a key "
                         "with `dvc exp run -S section.key=value` (to check a rubric set: `focal validate PATH`)")
    targets = dvc_targets(names, repo)
    if flow:
        raise typer.Exit(run_flow("flows.pipeline", "--stages", ",".join(targets), "--repo", str(repo)))
    cmd = [sys.executable, "-m", "dvc", "repro", *targets]
    env = {**os.environ, KEEP_ENV: "1", OWNER_ENV: str(os.getpid()),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    t0 = time.perf_counter()
    try:
        # in this foreground group: Ctrl-C reaches the stage itself (one line, outputs kept) and DVC, which
        # waits for it; so wait too, rather than kill DVC in the middle of writing dvc.lock
        proc = subprocess.Popen(cmd, env=env, cwd=repo)
        try:
            code = proc.wait()
        except KeyboardInterrupt:
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the wait
            try:
                proc.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            finally:
                signal.signal(signal.SIGINT, previous)
            typer.echo("focal run: interrupted (Ctrl-C); the stage that was running kept its previous outputs",
                       err=True)
            raise typer.Exit(130) from None
    finally:
        stop_recorded(p.serve, owner=os.getpid())  # only what this run's stages started (OWNER_ENV above)
    typer.echo(f"focal run: `dvc repro` exited {code} after {time.perf_counter() - t0:.0f} s", err=True)
    raise typer.Exit(code)


@app.command()
@friendly("a setting is a params value (params.yaml explains each); `focal retrain --help`")
@with_run_options()
def retrain(**options):
    """One retraining run (flows/retrain.py): a DVC experiment, promoted to champion only if it beats it."""
    from flows.retrain import configured

    configured(".", options)  # a bad setting fails here, in one line
    raise typer.Exit(run_flow("flows.retrain", *[f"{flag(k)}={v}" for k, v in given(options).items()]))


@app.command()
@friendly("build vLLM's environment with `make vllm-env`, or build the model with `focal run --stages model`")
def serve(params: ParamsOpt = "params.yaml",
          model: Annotated[Optional[str], typer.Option("--model", help="model folder (default: paths.base_model)")] = None):
    """Start vLLM's OpenAI-compatible server for a model, print its URL, and stop it on Ctrl-C or SIGTERM."""
    from focal.serving.server import KEEP_ENV, serving

    p = repo_params(params)
    if p.serve.base_url:
        typer.echo(f"{p.serve.base_url}  (serve.base_url is set: nothing to start)")
        return
    os.environ.pop(KEEP_ENV, None)  # this command owns its server: stopped on the way out
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # leaves the `with` below, which stops the server
    with serving(p.serve, model or p.paths.base_model) as url:
        typer.echo(url)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


def read_jsonl(path: str):
    """A .jsonl file as a table indexed by line number (attrs['row_label'] = 'line'); a line that is not a JSON
    object is a ValueError naming the file and the line."""
    import pandas as pd

    rows, lines = [], []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: invalid JSON ({e.msg}, column {e.colno}); each line must be one "
                                 'JSON object like {"prompt_id": "...", "completion": "..."}') from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{n}: expected a JSON object with prompt_id and completion, got "
                                 f"{line.strip()[:60]}")
            rows.append(obj)
            lines.append(n)
    df = pd.DataFrame(rows, index=lines)
    df.attrs["row_label"] = "line"
    return df


def read_rollouts(path: str):
    """A rollouts table from parquet or jsonl: prompt_id, completion, and rollout_id (derived when absent).
    Bad rows are errors naming the file and the line (jsonl) or row (focal.judging.prompts.check_rollout_rows)."""
    import pandas as pd

    from focal.judging.prompts import check_rollout_rows
    from focal.serving.rollouts import rollout_id

    if not Path(path).exists():
        raise FileNotFoundError(2, "not found", path)
    if path.endswith(".jsonl"):
        df = read_jsonl(path)
    elif path.endswith(".parquet"):
        df = pd.read_parquet(path)
    else:
        raise ValueError(f"{path}: expected a .parquet or .jsonl file")
    missing = sorted({"prompt_id", "completion"} - set(df.columns))
    if missing:
        raise ValueError(f"{path}: column {missing[0]!r} is missing; a rollouts file needs prompt_id and "
                         f"completion (rollout_id optional); it has {', '.join(map(str, df.columns)) or 'no column'}")
    check_rollout_rows(df, path)
    if "rollout_id" not in df:
        index = df.groupby("prompt_id").cumcount()
        df["rollout_id"] = [rollout_id(Path(path).name, pid, 0, i, text)
                            for pid, i, text in zip(df.prompt_id, index, df.completion)]
    return df


ROLLOUTS_HINT = ("a rollouts file is .parquet or .jsonl with prompt_id and completion (text), its prompts in the "
                 "prompt tables of --params (`focal run --stages prepare` writes them)")
JUDGE_HINT = ("the judge is judge.base_url, else the local server (serve.*, `make vllm-env`); fix it and rerun: "
              "what succeeded is cached")


@app.command()
@friendly(f"{PARAMS_HINT}; `focal judge --help`")
def judge(rollouts: Annotated[str, typer.Argument(metavar="ROLLOUTS", help="rollouts file (.parquet or .jsonl): prompt_id, completion, "
                                                       "optional rollout_id")],
          out: Annotated[Optional[str], typer.Option("--out", help="judgments parquet "
                                                     "(default: ROLLOUTS with suffix .judgments.parquet)")] = None,
          params: ParamsOpt = "params.yaml"):
    """Judge a rollouts file on its prompts' rubrics (judge.* of the params file; cached like the judge stage)."""
    from focal.core.atomic import write_parquet
    from focal.judging.prompts import requests_for
    from focal.judging.spec import JudgeSpec
    from focal.judging.tables import check_failure_budget, failure_text, judge_table, load_items, stage_template

    p = repo_params(params)
    with hinting(ROLLOUTS_HINT):
        requests = requests_for(read_rollouts(rollouts), load_items(p.paths), rollouts)
    with hinting(JUDGE_HINT):
        df, stats = judge_table(JudgeSpec.from_params(p, stage_template(p.paths)), requests)
        check_failure_budget(df, p.judge.max_failure_share, "focal judge")  # nothing written: successes are cached
    out = out or str(Path(rollouts).with_suffix(".judgments.parquet"))
    write_parquet(out, df)
    m = stats.metrics()
    typer.echo(f"{out}: {len(df)} judgments ({m['judge/checks']} by checks), {m['judge/calls']} API calls, "
               f"{failure_text(df)}; mean score {df.score.mean():.3f} over the {df.score.notna().sum()} that did not fail")


@app.command()
@friendly("give a rubric set's folder (the one with set.yaml) or a shipped set's name; `focal validate --help`")
def validate(path: Annotated[str, typer.Argument(metavar="PATH", help="a rubric set folder (with its set.yaml), or "
                                                      "the name of a shipped set (default, health, ifeval)")]):
    """Check a rubric set and print every mistake in it: file, line, item, field and the fix; exit 2 if any.

    Reads the set's folder only: no params file, no DVC, nothing written. The same
    validation runs wherever a set is loaded (load_rubric_set, the prepare stage).
    """
    from focal.rubrics.sets import RubricError, load_rubric_set

    try:
        rs = load_rubric_set(path)
    except RubricError as e:
        for line in e.errors:
            typer.echo(f"error: {line}", err=True)
        n = len(e.errors)
        typer.echo(f"{path}: {n} error{'s' * (n > 1)}; fix {'them' if n > 1 else 'it'} and run "
                   f"`focal validate {path}` again (the format: docs/rubrics.md)", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{path}: valid rubric set {rs.name!r}: {rs.summary()}")


@app.command()
@friendly("a rubric set's name is letters, digits and _ . : -; `focal new --help`")
def new(domain: Annotated[str, typer.Argument(metavar="DOMAIN",
                                               help="the new set's name: rubrics/DOMAIN/ is written")]):
    """Write rubrics/DOMAIN/, a starter rubric set (set.yaml, prompts.yaml) with every field explained in comments.

    Each prompt has one criterion decided by a check and one asked of the judge;
    `focal validate rubrics/DOMAIN` passes on it as written. An existing folder is never overwritten.
    """
    from focal.rubrics.sets import new_rubric_set

    folder = new_rubric_set(Path("rubrics") / domain)
    typer.echo(f"{folder}: written (set.yaml, prompts.yaml); edit the prompts, then `focal validate {folder}`")


@app.command("eval")
@friendly(f"{PARAMS_HINT}; `focal eval --help`")
def evaluate(params: ParamsOpt = "params.yaml", flow: FlowOpt = False):
    """The evaluate stage (stages/evaluate.py) through DVC, like every stage (dvc repro evaluate).

    Every policy on every benchmark, judged and compared; what it reads (the trained
    model, ...) is reproduced first if it changed. The same as `focal run --stages evaluate`.
    """
    repro(params, ["evaluate"], flow)


@app.command()
@friendly("flows/deploy.py shows how to run it against a local Prefect server; `focal deploy --help`")
@with_run_options(every_run=True)
def deploy(cron: Annotated[Optional[str], typer.Option("--cron", help="cron schedule (default: Sundays 03:00)")] = None,
           interval: Annotated[Optional[int], typer.Option("--interval", help="every this many seconds instead")] = None,
           **options):
    """Serve scheduled retraining (flows/retrain.py) from this process until Ctrl-C or SIGTERM; prefect.yaml is
    the same deployment for `prefect deploy` to a work pool. The options are given to every run."""
    from flows.deploy import serve as serve_deployment

    serve_deployment(".", cron, interval, **options)


for _command in app.registered_commands:  # click's plain help cuts a summary at ~45 characters: give it whole
    _command.short_help = inspect.getdoc(_command.callback).split("\n\n")[0]


if __name__ == "__main__":
    app()
