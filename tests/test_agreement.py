"""The judge measured: agreement, Cohen's kappa and confusion counts against checks and against labels."""

import dataclasses
import json
import math
import random
from pathlib import Path

import pandas as pd
import pytest
import yaml

from fake_openai import FakeOpenAI
from focal.judging.agreement import (RESTATED, check_probes, cohen_kappa, figures, load_labelled, markdown, repeated_probes,
                             restated_probes, rows, sampled, with_checks, with_labels, with_repeated, with_restated)
from focal.config import load_params
from focal.judging.prompts import Request, requests_for
from focal.judging.spec import JudgeSpec
from focal.judging.tables import judge_measured
from focal.judging.tables import load_items
from focal.judging.validate import ChecksFailed
from focal.rubrics.types import RubricError
from stages import judge as judge_stage
from stages import validate as validate_stage
from helpers import judge_project, string_splits

T, F = True, False
FIXTURE = Path(__file__).parent / "fixtures" / "healthbench_meta.jsonl"


# ---- the math, by hand ----------------------------------------------------------------

def test_agreement_kappa_and_confusion_by_hand():
    # tp 1, fn 1, tn 2; p_o = 3/4; p_truth = 1/2, p_judge = 1/4; p_e = 1/8 + 3/8 = 1/2; kappa = (3/4 - 1/2) / (1/2)
    assert figures([T, T, F, F], [T, F, F, F]) == {"n": 4, "agreement": 0.75, "kappa": 0.5, "tp": 1, "fp": 0,
                                                  "fn": 1, "tn": 2, "missing": 0}
    # tp 2, fp 1, fn 1, tn 3: p_o = 5/7, p_e = 9/49 + 16/49 = 25/49, kappa = (35 - 25) / (49 - 25) = 5/12
    f = figures([T, T, F, T, F, F, F], [T, T, T, F, F, F, F])
    assert (f["tp"], f["fp"], f["fn"], f["tn"]) == (2, 1, 1, 3)
    assert f["agreement"] == pytest.approx(5 / 7) and f["kappa"] == pytest.approx(5 / 12)
    assert cohen_kappa(tp=0, fp=2, fn=2, tn=0) == pytest.approx(-1.0)  # always opposite: p_o 0, p_e 1/2


def test_missing_verdicts_are_skipped_not_disagreements():
    f = figures([T, None, F, T], [T, T, math.nan, F])
    assert (f["n"], f["missing"], f["tp"], f["fn"]) == (2, 2, 1, 1) and f["agreement"] == 0.5


def test_degenerate_cases_are_defined():
    empty = figures([], [])
    assert empty["n"] == 0 and math.isnan(empty["agreement"]) and math.isnan(empty["kappa"])
    same = figures([T, T, T], [T, T, T])  # both constant on the same verdict: p_e = 1
    assert same["agreement"] == 1.0 and math.isnan(same["kappa"])
    one = figures([T, T, T, T], [T, F, T, T])  # the truth constant, the judge not: p_o = p_e = 3/4
    assert one["agreement"] == 0.75 and one["kappa"] == 0.0
    opposite = figures([T, T], [F, F])  # both constant, opposite verdicts: p_o = p_e = 0
    assert opposite["agreement"] == 0.0 and opposite["kappa"] == 0.0


# ---- 1. against the checks -----------------------------------------------------------

def test_the_sample_is_deterministic_and_about_the_share():
    pairs = [(f"r{i}", c) for i in range(400) for c in ("word_limit", "keywords")]
    picked = [p for p in pairs if sampled(*p, 0.25)]
    assert picked == [p for p in pairs if sampled(*p, 0.25)]
    assert 0.18 < len(picked) / len(pairs) < 0.32
    assert not any(sampled(*p, 0.0) for p in pairs) and all(sampled(*p, 1.0) for p in pairs)
    assert set(picked) <= {p for p in pairs if sampled(*p, 0.5)}  # a bigger share keeps the smaller sample


