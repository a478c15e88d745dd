"""Benchmark evaluation: scoring policies on held-out prompts (evaluate), evaluation sets (sets), tests over
seeds (stats), plots (plots) and model promotion with GTO (promotion).

Empty on purpose: `import focal.evaluation` imports nothing else (docs/architecture.md)."""
