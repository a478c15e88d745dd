"""Model endpoints: the OpenAI-compatible client with its retries, pool, breaker and rate limit (client), who
answers where (endpoints), the local vLLM server (server), model weights and their fingerprints (weights),
and rollout sampling (rollouts).

Empty on purpose: `import focal.serving` imports nothing else (docs/architecture.md)."""
