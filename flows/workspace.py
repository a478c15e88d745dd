"""The DVC workspace as the flows use it: the stage plan, one stage through `dvc repro`, snapshots, experiments.

    plan(".", ["evaluate"])                      # ['model', 'prepare', ..., 'evaluate']: DVC's graph, dvc.yaml's stages
    up_to_date(".", "prepare")                   # would `dvc repro --single-item prepare` skip it? (`dvc status`)
    run_dvc(".", "repro", "--single-item", "prepare")   # DVC in a process group that dies with this process
    snap = snapshot(".")  ...  restore(".", snap)  # params.yaml, dvc.lock and every output as they were
    save_experiment(".", "retrain-...", plan)      # `dvc exp save`: the workspace as a named experiment; its commit

Nothing here knows Focal's stages: which stages exist, their order and what they
read and write come from dvc.yaml through DVC's own Python API, so `dvc repro` and
the flows cannot disagree. That API is `dvc.repo.Repo`'s methods (`reproduce` as a
forced dry run for the plan, `status`, `index.stages`, `experiments.ls`, `config`),
nothing from DVC's private modules and no parsing of DVC's log text;
tests/test_dvc_contract.py checks each on a small project, so a DVC upgrade that
changes one fails there. Every DVC command runs as `python -m dvc` under
focal/core/watchdog.py, in a process group of its own: the stage a command runs (and a
model server the stage started for itself) dies with the command, and the whole
group dies within about a second if this process dies, even on kill -9. While a
command runs, FOCAL_SERVE_KEEP=1 and FOCAL_SERVE_OWNER_PID=<this process>: a model
server started by one stage is reused by the next and owned by the flow, which
stops it at the end (`kept_servers`).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from focal.serving.server import KEEP_ENV, OWNER_ENV, WATCHDOG, stop_group, stop_recorded

STOP_GRACE_S = 10.0  # after SIGTERM, a stage has this long to stop (and stop its server) before SIGKILL
BIG_FILE = 16 << 20  # snapshot: files this big are hard-linked, not copied (writers replace files, see _copy)
# failure kinds as the stages name them (focal/serving/client.py failure_kind): "timeout 2, server_error 1" (judge) or
# "(rate_limited: ...)" (rollouts); "refused the connection" (nothing listens there) is not one of them


class DvcFailed(Exception):
    """A DVC command exited non-zero. `transient` says whether the error names a transient network failure."""

    def __init__(self, what: str, code: int, tail: list[str]):
        self.what, self.code, self.tail = what, code, tail
        self.error = error_line(tail)
        self.transient = transient(tail)
        super().__init__(f"{what} failed: {self.error}")


def error_line(lines: list[str]) -> str:
    """The line that says what went wrong: the stage's own `error: ...` line, else DVC's ERROR, else the last line."""
    text = [line.strip() for line in lines if line.strip()]
    for prefix in ("error: ", "ERROR: "):
        hits = [line for line in text if line.startswith(prefix)]
        if hits:
            return hits[0].removeprefix(prefix)
    return text[-1] if text else "no output"


def transient(lines: list[str]) -> bool:
    """True when a stage failed on transient network errors only (timeout, dropped connection, 429, 5xx): it exited
    with focal.core.stage.EX_TEMPFAIL, which DVC reports in its ERROR line ("failed to run: <cmd>, exited with 75").

    The stages retry single requests themselves (focal/serving/client.py); a stage whose calls still failed says so with
    that exit status (focal.serving.client.CallsFailed.transient), decided from the failure kinds as data, never from its
    words. A refused connection, 401/403/404, a bad param or a bad file exits 1: retrying would fail the same way.
    """
    from focal.core.stage import EX_TEMPFAIL

    return any(line.startswith("ERROR: ") and line.rstrip().endswith(f"exited with {EX_TEMPFAIL}") for line in lines)


def dvc_env() -> dict:
    """The environment of a DVC command: this python's bin first on PATH (so a stage's `python` is this
    one), no analytics, and model servers kept for the next stage, owned by this process."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "DVC_NO_ANALYTICS": "1", "DVC_STUDIO_OFFLINE": "1", KEEP_ENV: "1", OWNER_ENV: str(os.getpid())}


