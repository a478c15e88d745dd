"""Data checks on judge scores with Great Expectations, between judging and training.

    report = check_judgments(df, params.validate, max_failure_share, judge_stats)  # {"success": bool, "checks": [...]}
    print(summarize(report))

Two suites run on an ephemeral GX context (no files, no network):
- on the judgments table: score in [0, 1] (NaN = failed, counted separately),
  ids not null, (prompt_id, rollout_id, criterion_id) unique, source in {judge,
  check}, failure share of the judge's rows (checks cannot fail) <= judge.max_failure_share;
- on one row per criterion key: its mean score within [criterion_mean_min,
  criterion_mean_max], and the share of judged keys whose score is the same on
  every rollout (a degenerate judge) <= validate.max_constant_share;
- on the judge's agreement with the programmatic checks (agreement/overall of the
  judge stage's metrics, focal/judging/agreement.py): >= validate.min_judge_agreement, and
  measured at all when that minimum is above 0.
Each failed check names the column, the expectation and the offending rows.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

KEY_COLUMNS = ["prompt_id", "rollout_id", "criterion_id"]


class ChecksFailed(ValueError):
    """The judgments failed their data checks; the message says where the report is."""


def per_key(df: pd.DataFrame, min_rows: int) -> pd.DataFrame:
    """One row per criterion key: n judged, mean score, and whether a judged key is constant."""
    rows = []
    for key, g in df.groupby("key", sort=True):
        scores = g.score.dropna()
        judged = (g.source == "judge").all()
        rows.append({"key": key, "n": len(scores), "mean": float(scores.mean()) if len(scores) else np.nan,
                     "constant": float(judged and len(scores) >= min_rows and scores.nunique() == 1)})
    return pd.DataFrame(rows, columns=["key", "n", "mean", "constant"])


def _suite_results(context, name: str, df: pd.DataFrame, expectations: list) -> list:
    import great_expectations as gx

    batch = (context.data_sources.add_pandas(name=f"{name}_source").add_dataframe_asset(name=name)
             .add_batch_definition_whole_dataframe(name=f"{name}_all"))
    suite = context.suites.add(gx.ExpectationSuite(name=f"{name}_suite"))
    for e in expectations:
        suite.add_expectation(e)
    vd = context.validation_definitions.add(gx.ValidationDefinition(name=f"{name}_check", data=batch, suite=suite))
    return vd.run(batch_parameters={"dataframe": df}, result_format="COMPLETE").results


def _describe(result, df: pd.DataFrame, table: str, id_columns: list[str]) -> dict:
    cfg = result.expectation_config
    kwargs = {k: v for k, v in dict(cfg.kwargs).items() if k != "batch_id"}
    out = {"table": table, "expectation": cfg.type, "kwargs": kwargs, "success": bool(result.success)}
    res = result.result or {}
    if "observed_value" in res:
        value = res["observed_value"]
        out["observed"] = float(value) if isinstance(value, (int, float, np.number)) else str(value)
    idx = res.get("unexpected_index_list") or []
    if idx and not result.success:
        out["unexpected_count"] = int(res.get("unexpected_count", len(idx)))
        shown = [int(i) for i in idx[:20]]
        out["rows"] = [{c: (df.loc[i, c].item() if hasattr(df.loc[i, c], "item") else df.loc[i, c])
                        for c in id_columns + [kwargs.get("column")] if c and c in df.columns}
                       | {"row": i} for i in shown]
    if result.exception_info and result.exception_info.get("raised_exception"):
        out["success"] = False
        out["error"] = str(result.exception_info.get("exception_message"))
    return out


def check_judgments(df: pd.DataFrame, cfg, max_failure_share: float, judge_stats: dict | None = None) -> dict:
    """Run the suites; returns {"success", "rows", "failure_share", "judge_agreement", "checks": [...]}.

    failure_share is over the judge's rows only (checks cannot fail); max_failure_share is
    judge.max_failure_share, the one budget the judge, validate and evaluate stages share.
    judge_stats is the judge stage's metrics (agreement/overall, agreement/n); None = not measured."""
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    missing = [c for c in KEY_COLUMNS + ["key", "score", "source"] if c not in df.columns]
    if missing:
        raise ValueError(f"judgments table has no column {missing[0]!r}; it needs {KEY_COLUMNS + ['key', 'score', 'source']}")
    judged = (df.source == "judge").to_numpy()  # checks cannot fail: only judge rows count toward the failure share
    failed = np.where(judged, df.score.isna().to_numpy(float), np.nan)
    table = df.reset_index(drop=True).assign(failed=failed)
    keys = per_key(table, cfg.min_rows_for_constant)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    main = [gxe.ExpectColumnValuesToBeBetween(column="score", min_value=0.0, max_value=1.0),
            *[gxe.ExpectColumnValuesToNotBeNull(column=c) for c in KEY_COLUMNS],
            gxe.ExpectCompoundColumnsToBeUnique(column_list=KEY_COLUMNS),
            gxe.ExpectColumnValuesToBeInSet(column="source", value_set=["judge", "check"]),
            gxe.ExpectColumnMeanToBeBetween(column="failed", min_value=0.0, max_value=max_failure_share)]
    per_criterion = [gxe.ExpectColumnValuesToBeBetween(column="mean", min_value=cfg.criterion_mean_min,
                                                       max_value=cfg.criterion_mean_max),
                     gxe.ExpectColumnMeanToBeBetween(column="constant", min_value=0.0, max_value=cfg.max_constant_share)]
    stats = judge_stats or {}
    agreement = pd.DataFrame({"scope": ["overall"], "n": [stats.get("agreement/n") or 0],
                              "agreement": [np.nan if stats.get("agreement/overall") is None
                                            else float(stats["agreement/overall"])]})
    with_checks = [gxe.ExpectColumnValuesToBeBetween(column="agreement", min_value=cfg.min_judge_agreement, max_value=1.0)]
    if cfg.min_judge_agreement > 0:  # a minimum asked for must be measured
        with_checks.append(gxe.ExpectColumnValuesToNotBeNull(column="agreement"))
    checks = [_describe(r, table, "judgments", KEY_COLUMNS) for r in _suite_results(context, "judgments", table, main)]
    if len(keys):
        checks += [_describe(r, keys, "criteria", ["key"]) for r in _suite_results(context, "criteria", keys, per_criterion)]
    checks += [_describe(r, agreement, "judge", ["scope", "n"])
               for r in _suite_results(context, "judge", agreement, with_checks)]
    order = {"judgments": 0, "criteria": 1, "judge": 2}
    checks.sort(key=lambda c: (c["success"], order[c["table"]], c["expectation"]))
    return {"success": all(c["success"] for c in checks), "rows": len(table),
            "failure_share": float(np.nanmean(table.failed)) if judged.any() else 0.0, "judge_rows": int(judged.sum()),
            "constant_keys": keys.loc[keys.constant == 1, "key"].tolist(),
            "judge_agreement": {"agreement": stats.get("agreement/overall"), "kappa": stats.get("agreement/kappa"),
                                "n": int(agreement.n[0]), "min": cfg.min_judge_agreement},
            "checks": checks}


