"""dvc.yaml tells the truth: each stage declares the code it runs, the params sections it reads, and nothing else."""

import importlib

import pytest
import yaml

from dvc_graph import ROOT, closure

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
CODE = ("focal/", "stages/")


@pytest.mark.parametrize("stage", sorted(DVC))
def test_declared_code_deps_are_exactly_what_the_stage_imports(stage):
    declared = {d for d in DVC[stage]["deps"] if isinstance(d, str) and d.startswith(CODE)}
    used = closure(f"stages/{stage}.py")
    assert not used - declared, f"dvc.yaml stage {stage!r} misses deps: {sorted(used - declared)}"
    assert not declared - used, f"dvc.yaml stage {stage!r} declares deps it never reads: {sorted(declared - used)}"


@pytest.mark.parametrize("stage", sorted(DVC))
def test_declared_params_are_exactly_the_sections_the_stage_reads(stage):
    reads = importlib.import_module(f"stages.{stage}").READS
    assert sorted(DVC[stage].get("params", [])) == sorted(reads)


def test_reading_an_undeclared_section_fails_at_once():
    from focal.config import Params
    from focal.core.stage import Declared, UndeclaredParams

    view = Declared(Params(), ("judge",), "validate")
    assert view.judge.temperature == 0.0 and view.paths.judgments  # declared, and paths
    with pytest.raises(UndeclaredParams, match="'validate' read params section 'train'.*dvc.yaml"):
        view.train


def test_outputs_a_user_wants_back_survive_a_failed_run():
    """persist: DVC does not delete them before running; the stage writes atomically."""
    for stage, path in (("train", "${paths.trained_model}"), ("evaluate", "${paths.eval_report}")):
        outs = {k: v for o in DVC[stage]["outs"] for k, v in (o.items() if isinstance(o, dict) else [(o, {})])}
        assert outs[path].get("persist") is True, (stage, path)
    trained = next(o for o in DVC["train"]["outs"] if "${paths.trained_model}" in o)
    assert trained["${paths.trained_model}"].get("cache", True), "the trained model must be DVC-cached"
