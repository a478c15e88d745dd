"""Judging responses against rubrics: judge prompts and reply parsers (prompts), the judge client and its
cache (judge), the judge stage's tables and failure budget (tables), agreement with checks (agreement),
judge ensembles (ensemble), the Great Expectations checks on judgments (validate), the default template.

Empty on purpose: `import focal.judging` imports nothing else (docs/architecture.md)."""
