"""One judge spec (focal/judging/spec.py): built once per stage and passed whole, immutable, another judge (the audit's,
an ensemble member's) another spec; every message about its endpoint names the knob that set it."""

import ast
import dataclasses
from pathlib import Path

import pytest

from fake_openai import FakeOpenAI
from focal.config import params_from_dict
from focal.judging.judge import open_judge
from focal.judging.prompts import Request
from focal.judging.spec import JudgeSpec
from focal.serving.client import EndpointDown
from helpers import BINARY
from helpers import JUDGE_ITEM as ITEM

ROOT = Path(__file__).parents[1]
NOWHERE = "http://127.0.0.1:9/v1"  # nothing listens there


def params(**judge):
    return params_from_dict({"judge": {"timeout_s": 2.0, "max_retries": 0, **judge},
                             "audit": {"source": "endpoint", "base_url": NOWHERE, "model": "audit-model"},
                             "ensemble": {"members": [{"name": "b", "base_url": NOWHERE, "model": "b-model",
                                                       "api_key_env": "B_KEY"},
                                                      {"name": "c", "base_url": NOWHERE, "model": "c-model"}]}})


def test_a_spec_is_immutable_and_holds_its_own_copy():
    p = params(mode="per_criterion", temperature=0.5)
    spec = JudgeSpec.from_params(p, "T")
    assert (spec.cfg.mode, spec.template, spec.cache_path, spec.local_model) == (
        "per_criterion", "T", p.paths.judge_cache, p.paths.judge_model)
    assert spec.source == "judge.base_url" and spec.serve == p.serve and spec.serve is not p.serve
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.template = "other"
    p.judge.temperature = 1.0  # params changed after the spec was built: the spec is not
    assert spec.cfg.temperature == 0.5 and spec.cfg is not p.judge
    assert JudgeSpec.from_params(p, None, cache=False).cache_path == ""


def test_the_audits_and_the_members_judges_are_specs_of_their_own():
    p = params(mode="per_criterion", temperature=0.5)
    spec = JudgeSpec.from_params(p, "T")
    audit = spec.for_audit(p.audit)
    assert (audit.source, audit.cfg.base_url, audit.cfg.model, audit.cfg.api_key_env) == (
        "audit.base_url", NOWHERE, "audit-model", p.audit.api_key_env)
    b, c = (spec.for_member(m, i) for i, m in enumerate(p.ensemble.members))
    assert (b.source, b.cfg.model, b.cfg.api_key_env) == ("ensemble.members[0].base_url", "b-model", "B_KEY")
    assert (c.source, c.cfg.api_key_env) == ("ensemble.members[1].base_url", p.judge.api_key_env)  # judge's key
    for other in (audit, b, c):  # the judge's mode, decoding, bounds, template and cache
        assert (other.cfg.mode, other.cfg.temperature, other.template, other.cache_path) == (
            "per_criterion", 0.5, "T", spec.cache_path)
    assert spec.cfg.base_url == "" and spec.source == "judge.base_url"  # the judge's own spec is as it was


def test_every_message_about_an_endpoint_names_the_knob_that_set_it(tmp_path):
    p = params(mode="per_criterion", max_retries=3, backoff_s=0.01, max_backoff_s=0.02)
    spec = JudgeSpec.from_params(p, None, cache=False)
    with pytest.raises(ValueError, match=f"^audit.base_url {NOWHERE}: cannot list its models"):
        spec.for_audit(p.audit).identity()  # the identity of what answers: GET /models
    with FakeOpenAI() as server:
        member = spec.for_member({"name": "c", "base_url": server.base_url, "model": "nope"}, 1)
        with pytest.raises(ValueError, match=f"^ensemble.members\\[1\\].base_url {server.base_url} serves no "
                                             "model named 'nope'"):
            member.identity()
    reqs = [Request(ITEM, BINARY, f"GOOD {i}", f"r{i}") for i in range(8)]
    with open_judge(spec.for_audit(p.audit), identity="known") as judge:  # a run at a dead endpoint stops, naming it
        assert judge.endpoint.param == "audit.base_url"
        with pytest.raises(EndpointDown, match=f"audit.base_url {NOWHERE} refused the connection .*; check the server "
                                               "and audit.base_url"):
            judge.run(reqs)


def test_an_unknown_mode_fails_when_the_spec_is_built():
    with pytest.raises(ValueError, match="^judge.mode must be one of per_criterion, per_response, one_token, "
                                         "got 'per_rollout'$"):
        JudgeSpec.from_params(params(mode="per_rollout"), None)


def test_each_stage_builds_one_spec_and_passes_it():
    """Where a judge is opened, the spec is built once (from_params) and everything else takes it: no judge.* section,
    serve.* section or paths travel beside it, and no other judge is made by editing a section in place."""
    def calls(path: str, name: str) -> list:
        tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
        return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
                and getattr(n.func, "attr", getattr(n.func, "id", None)) == name]

    for stage in ("stages/judge.py", "stages/train.py"):
        assert len(calls(stage, "from_params")) == 1, stage
    openers = ("open_judge", "open_audit", "open_ensemble", "judge_table", "judge_measured", "judge_labelled")
    for path in sorted(p for d in ("focal", "stages", "flows", "benchmarks") for p in (ROOT / d).rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        for name in openers:
            for call in calls(rel, name):
                passed = [ast.unparse(a) for a in [*call.args, *(k.value for k in call.keywords)]]
                assert not any(x.endswith((".judge", ".serve", ".paths")) for x in passed), (rel, name, passed)
    for rel in ("focal/rewards/audit.py", "focal/judging/ensemble.py"):  # their judges: spec.for_audit, spec.for_member
        assert calls(rel, "replace") == [], rel