def test_probes_are_the_sampled_checks_asked_without_their_check(tmp_path):
    with FakeOpenAI() as server:
        params = load_params(judge_project(tmp_path, server.base_url))
    reqs = requests_for(pd.read_parquet(params.paths.rollouts), load_items(params.paths), "rollouts")
    probes = check_probes(reqs, 1.0)
    checked = [r for r in reqs if r.criterion.check is not None]
    assert len(probes) == len(checked) > 0 and all(p.criterion.check is None for p in probes)
    assert [(p.rollout_id, p.criterion.id, p.criterion.text) for p in probes] == \
           [(r.rollout_id, r.criterion.id, r.criterion.text) for r in checked]
    assert check_probes(reqs, 0.0) == []
    again = restated_probes(reqs, 1.0)
    judged = [r for r in reqs if r.criterion.check is None]
    assert [(p.rollout_id, p.criterion.id, p.criterion.text) for p in again] == \
           [(r.rollout_id, r.criterion.id, RESTATED.format(text=r.criterion.text)) for r in judged]


def test_with_checks_compares_each_probe_with_its_check():
    judgments = pd.DataFrame({"rollout_id": ["a", "b", "c", "a"], "criterion_id": ["w", "w", "w", "rel"],
                              "key": ["w", "w", "w", "rel"], "source": ["check", "check", "check", "judge"],
                              "score": [1.0, 0.0, 1.0, 0.0]})
    probes = pd.DataFrame({"rollout_id": ["a", "b", "c"], "criterion_id": ["w", "w", "w"], "key": ["w", "w", "w"],
                           "score": [1.0, 1.0, math.nan]})
    m = with_checks(judgments, probes, 0.25)
    assert m["agreement/overall"] == 0.5 and m["agreement/n"] == 2 and m["agreement/missing"] == 1
    assert (m["agreement/tp"], m["agreement/fp"], m["agreement/kappa"]) == (1, 1, 0.0)
    assert m["agreement/by_key/w/agreement"] == 0.5 and m["agreement/share"] == 0.25
    assert [r["scope"] for r in rows(m, "agreement")] == ["overall", "by_key/w"]
    assert markdown(m, "agreement").splitlines()[2].startswith("| overall | 0.5 | 0.0 | 2 |")


def test_agreement_keeps_its_structure_and_names_it_once():
    from focal.judging.agreement import agreement_metrics, agreement_table, metric_name

    # the structure: figures per scope, () overall and (by, group) per group; a criterion key may hold '/'
    table = agreement_table([1.0, 0.0, 1.0], [1.0, 1.0, 1.0], ["a/b", "a/b", "c"], "by_key")
    assert list(table) == [(), ("by_key", "a/b"), ("by_key", "c")] and table[("by_key", "a/b")]["fp"] == 1
    assert metric_name("agreement", (), "agreement") == "agreement/overall"
    assert metric_name("agreement", ("by_key", "a/b"), "kappa") == "agreement/by_key/a/b/kappa"
    m = agreement_metrics([1.0, 0.0, 1.0], [1.0, 1.0, 1.0], ["a/b", "a/b", "c"], "agreement", "by_key")
    assert m["agreement/by_key/a/b/agreement"] == 0.5 and m["agreement/overall"] == pytest.approx(2 / 3, abs=1e-4)
    # read back from the flat names (a metrics file): every scope whole, none cut at a '/'; a nested prefix apart
    nested = {k.replace("agreement/", "agreement/repeat/", 1): v for k, v in m.items()}
    assert [r["scope"] for r in rows(m | nested, "agreement")] == ["overall", "by_key/a/b", "by_key/c"]
    assert [r["scope"] for r in rows(m | nested, "agreement/repeat")] == ["overall", "by_key/a/b", "by_key/c"]
    assert rows(m, "agreement")[1]["fp"] == 1 and rows(m, "consistency") == []
    with pytest.raises(ValueError, match="grouped by one of by_key, by_category, got 'by_kye'"):
        agreement_table([1.0], [1.0], ["a"], "by_kye")
    assert string_splits("focal/judging/agreement.py") == []  # no metric name is parsed back