def run_dvc(repo: str | Path, *args: str, echo=print, what: str | None = None) -> list[str]:
    """Run `dvc ARGS` in repo, echoing its output line by line; returns the output lines; DvcFailed if it fails.

    Whatever ends the call (an error, Ctrl-C, SIGTERM, a task timeout), the command's process group is
    stopped before this returns: SIGTERM, then SIGKILL after STOP_GRACE_S.
    """
    cmd = [sys.executable, "-I", str(WATCHDOG), "--owner", str(os.getpid()), "--grace-s", str(STOP_GRACE_S), "--",
           sys.executable, "-m", "dvc", *args]
    lines: deque[str] = deque(maxlen=200)
    proc = subprocess.Popen(cmd, cwd=repo, env=dvc_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True, errors="replace", start_new_session=True)
    try:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if echo:
                echo(lines[-1])
        code = proc.wait()
    finally:
        if proc.poll() is None:
            stop_group(proc.pid, STOP_GRACE_S)
            proc.wait()
        proc.stdout.close()
    if code:
        raise DvcFailed(what or f"dvc {' '.join(args)}", code, list(lines))
    return list(lines)


def _addresses(r, targets: list[str] | None) -> list[str]:
    """dvc.yaml's stages `targets` (None: all of them) as DVC addresses them from any folder; ValueError naming the
    known stages on an unknown name."""
    known = [s.name for s in r.index.stages]
    unknown = [t for t in targets or [] if t not in known]
    if unknown:
        raise ValueError(f"stage {unknown[0]!r} is not in dvc.yaml; stages: {', '.join(known)}")
    project = os.path.join(r.root_dir, "dvc.yaml")  # absolute: DVC resolves targets from the current folder
    return [f"{project}:{t}" for t in targets] if targets else [project]


def plan(repo: str | Path, targets: list[str] | None = None) -> list[str]:
    """The stages `dvc repro TARGETS` would visit, in its order: the targets and everything upstream of them
    (no targets: every stage in dvc.yaml). ValueError naming the known stages on an unknown name.

    DVC's own `Repo.reproduce` decides, as `dvc repro --dry --force`: every stage of the plan, none run."""
    from dvc.repo import Repo

    dvc_log = logging.getLogger("dvc")  # a dry run logs "Running stage ..." for every stage: not news here
    level = dvc_log.level
    dvc_log.setLevel(logging.WARNING)
    try:
        with Repo(str(repo)) as r:
            return [s.name for s in r.reproduce(_addresses(r, targets), dry=True, force=True)]
    finally:
        dvc_log.setLevel(level)


def up_to_date(repo: str | Path, stage: str) -> bool:
    """Whether `dvc repro --single-item STAGE` would skip the stage: `dvc status` of it alone (`Repo.status`) finds
    nothing changed (its command, params, dependencies and outputs are as dvc.lock records them)."""
    from dvc.repo import Repo

    with Repo(str(repo)) as r:
        return not r.status(targets=_addresses(r, [stage]))


def io_paths(repo: str | Path, stages: list[str] | None = None) -> dict[str, list[str]]:
    """Paths (relative to repo) of the given stages (default: all): {'cached', 'uncached', 'deps'}."""
    from dvc.repo import Repo

    out = {"cached": [], "uncached": [], "deps": []}
    with Repo(str(repo)) as r:
        for s in r.index.stages:
            if stages is not None and s.name not in stages:
                continue
            for o in s.outs:
                out["cached" if o.use_cache else "uncached"].append(str(o.def_path))
            out["deps"] += [str(d.def_path) for d in s.deps if not str(d.def_path).startswith(("http:", "https:"))]
    return {k: sorted(set(v)) for k, v in out.items()}


def default_remote(repo: str | Path, remote: str | None = None) -> str | None:
    """The DVC remote to use: `remote`, else the repository's default remote (`dvc remote add -d`), else none."""
    if remote:
        return remote
    from dvc.repo import Repo

    with Repo(str(repo)) as r:
        return r.config["core"].get("remote") or None


@contextmanager
def kept_servers(repo: str | Path):
    """While the block runs, servers started by stages are kept for the next stage; on the way out, however
    the block ends, the recorded servers this process owns are stopped (serve.state_dir of the repo's params.yaml;
    dvc_env makes this process their owner), and no other."""
    from focal.config import load_params

    cfg = load_params(Path(repo) / "params.yaml").serve
    cfg = replace(cfg, state_dir=str(Path(repo) / cfg.state_dir))
    try:
        yield
    finally:
        if stopped := stop_recorded(cfg, owner=os.getpid()):
            print(f"stopped {stopped} model server(s)")


