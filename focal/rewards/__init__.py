"""From judgments to rewards: the aggregators (aggregators: static, gdpo, pow3r, focal, focal_proj, ...),
the logged metrics (metrics), the TRL reward function (reward), the reward audit (audit) and the
simulator (simulate).

Empty on purpose: `import focal.rewards` imports nothing else (docs/architecture.md)."""
