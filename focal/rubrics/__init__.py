"""Rubrics as data: the rubric types (types), rubric sets and their loader (sets), imported formats
(formats), programmatic checks (checks), IFEval's checkers (ifeval) and rubric generation (generate).

Empty on purpose: `import focal.rubrics` imports nothing else (docs/architecture.md)."""