def test_with_restated_is_the_judges_self_agreement():
    judgments = pd.DataFrame({"rollout_id": ["a", "b", "c", "d", "a"], "criterion_id": ["rel"] * 4 + ["w"],
                              "key": ["rel"] * 4 + ["w"], "source": ["judge"] * 4 + ["check"],
                              "score": [1.0, 1.0, 0.0, 0.0, 1.0]})
    again = pd.DataFrame({"rollout_id": ["a", "b", "c", "d"], "criterion_id": ["rel"] * 4, "key": ["rel"] * 4,
                          "score": [1.0, 0.0, 0.0, 0.0]})
    m = with_restated(judgments, again, 0.5)  # the first answers play truth: tp 1, fn 1, tn 2 (kappa 1/2, by hand above)
    assert (m["consistency/overall"], m["consistency/kappa"], m["consistency/fn"]) == (0.75, 0.5, 1)
    assert m["consistency/by_key/rel/n"] == 4 and m["consistency/share"] == 0.5


def test_with_repeated_is_the_same_request_asked_again():
    judgments = pd.DataFrame({"rollout_id": ["a", "b", "c"], "criterion_id": ["rel"] * 3, "key": ["rel"] * 3,
                              "source": ["judge"] * 3, "score": [1.0, 0.0, 0.0]})
    again = pd.DataFrame({"rollout_id": ["a", "b", "c"], "criterion_id": ["rel"] * 3, "key": ["rel"] * 3,
                          "score": [0.0, 0.0, math.nan]})
    m = with_repeated(judgments, again, 0.0)  # fn 1 (a), tn 1 (b), c failed: agreement 1/2, kappa 0 (truth 1/2, judge 0)
    assert (m["consistency/repeat/overall"], m["consistency/repeat/kappa"], m["consistency/repeat/missing"]) == (0.5, 0.0, 1)
    assert m["consistency/repeat/temperature"] == 0.0 and m["consistency/repeat/by_key/rel/n"] == 2
    # both tables side by side in one metrics dict: each prefix keeps its own rows
    both = m | with_restated(judgments, again, 0.5)
    assert [r["scope"] for r in rows(both, "consistency")] == ["overall", "by_key/rel"]
    assert [r["scope"] for r in rows(both, "consistency/repeat")] == ["overall", "by_key/rel"]


def test_a_repeated_request_has_its_own_cache_key_and_the_rest_keep_theirs(tmp_path):
    from focal.config import Judge as JudgeConfig
    from focal.core.cache import content_key
    from focal.judging.modes import MODES

    with FakeOpenAI() as server:
        params = load_params(judge_project(tmp_path, server.base_url))
    reqs = requests_for(pd.read_parquet(params.paths.rollouts), load_items(params.paths), "rollouts")
    again = repeated_probes(reqs, 1.0)
    judged = [r for r in reqs if r.criterion.check is None]
    assert len(again) == len(judged) > 0 and all(a.repeat == 1 and a.criterion == r.criterion and a.response == r.response
                                                 for a, r in zip(again, judged))
    cfg, r = JudgeConfig(mode="per_criterion"), judged[0]
    c = r.criterion
    old = content_key("judge", "id", {"temperature": 0.0, "max_tokens": cfg.max_tokens, "structured": True,
                                      "seed": None}, "T", r.item.chat(), r.response, c.text, c.pitfall, c.scale.kind,
                      c.scale.min, c.scale.max)  # the key as it was before `repeat` existed
    key = MODES["per_criterion"].key
    assert key("id", cfg, "T", [r]) == key("id", cfg, "T", [dataclasses.replace(r, repeat=0)]) == old
    assert key("id", cfg, "T", [dataclasses.replace(r, repeat=1)]) != old


class Flipping(FakeOpenAI):
    """A judge that is not deterministic: an identical prompt gets 'met', then 'not met', then 'met', ..."""

    def answer(self, body):
        prompt = body["messages"][-1]["content"]
        with self.lock:
            self.requests.append(body)
            self.attempts[prompt] += 1
            n = self.attempts[prompt]
        return 200, self.completion(body, json.dumps({"explanation": "flip", "criteria_met": n % 2 == 1})), ""


