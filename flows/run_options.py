"""The options of a retraining run, declared once for every command that takes them.

    focal retrain --aggregator focal --steps 3 --seed 7     # flows/cli.py (typer: with_run_options)
    focal deploy --steps 3                                  # flows/cli.py, for every scheduled run
    python -m flows.retrain --steps 3                       # flows/retrain.py (argparse: add_arguments)
    python -m flows.deploy --steps 3                        # flows/deploy.py

Each is a parameter of the retrain flow (flows/retrain.py); those with a params key
are written into the run's params.yaml (retrain.configured). A deployment takes every
option but the seed: each scheduled run draws its own.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunOption:
    type: type
    help: str
    key: str = ""  # the params key it sets, section.field ('' = none: a flow parameter only)
    every_run: bool = True  # a deployment passes it to every scheduled run


RUN_OPTIONS = {
    "aggregator": RunOption(str, "train.aggregator (default: as committed)", "train.aggregator"),
    "rubric_set": RunOption(str, "base.rubric_set (default: as committed)", "base.rubric_set"),
    "steps": RunOption(int, "train.max_steps (default: as committed)", "train.max_steps"),
    "seed": RunOption(int, "the sampling seed, base.seed (default: a new one)", every_run=False),
    "remote": RunOption(str, "the DVC remote to pull from and push to (default: the repository's default remote)"),
}


def flag(name: str) -> str:
    """'rubric_set' -> '--rubric-set'."""
    return "--" + name.replace("_", "-")


def taken(every_run: bool = False) -> dict[str, RunOption]:
    """The options a command takes: all of them, or (every_run) those a deployment gives every scheduled run."""
    return {name: o for name, o in RUN_OPTIONS.items() if o.every_run or not every_run}


def add_arguments(ap, every_run: bool = False) -> None:
    """Add the options to an argparse parser (each defaults to None: as committed, or the flow's default)."""
    for name, o in taken(every_run).items():
        ap.add_argument(flag(name), type=o.type, help=o.help)


def given(values) -> dict:
    """The options set in `values` (a dict, or argparse's namespace): name -> value, the unset (None) left out."""
    values = values if isinstance(values, dict) else vars(values)
    return {name: values[name] for name in RUN_OPTIONS if values.get(name) is not None}


def params_settings(options: dict) -> dict:
    """The options that set a params key: {'train.max_steps': 3, ...}."""
    return {RUN_OPTIONS[name].key: value for name, value in options.items() if RUN_OPTIONS[name].key}
