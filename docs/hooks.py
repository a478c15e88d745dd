"""MkDocs hooks (mkdocs.yml `hooks:`): pages generated at build time, so they cannot drift from the code.

- reference/params.md: every params.yaml key from focal/config.py, with its default, its allowed values and
  its help text (the same source `python -m focal.config` writes params.yaml from);
- api/<module>.md: one page per focal/ module, rendered from its docstrings by mkdocstrings, listed in the nav
  under Reference > API (a new module gets its page with no edit here);
- on every page, a `<word>` that is not an HTML element (`criteria/<key>/weight` in a docstring, `<<response>>` in
  a template's description) is shown as text: Markdown passes it to the browser as a tag, which hides it.

    .venv/bin/mkdocs build --strict        # runs these hooks; tests/test_docs.py builds the site too
"""

from __future__ import annotations

import dataclasses
import html
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # focal/ of this checkout, also when mkdocs runs outside the project's venv
PARAMS_PAGE = "reference/params.md"
API_DIR = "api"


def api_modules() -> list[str]:
    """focal's modules and sub-packages, by name, at any depth: focal, focal.rewards, focal.rewards.aggregators, ..."""
    names = []
    for p in sorted((ROOT / "focal").rglob("*.py")):
        parts = p.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return sorted(names)


def api_page(module: str) -> str:
    return f"{API_DIR}/{module}.md"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_params_reference(params=None) -> str:
    """The parameter reference in markdown: one table per params.yaml section, one row per key."""
    from focal.config import Params

    params = params or Params()
    out = ["# Parameter reference", "",
           "Every key of `params.yaml`, generated from `focal/config.py` when this site is built (so it cannot "
           "drift). `params.yaml` itself is generated from the same source: `python -m focal.config > params.yaml`. "
           "A value outside its allowed range fails when params are loaded, naming the file, the key and the fix.",
           ""]
    for section in dataclasses.fields(params):
        obj = getattr(params, section.name)
        out += [f"## `{section.name}`", "", (type(obj).__doc__ or "").strip(), "",
                "| key | default | allowed | what it does |", "|---|---|---|---|"]
        for f in dataclasses.fields(obj):
            default = yaml.safe_dump(getattr(obj, f.name), default_flow_style=True, width=1000).strip()
            default = default.removesuffix("\n...").removesuffix("...").strip()
            allowed = "; ".join(rule.text for rule in f.metadata.get("rules", ())) or "any"
            out.append(f"| `{section.name}.{f.name}` | `{_cell(default)}` | {_cell(allowed)} | "
                       f"{_cell(f.metadata['help'])} |")
        out.append("")
    return "\n".join(out)


def render_api_index() -> str:
    rows = [f"- [`{m}`]({m}.md): {_first_line(m)}" for m in api_modules()]
    return "\n".join(["# API reference", "",
                      "One page per module of the `focal` library, rendered from its docstrings when this site is "
                      "built. Stages (`stages/`), flows (`flows/`) and benchmarks (`benchmarks/`) are thin entry "
                      "points over these.", "", *rows, ""])


def _first_line(module: str) -> str:
    import ast

    path = ROOT / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = ROOT / module.replace(".", "/") / "__init__.py"
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return _cell(doc.strip().splitlines()[0] if doc.strip() else "")


# The elements a page's content may hold: HTML's, the few SVG ones, and mkdocs-autorefs' <autoref> (resolved later).
HTML_ELEMENTS = frozenset("""
    a abbr address area article aside audio b base bdi bdo blockquote body br button canvas caption cite code col
    colgroup data datalist dd del details dfn dialog div dl dt em embed fieldset figcaption figure footer form h1 h2
    h3 h4 h5 h6 head header hgroup hr html i iframe img input ins kbd label legend li link main map mark menu meta
    meter nav noscript object ol optgroup option output p param picture pre progress q rp rt ruby s samp script
    search section select slot small source span strong style sub summary sup table tbody td template textarea tfoot
    th thead time title tr track u ul var video wbr
    svg g path circle ellipse line polyline polygon rect defs use symbol tspan
    autoref
""".split())
TAG = re.compile(r"</?([A-Za-z][\w.:-]*)[^<>]*>")


def escape_unknown_tags(content: str) -> str:
    """Show as text every `<name ...>` whose name is not an element of HTML_ELEMENTS (a docstring's
    `criteria/<key>/weight`, a template's `<<response>>`), instead of letting the browser swallow it as a tag."""
    return TAG.sub(lambda m: m.group(0) if m.group(1).lower() in HTML_ELEMENTS else html.escape(m.group(0)), content)


# ---- MkDocs events ------------------------------------------------------------------------

def on_config(config, **kwargs):
    """Fill Reference > API in the nav with one entry per module."""
    entries = [{"Index": f"{API_DIR}/index.md"}] + [{m: api_page(m)} for m in api_modules()]

    def fill(items):
        for item in items:
            if isinstance(item, dict):
                for title, value in item.items():
                    if value == f"{API_DIR}/index.md" and title == "API":
                        item[title] = entries
                    elif isinstance(value, list):
                        fill(value)

    fill(config["nav"])
    return config


def on_files(files, config, **kwargs):
    """Add the generated pages to the site."""
    from mkdocs.structure.files import File

    pages = {PARAMS_PAGE: render_params_reference(), f"{API_DIR}/index.md": render_api_index()}
    pages.update({api_page(m): f"# `{m}`\n\n::: {m}\n" for m in api_modules()})
    for uri, content in pages.items():
        files.append(File.generated(config, uri, content=content))
    return files


def on_page_content(content, page, config, files, **kwargs):
    """Escape the tags that are not HTML (escape_unknown_tags) in every page's content, docstrings included."""
    return escape_unknown_tags(content)
