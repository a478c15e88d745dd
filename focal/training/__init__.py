"""Training policies: the GRPO trainer around TRL (trainer, grpo), Rubric-ARM's alternating training of a
rubric generator and a judge (rubricarm) and preference pairs (pairs).

Empty on purpose: `import focal.training` imports nothing else (docs/architecture.md)."""
