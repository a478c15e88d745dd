"""The documentation: the site builds with --strict, its generated pages follow the code, the README stays a front page.

    .venv/bin/python -m pytest -q tests/test_docs.py
"""

import dataclasses
import importlib.util
import os
import re
import subprocess
import sys

import pytest

from focal.config import Params
from helpers import ROOT

README = ROOT / "README.md"


def load_hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site, built once with `mkdocs build --strict` (a broken link, anchor or missing page fails it)."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_the_site_builds_strict_with_every_page_of_the_nav(site):
    for page in ("index", "getting-started", "method", "pipeline", "judging", "training", "evaluation", "evidence",
                 "simulator", "operations", "scaling", "benchmarks", "reference/params", "api/index"):
        assert (site / f"{page}.html").exists(), page


def test_the_built_parameter_reference_has_every_knob_of_focal_config(site):
    html = (site / "reference" / "params.html").read_text(encoding="utf-8")
    params = Params()
    for section in dataclasses.fields(params):
        for f in dataclasses.fields(getattr(params, section.name)):
            assert f"<code>{section.name}.{f.name}</code>" in html, f"{section.name}.{f.name} is not on the page"


def test_every_focal_module_has_an_api_page_rendered_from_its_docstrings(site):
    modules = load_hooks().api_modules()  # every module and sub-package, at any depth
    assert "focal.rewards.aggregators" in modules and "focal.rewards.reward" in modules and "focal.judging" in modules
    assert len(modules) == len(list((ROOT / "focal").rglob("*.py")))
    for name in modules:
        html = (site / "api" / f"{name}.html").read_text(encoding="utf-8")
        assert 'class="doc doc-object doc-module"' in html, name  # mkdocstrings rendered the module
    reward = (site / "api" / "focal.rewards.reward.html").read_text(encoding="utf-8")
    assert "FocalReward" in reward and "a TRL reward function" in reward


def test_the_parameter_reference_rows_by_hand():
    page = load_hooks().render_params_reference().splitlines()
    assert "## `judge`" in page
    assert "| `judge.concurrency` | `8` | in [1, 1024] | requests in flight at once |" in page
    assert "| `rollouts.split` | `train` | one of train, eval | which prompt table to sample: train or eval |" in page
    assert "| `serve.extra_args` | `[]` | a list whose entries are each text | more command-line arguments for the vLLM server |" in page
    assert "| `serve.enforce_eager` | `true` | any | skip graph compilation: ~40 s start-up instead of ~3 min on CPU |" in page


def test_the_readme_is_a_front_page():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links
    for link in links:
        assert not link.startswith(("http://", "https://")), f"the README points outside the repository: {link}"
        assert (ROOT / link.split("#")[0]).exists(), f"the README links to a missing file: {link}"


def test_the_readme_pipeline_is_dvc_dag():
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_STUDIO_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "dvc", "dag", "--md"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() in README.read_text(encoding="utf-8")


def test_the_readme_picture_averages_each_criterion_over_seeds(tmp_path, monkeypatch):
    from benchmarks import focal_weights_figure as figure

    histories = [[{"step": 10, "batch/criteria/a/weight": 2.0, "batch/criteria/b/weight": 0.5, "rubric/score": 0.3},
                  {"step": 20, "batch/criteria/a/weight": 4.0}],
                 [{"step": 10, "batch/criteria/a/weight": 3.0, "batch/criteria/a/saturation": 0.1}]]
    weight = figure.mean_series(histories, "weight")
    assert sorted(weight) == ["a", "b"]
    assert weight["a"].to_dict() == {10: 2.5, 20: 4.0} and weight["b"].to_dict() == {10: 0.5}  # a seed without b
    assert figure.mean_series(histories, "saturation")["a"].to_dict() == {10: 0.1}
    out = tmp_path / "weights.png"
    monkeypatch.setattr(sys, "argv", ["focal_weights_figure", "--seeds", "1", "--steps", "20", "--out", str(out)])
    figure.main()
    assert out.read_bytes().startswith(b"\x89PNG")
