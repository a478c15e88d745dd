"""The documentation: the site builds with --strict, its generated pages follow the code, the README stays a front page.

    .venv/bin/python -m pytest -q tests/test_docs.py
"""

import ast
import dataclasses
import html.parser
import importlib.util
import os
import re
import subprocess
import sys

import pytest

from focal.config import Params
from helpers import ROOT

README = ROOT / "README.md"
SITE_URL = "https://example.org/focal/"  # the site served under a sub-path (mkdocs.yml's site_url)


def load_hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site, built once with `mkdocs build --strict` (a broken link, anchor or missing page fails it)."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT), "FOCAL_SITE_URL": SITE_URL}
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


def classes_with_a_constructor() -> list[str]:
    """focal's documented classes whose constructor is their own: an `__init__` of theirs, or dataclass fields
    (mkdocstrings leaves out a class without a docstring)."""
    names = []
    for path in sorted((ROOT / "focal").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_") and ast.get_docstring(node) and (
                    any(isinstance(f, ast.FunctionDef) and f.name == "__init__" for f in node.body)
                    or any("dataclass" in ast.unparse(d) for d in node.decorator_list)):
                names.append(f"{module}.{node.name}")
    return names


def test_every_class_page_shows_its_constructor_signature(site):
    classes = classes_with_a_constructor()
    assert {"focal.rewards.reward.FocalReward", "focal.judging.judge.Judge", "focal.rubrics.sets.RubricSet"} \
        <= set(classes)
    for name in classes:
        module = name.rsplit(".", 1)[0]
        page = (site / "api" / f"{module}.html").read_text(encoding="utf-8")
        heading = page.split(f'id="{name}"', 1)[1].split('<div class="doc doc-contents', 1)[0]
        assert 'class="doc-signature' in heading, f"{name}: no signature on its API page"
    reward = (site / "api" / "focal.rewards.reward.html").read_text(encoding="utf-8")
    heading = reward.split('id="focal.rewards.reward.FocalReward"', 1)[1]
    signature = html.unescape(re.sub(r"<[^>]+>", "", heading.split('class="doc-signature', 1)[1].split("</code>")[0]))
    assert "FocalReward(items, aggregator: str = 'focal', judge: Judge | None = None, state: FocalState | None = " \
        "None, checks_only: bool = False" in signature, signature


class Tags(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.names: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.names.add(tag)


def test_a_word_in_angle_brackets_is_shown_as_text(site):
    hooks = load_hooks()
    assert hooks.escape_unknown_tags('<p>criteria/<key>/weight, <<response>>, <code>a</code> <a href="x">b</a></p>') \
        == '<p>criteria/&lt;key&gt;/weight, <&lt;response&gt;>, <code>a</code> <a href="x">b</a></p>'
    for page in sorted(site.rglob("*.html")):
        text = page.read_text(encoding="utf-8")
        tags = Tags()
        tags.feed(text[text.find("<article"):text.find("</article>")])  # the page's content, not the theme's
        assert tags.names <= hooks.HTML_ELEMENTS, f"{page.relative_to(site)}: {sorted(tags.names - hooks.HTML_ELEMENTS)}"
    plots = (site / "api" / "focal.evaluation.plots.html").read_text(encoding="utf-8")
    assert "&lt;key&gt;" in plots  # a docstring's raw `<key>`, shown


def test_the_404_page_works_under_the_sites_sub_path(site):
    page = (site / "404.html").read_text(encoding="utf-8")
    links = re.findall(r'(?:href|src)="([^"#]+)"', page)
    local = [link for link in links if not link.startswith(("http://", "https://", "data:"))]
    assert local and all(link.startswith("/focal/") for link in local), [x for x in local if not x.startswith("/focal/")]
    assert (site / "index.html").read_text(encoding="utf-8").count('href="/focal/') == 0  # other pages stay relative


def test_one_recipe_the_training_page_and_the_reward_lead_with_the_readmes_objects():
    first = re.search(r"```python\n(.*?)```", (ROOT / "docs" / "training.md").read_text(encoding="utf-8"), re.S).group(1)
    doc = ast.get_docstring(ast.parse((ROOT / "focal" / "rewards" / "reward.py").read_text(encoding="utf-8")))
    example = doc.split("\n\n")[1]
    for code in (first, example):
        assert "from focal import FocalReward, OpenAIJudge, load_rubric_set" in code, code
        assert "OpenAIJudge(" in code and "load_rubric_set(" in code and '.dataset("train")' in code, code
        assert "load_params" not in code and "open_judge" not in code and "judge_endpoint" not in code, code
    training = (ROOT / "docs" / "training.md").read_text(encoding="utf-8")
    assert training.index("load_params(") > training.index("## Inside the pipeline (internals)")


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