def test_repeat_catches_a_judge_that_changes_its_answer_to_the_same_request(tmp_path):
    with Flipping() as server:  # answers JSON
        params = load_params(with_section(judge_project(tmp_path, server.base_url), "judge", mode="per_criterion"))
        reqs = requests_for(pd.read_parquet(params.paths.rollouts), load_items(params.paths), "rollouts")
        _, m = judge_measured(JudgeSpec.from_params(params, None), reqs)
    # restated: another prompt, asked for the first time -> "met" like the first answer; repeated: the second ask
    # of the identical prompt -> "not met"
    assert m["consistency/n"] == m["consistency/repeat/n"] > 0  # the same sampled pairs
    assert m["consistency/overall"] == 1.0 and m["consistency/repeat/overall"] == 0.0
    # every pair flipped: "met" then "not met" (fn), or on a pitfall present then absent (fp)
    assert m["consistency/repeat/fn"] + m["consistency/repeat/fp"] == m["consistency/repeat/n"]


def random_rollouts(params, seed=0):
    """Rollouts whose completions contain GOOD at random: the fake judge then answers at random."""
    rollouts = pd.read_parquet(params.paths.rollouts)
    rng = random.Random(seed)
    rollouts = pd.concat([rollouts.assign(rollout_id=rollouts.rollout_id + f"-{k}") for k in range(4)], ignore_index=True)
    rollouts["completion"] = [f"{c} {'GOOD' if rng.random() < 0.5 else ''}".strip() for c in rollouts.completion]
    rollouts.to_parquet(params.paths.rollouts)


def with_section(path: Path, section: str, **values) -> Path:
    raw = yaml.safe_load(path.read_text())
    raw.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(raw))
    return path


def test_judge_stage_reports_agreement_and_validate_gates_on_it(tmp_path):
    """Acceptance (issue 14): metrics/judge.json has overall and per-criterion agreement with the checks; the validate
    stage fails when validate.min_judge_agreement is above it (a fake judge answering at random)."""
    with FakeOpenAI() as server:
        path = judge_project(tmp_path, server.base_url)
        with_section(path, "paths", validation_report=str(tmp_path / "validation.json"))
        random_rollouts(load_params(path))
        params = load_params(path)
        judge_stage.run(params)
        calls = server.calls
        judge_stage.run(params)
        assert server.calls == calls  # a rerun asks nothing: the probes are cached too
    stats = json.loads(Path(params.paths.judge_stats).read_text())
    df = pd.read_parquet(params.paths.judgments)
    n_requests = len(requests_for(pd.read_parquet(params.paths.rollouts), load_items(params.paths), "rollouts"))
    assert len(df) == n_requests  # the probes are not training data
    probes = sum(stats[f"{m}/{k}"] for m in ("agreement", "consistency", "consistency/repeat") for k in ("n", "missing"))
    assert calls == (df.source == "judge").sum() + probes
    assert stats["consistency/n"] > 10 and stats["consistency/overall"] == 1.0  # the fake ignores the wording
    assert stats["consistency/repeat/n"] == stats["consistency/n"] and stats["consistency/repeat/overall"] == 1.0
    assert stats["agreement/n"] > 10 and stats["agreement/share"] == 0.25
    measured = stats["agreement/overall"]
    assert 0.2 < measured < 0.8  # a judge answering at random
    keys = {k.split("/")[2] for k in stats if k.startswith("agreement/by_key/")}
    assert keys and keys <= set(df[df.source == "check"].key)
    assert stats["agreement/tp"] + stats["agreement/fp"] + stats["agreement/fn"] + stats["agreement/tn"] == stats["agreement/n"]

    validate_stage.run(load_params(path))  # report only by default
    report = json.loads((tmp_path / "validation.json").read_text())
    assert report["success"] and report["judge_agreement"]["agreement"] == measured

    with pytest.raises(ChecksFailed):
        validate_stage.run(load_params(with_section(path, "validate", min_judge_agreement=round(measured + 0.05, 2))))
    report = json.loads((tmp_path / "validation.json").read_text())
    failed = [c for c in report["checks"] if not c["success"]]
    assert [(c["table"], c["kwargs"]["column"]) for c in failed] == [("judge", "agreement")]
    assert failed[0]["rows"][0]["agreement"] == measured
    validate_stage.run(load_params(with_section(path, "validate", min_judge_agreement=round(measured - 0.05, 2))))