def summarize(report: dict) -> str:
    """A readable console summary: one line per failed check with its rows."""
    lines = [f"validate: {'PASSED' if report['success'] else 'FAILED'}: {len(report['checks'])} checks on "
             f"{report['rows']} judgments (failure share {report['failure_share']:.1%} of {report['judge_rows']} judge calls)"]
    a = report.get("judge_agreement") or {}
    if a.get("n"):
        lines.append(f"  judge agreement with the checks: {a['agreement']} (kappa {a['kappa']}) on {a['n']} sampled pairs"
                     f"{'' if a['min'] else ' (report only: validate.min_judge_agreement is 0)'}")
    if report["constant_keys"]:
        lines.append(f"  note: the judge gave the same score on every rollout for: {', '.join(report['constant_keys'])}")
    for c in report["checks"]:
        if c["success"]:
            continue
        col = c["kwargs"].get("column") or c["kwargs"].get("column_list")
        what = f"  FAILED {c['table']}.{col}: {c['expectation']} {({k: v for k, v in c['kwargs'].items() if k not in ('column', 'column_list')})}"
        if "observed" in c:
            what += f", observed {c['observed']}"
        if "rows" in c:
            what += f"; {c['unexpected_count']} offending rows, e.g. {c['rows'][:3]}"
        if "error" in c:
            what += f"; error: {c['error']}"
        lines.append(what)
    return "\n".join(lines)