# ---- leaving the workspace as it was --------------------------------------------------------------

@dataclass
class Snapshot:
    """What a run may change in the workspace: params.yaml, dvc.lock and the outputs, as they were."""

    folder: Path  # copies of the uncached outputs (and of params.yaml and dvc.lock)
    existed: dict[str, bool] = field(default_factory=dict)  # every output and file -> did it exist?
    uncached: list[str] = field(default_factory=list)


def _copy(src: Path, dst: Path) -> None:
    """Copy a file or folder; big files are hard-linked (the stages replace files, never write into them)."""
    def one(a, b):
        if os.path.getsize(a) >= BIG_FILE:
            os.link(a, b)
        else:
            shutil.copy2(a, b)

    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst, copy_function=one, symlinks=True)
    else:
        one(src, dst)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def snapshot(repo: str | Path, folder: str | Path) -> Snapshot:
    """Record the workspace in `folder` (which must not exist): params.yaml, dvc.lock, which outputs exist, and a
    copy of every uncached output (cached ones come back from DVC's cache with `dvc checkout`)."""
    repo, folder = Path(repo), Path(folder)
    paths = io_paths(repo)
    snap = Snapshot(folder, uncached=["params.yaml", "dvc.lock", *paths["uncached"]])
    folder.mkdir(parents=True)
    for rel in paths["cached"] + snap.uncached:
        snap.existed[rel] = (repo / rel).exists()
    for rel in snap.uncached:
        if snap.existed[rel]:
            _copy(repo / rel, folder / rel)
    return snap


def restore(repo: str | Path, snap: Snapshot, echo=print) -> None:
    """Put the workspace back as `snap` recorded it: files and uncached outputs from the copies, outputs that
    did not exist removed, cached outputs checked out from DVC's cache as the restored dvc.lock says."""
    repo = Path(repo)
    for rel, existed in snap.existed.items():
        if rel in snap.uncached or not existed:
            _remove(repo / rel)
        if rel in snap.uncached and existed:
            _copy(snap.folder / rel, repo / rel)
    if (repo / "dvc.lock").exists():
        run_dvc(repo, "checkout", "--force", "--quiet", echo=echo, what="dvc checkout (restoring the workspace)")
    shutil.rmtree(snap.folder, ignore_errors=True)


# ---- experiments ----------------------------------------------------------------------------------

def git(repo: str | Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"git {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def untracked_io(repo: str | Path, stages: list[str]) -> list[str]:
    """Files git does not track yet (and does not ignore) that the stages read or write without DVC's cache:
    the metrics, plots and reports they wrote, a new rubric set they read. An experiment needs them."""
    paths = io_paths(repo, stages)
    roots = [p.rstrip("/") for p in paths["uncached"] + paths["deps"] + ["dvc.lock"]]
    files = git(repo, "ls-files", "--others", "--exclude-standard").splitlines()
    return [f for f in files if any(f == r or f.startswith(r + "/") for r in roots) or f.endswith("/.gitignore")]


def save_experiment(repo: str | Path, name: str, stages: list[str], message: str, echo=print) -> str:
    """`dvc exp save --name NAME` of the workspace (with the stages' untracked inputs and outputs); its commit."""
    include = [arg for f in untracked_io(repo, stages) for arg in ("--include-untracked", f)]
    run_dvc(repo, "exp", "save", "--name", name, "--message", message, *include, echo=echo, what="dvc exp save")
    from dvc.repo import Repo

    with Repo(str(repo)) as r:  # {baseline commit: [(experiment name, its commit)]} of HEAD's experiments
        commits = [sha for exps in r.experiments.ls().values() for exp, sha in exps if exp == name]
    if not commits:
        raise RuntimeError(f"dvc exp save reported no experiment named {name!r}")
    return commits[0]


def head_params(repo: str | Path) -> str:
    """params.yaml as committed at HEAD (a scheduled run starts from the committed configuration)."""
    try:
        return git(repo, "show", "HEAD:params.yaml")
    except RuntimeError as e:
        raise ValueError(f"{Path(repo).resolve()}: no committed params.yaml at HEAD ({e}); commit the project "
                         "first: every run is an experiment on top of a commit") from None
