"""The validate stage (real Great Expectations): good judgments pass; broken ones fail naming column and rows."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from focal.config import Validate
from focal.judging.validate import check_judgments

ROOT = Path(__file__).parents[1]


def table(n_rollouts=10):
    rows = []
    for r in range(n_rollouts):
        for c, key, source in (("relevant", "relevant", "judge"), ("short", "word_limit", "check")):
            rows.append({"prompt_id": f"p{r % 3}", "rollout_id": f"r{r}", "criterion_id": c, "key": key,
                         "source": source, "score": float((r + len(c)) % 2), "reason": ""})
    return pd.DataFrame(rows)


def failed(report):
    return {(c["table"], c["kwargs"].get("column") or tuple(c["kwargs"].get("column_list", ()))): c
            for c in report["checks"] if not c["success"]}


def test_good_judgments_pass():
    report = check_judgments(table(), Validate(), 0.2)
    assert report["success"], report
    json.dumps(report)


def test_out_of_range_duplicate_and_failures_are_named():
    df = table()
    df.loc[3, "score"] = 1.7
    df = pd.concat([df, df.iloc[[5]]], ignore_index=True)  # a duplicate key
    df.loc[[0, 2, 4, 6, 8], "score"] = math.nan
    report = check_judgments(df, Validate(), 0.1)
    assert not report["success"]
    bad = failed(report)
    assert bad[("judgments", "score")]["rows"][0] == {"prompt_id": "p1", "rollout_id": "r1",
                                                      "criterion_id": "short", "score": 1.7, "row": 3}
    dup = bad[("judgments", ("prompt_id", "rollout_id", "criterion_id"))]
    assert dup["unexpected_count"] == 2 and {r["row"] for r in dup["rows"]} == {5, 20}
    assert bad[("judgments", "failed")]["observed"] == pytest.approx(5 / 10)  # of the 10 judge rows (checks cannot fail)


def test_constant_judge_and_criterion_means():
    df = table()
    df.loc[df.criterion_id == "relevant", "score"] = 1.0  # the judge says yes to everything
    report = check_judgments(df, Validate(max_constant_share=0.0, criterion_mean_max=0.9, min_rows_for_constant=5), 0.2)
    bad = failed(report)
    assert report["constant_keys"] == ["relevant"]
    assert bad[("criteria", "constant")]["observed"] == 0.5  # 1 of 2 keys (checks never count as a judge)
    assert bad[("criteria", "mean")]["rows"] == [{"key": "relevant", "mean": 1.0, "row": 0}]


def test_validate_stage_fails_on_all_failures_with_a_readable_report(tmp_path):
    df = table()
    df["score"] = math.nan
    df.to_parquet(tmp_path / "j.parquet")
    params = {"paths": {"judgments": str(tmp_path / "j.parquet"), "validation_report": str(tmp_path / "v.json")}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run([sys.executable, "-m", "stages.validate", "--params", str(tmp_path / "params.yaml")],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "FAILED judgments.failed: expect_column_mean_to_be_between" in proc.stderr
    assert "observed 1.0" in proc.stderr and "Traceback" not in proc.stderr
    report = json.loads((tmp_path / "v.json").read_text())
    assert report["success"] is False and report["failure_share"] == 1.0


def test_failure_share_counts_only_the_judges_rows():
    """34% of judge calls failing (75% on one criterion) passed at "17.6%" when check rows, which cannot fail,
    were counted too."""
    rows = []
    for r in range(40):
        for c, key, source in (("relevant", "relevant", "judge"), ("correct", "correct", "judge"),
                               ("short", "word_limit", "check"), ("lower", "lowercase", "check")):
            rows.append({"prompt_id": f"p{r % 4}", "rollout_id": f"r{r}", "criterion_id": c, "key": key,
                         "source": source, "score": 1.0, "reason": ""})
    df = pd.DataFrame(rows)
    judged = df.index[df.source == "judge"]
    df.loc[judged[:27], "score"] = math.nan  # 27 of 80 judge calls
    report = check_judgments(df, Validate(), 0.2)
    assert report["failure_share"] == pytest.approx(27 / 80) and report["judge_rows"] == 80
    assert not report["success"] and failed(report)[("judgments", "failed")]["observed"] == pytest.approx(27 / 80)


def test_judge_agreement_gate():
    """Report only by default; a minimum above the measured agreement, or a minimum with nothing measured, fails."""
    stats = {"agreement/overall": 0.6, "agreement/kappa": 0.2, "agreement/n": 20}
    report = check_judgments(table(), Validate(), 0.2, stats)
    assert report["success"] and report["judge_agreement"] == {"agreement": 0.6, "kappa": 0.2, "n": 20, "min": 0.0}
    assert check_judgments(table(), Validate(), 0.2, None)["success"]  # not measured, not asked for
    report = check_judgments(table(), Validate(min_judge_agreement=0.7), 0.2, stats)
    bad = failed(report)
    assert list(bad) == [("judge", "agreement")] and bad[("judge", "agreement")]["rows"] == [
        {"scope": "overall", "n": 20, "agreement": 0.6, "row": 0}]
    assert check_judgments(table(), Validate(min_judge_agreement=0.6), 0.2, stats)["success"]
    report = check_judgments(table(), Validate(min_judge_agreement=0.5), 0.2, {"agreement/n": 0})
    assert not report["success"] and failed(report)[("judge", "agreement")]["expectation"] == \
           "expect_column_values_to_not_be_null"
