"""What a stage script reads, found statically: the focal/ and stages/ modules it imports (at any depth,
including imports inside functions) and the data files those modules read at import time."""

import ast
from pathlib import Path

ROOT = Path(__file__).parents[1]
DATA = {"focal/judging/prompts.py": ["focal/judging/template.md"]}  # files a module reads when imported


def module_file(name: str) -> str | None:
    path = ROOT / (name.replace(".", "/") + ".py")
    if path.exists() and name.split(".")[0] in ("focal", "stages"):
        return str(path.relative_to(ROOT))
    return None


def imports(path: str) -> set[str]:
    tree = ast.parse((ROOT / path).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}  # `from focal.rewards import reward`
    return {f for f in map(module_file, found) if f and not f.endswith("__init__.py")}


def closure(path: str) -> set[str]:
    seen, todo = set(), [path]
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.add(p)
            todo += imports(p) - seen
    return seen | {d for p in seen for d in DATA.get(p, [])}
