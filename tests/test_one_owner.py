"""One owner for judging: the places that build a Judge, open a judge's endpoint, build judge requests and read the
judge template are counted in the code (focal/, stages/, flows/, benchmarks/), so the duplication cannot come back;
and a remote judge's identity is fetched once per run."""

import ast
from pathlib import Path

import pandas as pd
import yaml
from typer.testing import CliRunner

from fake_openai import FakeOpenAI
from focal.config import load_params

ROOT = Path(__file__).parents[1]
CODE = sorted(p for d in ("focal", "stages", "flows", "benchmarks") for p in (ROOT / d).rglob("*.py"))


def where(predicate) -> list[tuple[str, str]]:
    """(file, enclosing function) of every AST node that satisfies predicate, in file order."""
    out = []
    for path in CODE:
        tree = ast.parse(path.read_text(encoding="utf-8"))

        def visit(node, function):
            for child in ast.iter_child_nodes(node):
                name = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
                if predicate(child):
                    out.append((str(path.relative_to(ROOT)), name))
                visit(child, name)

        visit(tree, "<module>")
    return out


def calls(name: str):
    """Where `name(...)` or `x.name(...)` is called (x not urllib's `request` module)."""
    def predicate(node):
        f = node.func if isinstance(node, ast.Call) else None
        return (isinstance(f, ast.Name) and f.id == name) or (
            isinstance(f, ast.Attribute) and f.attr == name and getattr(f.value, "attr", None) != "request")
    return where(predicate)


def test_one_function_opens_a_judge():
    # open_judge for the pipeline; OpenAIJudge, the public constructor for a user's own script (no params.yaml)
    assert calls("Judge") == [("focal/judging/judge.py", "variant"), ("focal/judging/judge.py", "OpenAIJudge"),
                              ("focal/judging/judge.py", "open_judge")]
    assert calls("judge_endpoint") == [("focal/judging/judge.py", "open_judge")]
    assert calls("Cache") and all(f != "focal/judging/judge.py" or fn in ("open_judge", "OpenAIJudge")
                                  for f, fn in calls("Cache"))  # the judge's cache: opened there only


def test_one_function_builds_judge_requests():
    # benchmarks/judge.py's load generator pairs made-up responses with single criteria: not rollouts
    assert calls("Request") == [("benchmarks/judge.py", "requests"), ("focal/judging/prompts.py", "requests_for")]


def test_one_function_builds_a_probe():
    # a criterion asked to the judge with its check removed: agreement's check probes, the audit, the modes benchmark
    # call focal.judging.prompts.probe (Rubric-ARM's pairwise judge no longer asks criteria one by one); nothing else
    # removes a check
    removes = where(lambda n: isinstance(n, ast.keyword) and n.arg == "check"
                    and isinstance(n.value, ast.Constant) and n.value.value is None)
    assert removes == [("focal/judging/prompts.py", "probe")]
    assert sorted(set(calls("probe"))) == [("benchmarks/judge_modes.py", "pairs"), ("focal/judging/agreement.py", "check_probes"),
                                           ("focal/rewards/audit.py", "probes")]


def test_the_judge_template_is_read_in_one_place():
    reads = where(lambda n: isinstance(n, ast.Attribute) and n.attr == "judge_template" and isinstance(n.ctx, ast.Load))
    # from a rubric set (set_template), prepare writing it to paths.judge_template, the stages reading that
    assert sorted(set(reads)) == [("focal/judging/prompts.py", "set_template"), ("focal/judging/tables.py", "stage_template"),
                                  ("stages/prepare.py", "run")]


def test_a_remote_judges_identity_is_fetched_once(tmp_path):
    from flows.cli import app
    from helpers import judge_project as setup

    with FakeOpenAI() as server:
        params = load_params(setup(tmp_path, server.base_url))
        result = CliRunner().invoke(app, ["judge", params.paths.rollouts, "--params", str(tmp_path / "params.yaml")])
        assert result.exit_code == 0, result.output
        assert server.model_lists == 1 and server.calls > 0
