"""A model server started by a stage dies with the stage: kill -9, SIGTERM, and a kept server's owner.

    .venv/bin/python -m pytest -q tests/test_serve.py

No vLLM here: a fake server (a python script answering GET /health, with a child
process standing in for vLLM's engine) replaces `focal.serving.server.vllm_command` inside
a stage-like subprocess that serves and sleeps. The test kills that subprocess and
asserts that the server, its engine and its launcher are gone within seconds.
A kept server (FOCAL_SERVE_KEEP=1) outlives its stage and dies with FOCAL_SERVE_OWNER_PID.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from focal.config import Serve
from focal.serving.server import KEEP_ENV, OWNER_ENV, WATCHDOG, stop_recorded
import helpers
from helpers import running

ROOT = Path(__file__).resolve().parent.parent
GONE_WITHIN_S = 10.0

FAKE_SERVER = '''
"""A stand-in for vLLM: GET /health -> 200, GET /pids -> this process, its parent and its engine."""
import json, os, subprocess, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer

port = int(sys.argv[sys.argv.index("--port") + 1])
engine = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])  # like vLLM's engine core


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = {"/health": b"ok", "/pids": json.dumps({"server": os.getpid(), "launcher": os.getppid(),
                                                          "engine": engine.pid}).encode()}.get(self.path)
        self.send_response(200 if body else 404)
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", port), Handler).serve_forever()
'''

STAGE = '''
import json, sys, time, urllib.request
import focal.serving.server as serve
from focal.config import Serve

serve.vllm_command = lambda cfg, model_dir, port: [sys.executable, {fake!r}, "--port", str(port)]
cfg = Serve(python=sys.executable, port=0, startup_timeout_s=20, log_dir={logs!r}, state_dir={state!r})
with serve.serving(cfg, {model!r}) as url:
    with urllib.request.urlopen(url.removesuffix("/v1") + "/pids", timeout=5) as resp:
        print(resp.read().decode(), flush=True)
    time.sleep(120)
'''


def wait_gone(pids: list[int], timeout_s: float = GONE_WITHIN_S) -> list[int]:
    return helpers.wait_gone(pids, timeout_s)


@pytest.fixture
def stage(tmp_path):
    """start(env) -> (stage process, {server, launcher, engine} pids); kills whatever is left afterwards."""
    started: list[tuple[subprocess.Popen, dict]] = []
    (tmp_path / "model").mkdir()
    fake = tmp_path / "fake_vllm.py"
    fake.write_text(FAKE_SERVER)
    code = STAGE.format(fake=str(fake), logs=str(tmp_path / "logs"), state=str(tmp_path / "state"),
                        model=str(tmp_path / "model"))

    def start(extra_env: dict | None = None) -> tuple[subprocess.Popen, dict]:
        env = {k: v for k, v in os.environ.items() if k not in (KEEP_ENV, OWNER_ENV)}
        env.update({"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}, **(extra_env or {}))
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        line = proc.stdout.readline()  # bounded: the stage gives up after startup_timeout_s=20
        assert line, f"the stage printed no pids; stderr:\n{proc.stderr.read()[-3000:]}"
        pids = json.loads(line)
        started.append((proc, pids))
        assert all(running(p) for p in pids.values()), pids
        return proc, pids

    yield start
    for proc, pids in started:
        for p in [proc.pid, *pids.values()]:
            if running(p):
                os.kill(p, signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
    stop_recorded(Serve(state_dir=str(tmp_path / "state")))


def test_kill_9_of_the_stage_stops_its_server_and_the_server_children(stage):
    proc, pids = stage()
    proc.kill()
    proc.wait(timeout=5)
    assert wait_gone(list(pids.values())) == [], f"still running {GONE_WITHIN_S} s after kill -9: {pids}"


def test_sigterm_of_the_stage_stops_its_server_through_the_stage(stage):
    proc, pids = stage()
    proc.terminate()
    assert proc.wait(timeout=GONE_WITHIN_S) == 128 + signal.SIGTERM  # SystemExit: the `with` stopped the server
    assert wait_gone(list(pids.values()), timeout_s=1.0) == [], f"still running after SIGTERM: {pids}"


def test_a_kept_server_outlives_its_stage_and_dies_with_its_owner(stage):
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # stands in for `focal run`
    try:
        proc, pids = stage({KEEP_ENV: "1", OWNER_ENV: str(owner.pid)})
        proc.kill()
        proc.wait(timeout=5)
        time.sleep(2)  # four watchdog polls
        assert all(running(p) for p in pids.values()), "a kept server stopped with its stage"
        owner.kill()
        owner.wait(timeout=5)
        assert wait_gone(list(pids.values())) == [], f"still running after its owner died: {pids}"
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(timeout=5)


def test_the_watchdog_passes_on_the_exit_code_and_starts_nothing_for_a_dead_owner(tmp_path):
    watchdog = [sys.executable, "-I", str(WATCHDOG)]
    exits_3 = [sys.executable, "-c", "raise SystemExit(3)"]
    assert subprocess.run([*watchdog, "--owner", "0", "--", *exits_3], timeout=30).returncode == 3
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=10)
    marker = tmp_path / "started"
    touch = [sys.executable, "-c", f"open({str(marker)!r}, 'w')"]
    done = subprocess.run([*watchdog, "--owner", str(dead.pid), "--", *touch], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 1 and "already gone" in done.stderr and not marker.exists()


def test_the_local_server_runs_with_prefix_caching():
    """Every criterion of one response shares its prompt up to the rubric item: vLLM computes that prefix once."""
    from focal.serving.server import vllm_command

    assert "--enable-prefix-caching" in vllm_command(Serve(), "models/base", 8000)
    assert "--enable-prefix-caching" not in vllm_command(Serve(prefix_caching=False), "models/base", 8000)