# ---- 2. against labels people already have ------------------------------------------

def test_the_labelled_fixture_reproduces_hand_computed_agreement_and_kappa():
    labelled, ties = load_labelled(FIXTURE)
    assert ties == 1 and len(labelled) == 7  # hb-m8's labels tie: no majority
    assert [x.verdict for x in labelled] == [T, T, F, F, F, T, F]
    assert labelled[2].request.item.chat()[-1]["content"] == "Two days, with a stiff neck and fever."
    judged = [1.0 if "GOOD" in x.request.response else 0.0 for x in labelled]  # what the fake judge answers
    m = with_labels(labelled, judged)
    # tp 2 (m1, m2), fp 1 (m3), fn 1 (m6), tn 3: agreement 5/7, kappa 5/12 (worked in the test above)
    assert (m["labels/tp"], m["labels/fp"], m["labels/fn"], m["labels/tn"]) == (2, 1, 1, 3)
    assert m["labels/overall"] == round(5 / 7, 4) and m["labels/kappa"] == round(5 / 12, 4)
    # emergency (m1 tp, m3 fp, m4 tn, m6 fn): p_o 1/2, p_e 1/2 -> kappa 0; communication (m2 tp, m5 tn, m7 tn):
    # p_o 1, p_e 1/9 + 4/9 = 5/9 -> kappa 1
    assert (m["labels/by_category/cluster:emergency_referrals/agreement"],
            m["labels/by_category/cluster:emergency_referrals/kappa"]) == (0.5, 0.0)
    assert (m["labels/by_category/cluster:communication/agreement"],
            m["labels/by_category/cluster:communication/kappa"]) == (1.0, 1.0)


def test_the_labels_command_judges_the_fixture_through_the_judge(tmp_path, capsys):
    from benchmarks.judge_agreement import main

    with FakeOpenAI() as server:
        params = tmp_path / "params.yaml"
        params.write_text(yaml.safe_dump({"paths": {"judge_cache": str(tmp_path / "cache.sqlite")},
                                          "judge": {"base_url": server.base_url, "model": "fake", "backoff_s": 0.01}}))
        m = main(["--labels", str(FIXTURE), "--params", str(params), "--json", str(tmp_path / "labels.json")])
        assert server.calls == 7
    assert m["labels/overall"] == round(5 / 7, 4) and m["labels/kappa"] == round(5 / 12, 4)
    assert m["labels/ties_skipped"] == 1 and json.loads((tmp_path / "labels.json").read_text()) == m
    assert "| overall | 0.7143 | 0.4167 | 7 | 2 | 1 | 1 | 3 | 0 |" in capsys.readouterr().out


def test_a_bad_labelled_row_names_file_line_field_and_fix(tmp_path):
    bad = tmp_path / "meta.jsonl"
    good = FIXTURE.read_text().splitlines()[0]
    bad.write_text(good + "\n" + json.dumps({**json.loads(good), "prompt_id": "x9", "binary_labels": []}) + "\n")
    with pytest.raises(RubricError, match=r"meta.jsonl:2: item 'x9' field 'binary_labels' must be a non-empty list"):
        load_labelled(bad)
    bad.write_text(json.dumps({**json.loads(good), "rubric": ""}) + "\n")
    with pytest.raises(RubricError, match=r"meta.jsonl:1: item 'hb-m1' field 'rubric' is missing or empty"):
        load_labelled(bad)


def test_labelled_requests_are_plain_judge_requests():
    labelled, _ = load_labelled(FIXTURE)
    r = labelled[0].request
    assert isinstance(r, Request) and r.criterion.check is None and not r.criterion.pitfall
    assert r.criterion.category == "cluster:emergency_referrals" and r.rollout_id.startswith("c-")
    assert len({x.request.rollout_id for x in labelled}) == 7
