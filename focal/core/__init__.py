"""The floor everything stands on: the verdict cache (cache), atomic writes (atomic), the owner watchdog of
spawned servers (watchdog) and the stage runner (stage). Imports nothing of focal but focal.config.

Empty on purpose: `import focal.core` imports nothing else (docs/architecture.md)."""
