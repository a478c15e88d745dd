"""The library's architecture, enforced: focal/'s sub-packages import each other in one order, without a cycle.

    config, core  <-  serving  <-  rubrics  <-  judging  <-  rewards  <-  {evaluation, training}

A module may import focal modules of its own floor or the floors below (config and core share the ground floor);
evaluation and training do not import each other; nothing in focal/ imports stages/, flows/ or benchmarks/.
Every import counts, lazy ones inside functions too (docs/architecture.md).
"""

import ast
from pathlib import Path

ROOT = Path(__file__).parents[1]
FLOORS = (("focal.config", "focal.core"), ("focal.serving",), ("focal.rubrics",), ("focal.judging",),
          ("focal.rewards",), ("focal.evaluation", "focal.training"))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def focal_imports(root: Path = ROOT) -> dict:
    """module -> [(imported module, names)] for every import in focal/, at any depth (lazy ones too)."""
    out = {}
    for path in sorted((root / "focal").rglob("*.py")):
        found = []
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append((node.module, [a.name for a in node.names]))
            elif isinstance(node, ast.ImportFrom):
                raise AssertionError(f"{path}: a relative import; write `from focal.<package>.<module> import ...`")
            elif isinstance(node, ast.Import):
                found += [(a.name, []) for a in node.names]
        out[module_name(path)] = found
    return out


def home(module: str) -> str | None:
    """The sub-package (or focal.config) a focal module belongs to; None for focal itself."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else None


def floor(module: str) -> int:
    for i, names in enumerate(FLOORS):
        if home(module) in names:
            return i
    raise AssertionError(f"{module} is in no floor of the layer order: put it in a sub-package of FLOORS "
                         "(tests/test_layers.py, docs/architecture.md)")


def wrong_way(imports: dict) -> list[str]:
    """Every import against the layer order, as 'a imports b (why)'."""
    bad = []
    for m, deps in imports.items():
        if m == "focal":
            continue  # the public names, loaded lazily from every floor
        for dep, _ in deps:
            top = dep.split(".")[0]
            if top in ("stages", "flows", "benchmarks"):
                bad.append(f"{m} imports {dep} (focal/ is the library; {top}/ stands on it)")
            if top != "focal" or dep == "focal":
                continue
            if floor(dep) > floor(m):
                bad.append(f"{m} imports {dep} (floor {floor(m)} imports floor {floor(dep)}: upward)")
            elif floor(dep) == floor(m) and home(dep) != home(m) and FLOORS[floor(m)] == ("focal.evaluation",
                                                                                           "focal.training"):
                bad.append(f"{m} imports {dep} (evaluation and training do not import each other)")
    return bad


def test_focal_is_sub_packages_by_concern():
    top = sorted(p.name for p in (ROOT / "focal").glob("*.py") if p.name != "__init__.py")
    packages = sorted(p.name for p in (ROOT / "focal").iterdir() if (p / "__init__.py").exists())
    assert len(packages) >= 5 and len(top) <= 4, (packages, top)
    for name, _ in focal_imports().items():
        floor(name) if name != "focal" else None  # every module has a floor


def test_sub_packages_import_each_other_only_downward():
    assert wrong_way(focal_imports()) == []


def test_the_layer_check_fails_on_a_wrong_way_import():
    # the check can fail: an upward import, a sideways one between evaluation and training, and the scripts
    fake = {"focal.serving.client": [("focal.judging.judge", ["OpenAIJudge"])],
            "focal.training.trainer": [("focal.evaluation.stats", [])],
            "focal.core.cache": [("benchmarks.compare_training", [])],
            "focal.rewards.reward": [("focal.judging.judge", []), ("focal.config", [])]}
    bad = wrong_way(fake)
    assert len(bad) == 3 and "upward" in bad[0] and "do not import each other" in bad[1] and "library" in bad[2]


def test_focal_imports_have_no_cycle_and_no_private_import():
    imports = focal_imports()
    graph = {m: {dep for dep, _ in deps if dep in imports} for m, deps in imports.items()}
    done, on_path = set(), []

    def visit(m):
        assert m not in on_path, f"import cycle: {' -> '.join(on_path[on_path.index(m):] + [m])}"
        if m not in done:
            on_path.append(m)
            for dep in sorted(graph[m]):
                visit(dep)
            on_path.pop()
            done.add(m)

    for m in sorted(graph):
        visit(m)
    for m, deps in imports.items():
        for dep, names in deps:
            private = [n for n in names if n.startswith("_")] if dep.startswith("focal.") else []
            assert not private, f"{m} imports the private {private} from {dep}; make it public or move it"
