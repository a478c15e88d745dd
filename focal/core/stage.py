"""What every stage script shares: parse --params, read only the params sections dvc.yaml declares, run.

    # stages/judge.py
    READS = ("base", "judge", "serve")           # must equal the stage's `params:` in dvc.yaml (a test checks)
    if __name__ == "__main__":
        run_stage(run, __doc__, READS)

A stage gets its params through `Declared`: reading a section the stage did not
declare raises at once (naming the stage, the section and the fix), so a stage
cannot depend on a knob DVC does not know about; `paths` is always readable (its
values are the stage's deps and outs in dvc.yaml). A user error (ValueError: bad
params, rubric or data; it names the file, field and fix) becomes one
`error: ...` line and exit code 2; Ctrl-C becomes one line and exit code 130 (stages
write each output whole or not at all, and dvc.yaml keeps the previous ones: persist).
"""

from __future__ import annotations

import argparse
import sys

ALWAYS = ("paths",)
EX_TEMPFAIL = 75  # sysexits' "temporary failure": a stage whose calls failed on transient errors only


class UndeclaredParams(AttributeError):
    """A stage read a params section that its dvc.yaml entry does not declare."""


class Declared:
    """A read-only view of Params exposing only the declared sections (and paths)."""

    def __init__(self, params, sections, stage: str, source: str = "params.yaml"):
        self._params, self._sections, self._stage = params, tuple(sections) + ALWAYS, stage
        self.source = source  # the params file, for messages that name it

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._sections:
            raise UndeclaredParams(f"stage {self._stage!r} read params section {name!r}, which it does not declare; "
                                   f"add it to the stage's READS and to its `params:` in dvc.yaml")
        return getattr(self._params, name)


def run_stage(run, doc: str, reads, argv=None) -> None:
    """Entry point of a stage script: parse --params, run(Declared params), turn a user error into one line."""
    from focal.config import load_params

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml", help="the params file")
    module = run.__module__
    if module == "__main__":  # `python -m stages.judge`: the module's own name is in its spec
        module = getattr(sys.modules["__main__"].__spec__, "name", None) or "stage"
    stage = module.rsplit(".", 1)[-1]
    try:
        path = ap.parse_args(argv).params
        run(Declared(load_params(path), reads, stage, path))
    except ValueError as e:  # RubricError, config and data errors: the message names file, field and fix
        for line in str(e).splitlines() or [""]:  # a rubric set's mistakes: one line each (RubricError.errors)
            print(f"error: {line}", file=sys.stderr)
        sys.exit(EX_TEMPFAIL if getattr(e, "transient", False) else 1)  # transient: focal.serving.client.CallsFailed
    except KeyboardInterrupt:
        print(f"{stage}: interrupted (Ctrl-C); every output is as it was or whole, none half-written",
              file=sys.stderr)
        sys.exit(130)
