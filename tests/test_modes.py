"""The judge modes' registry (focal/judging/modes.py): a new mode is one class added to MODES, an unknown name lists
the valid ones, every mode's cache key is the one the cache has always held, and no `mode ==` branch is left."""

import ast
import json
from pathlib import Path

import pytest

from fake_openai import FakeOpenAI
from focal.core.cache import Cache, content_key
from focal.judging.judge import Judge
from focal.judging.modes import MODES, PerCriterion, get_mode
from focal.judging.prompts import Request
from focal.serving.endpoints import Endpoint
from helpers import BINARY, LIKERT, PITFALL, fake_endpoint as endpoint, judge_cfg as cfg
from helpers import JUDGE_ITEM as ITEM

ROOT = Path(__file__).parents[1]
NOWHERE = Endpoint("http://127.0.0.1:9/v1", "judge", "never-called")  # a judge that only builds requests


class Shouted(PerCriterion):
    """A made-up mode: per_criterion's question in capitals. Its own request and its own cache keys; nothing else."""

    name = "shouted"

    def decoding(self, cfg):
        return super().decoding(cfg) | {"mode": self.name}

    def request(self, template, cfg, model, reqs):
        prompt, kwargs = super().request(template, cfg, model, reqs)
        return prompt.upper(), kwargs | {"messages": [{"role": "user", "content": prompt.upper()}]}


def test_a_new_mode_is_one_class_added_to_the_registry(monkeypatch, tmp_path):
    monkeypatch.setitem(MODES, "shouted", Shouted())
    reqs = [Request(ITEM, c, "GOOD four", "r1") for c in (BINARY, PITFALL)]
    with FakeOpenAI() as server:
        def run(mode):
            before = server.calls
            judge = Judge(cfg(mode=mode), endpoint(server), cache=Cache(tmp_path / "c.sqlite"))
            return judge.run(reqs), server.calls - before

        out, calls = run("shouted")  # judge.mode accepts the new name: the config does not list the modes
        assert calls == 2 and [j.score for j in out] == [1.0, 0.0]  # the fake finds GOOD, so the pitfall is present
        assert all(b["messages"][0]["content"].isupper() for b in server.requests)
        assert run("shouted")[1] == 0  # its answers are cached under its own keys ...
        assert run("per_criterion")[1] == 2  # ... which per_criterion's never meet


def test_an_unknown_mode_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"^judge.mode must be one of per_criterion, per_response, one_token, "
                                         r"got 'per_critrion'$"):
        get_mode("per_critrion")
    with pytest.raises(ValueError, match="judge.mode must be one of per_criterion, per_response, one_token"):
        Judge(cfg(mode="bogus"), NOWHERE)
    with pytest.raises(ValueError, match="^params.yaml: judge.mode must be one of"):
        get_mode("bogus", "params.yaml: judge.mode")


def test_every_modes_cache_key_is_the_one_the_cache_always_held():
    r = Request(ITEM, LIKERT, "GOOD four", "r1", repeat=1)
    c = LIKERT
    what = (c.text, c.pitfall, c.scale.kind, c.scale.min, c.scale.max, ("repeat", 1))
    json_decoding = {"temperature": 0.0, "max_tokens": 120, "structured": True, "seed": None}
    one_token = {"mode": "one_token", "temperature": 0.0, "top_logprobs": 20, "seed": None}
    # the keys as focal/judging/prompts.py's cache_key and response_cache_key wrote them before the registry
    assert MODES["per_criterion"].key("id", cfg(), "T", [r]) == content_key(
        "judge", "id", json_decoding, "T", ITEM.chat(), r.response, *what)
    assert MODES["one_token"].key("id", cfg(mode="one_token"), "T", [r]) == content_key(
        "judge", "id", one_token, "T", ITEM.chat(), r.response, *what)
    both = [Request(ITEM, x, "GOOD four", "r1") for x in (BINARY, LIKERT)]
    assert MODES["per_response"].key("id", cfg(mode="per_response"), "T", both) == content_key(
        "judge", "id", json_decoding, "T", "per_response", ITEM.chat(), "GOOD four",
        [(x.id, x.text, x.pitfall, x.scale.kind, x.scale.min, x.scale.max) for x in (BINARY, LIKERT)])


def test_the_judge_builds_what_its_mode_says():
    judge = Judge(cfg(mode="one_token"), NOWHERE)
    prompt, kwargs = judge.request([Request(ITEM, BINARY, "GOOD", "r1")])
    assert kwargs["max_tokens"] == 1 and kwargs["top_logprobs"] == 20 and "one word" in prompt
    _, kwargs = judge.variant(mode="per_response").request([Request(ITEM, x, "GOOD", "r1") for x in (BINARY, LIKERT)])
    assert kwargs["max_tokens"] == 240 and kwargs["response_format"]["json_schema"]["name"] == "judgments"
    assert json.dumps(kwargs["response_format"]["json_schema"]["schema"]["required"]) == '["relevant", "clarity"]'


def test_no_mode_branch_is_left_outside_the_registry():
    # a mode's name appears in code only in the registry (and as judge.mode's default); nothing compares a mode
    names = set(MODES)
    found = []
    for path in sorted((ROOT / "focal").rglob("*.py")):
        if path.name == "modes.py" or path.name == "config.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
            if isinstance(node, ast.Compare) and any(isinstance(x, ast.Attribute) and x.attr == "mode"
                                                     for x in [node.left, *node.comparators]):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} compares a mode")
    assert found == []
