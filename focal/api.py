"""Calls to OpenAI-compatible endpoints: one client recipe and one bounded retry loop.

    client = make_client(base_url, api_key_env, timeout_s)
    resp = await with_retries(lambda: client.chat.completions.create(...), policy, stats)

Transient failures (timeouts, dropped connections, 429, 5xx) are retried up to
`policy.max_retries` times with exponential backoff (`backoff_s * 2**attempt`,
capped at `max_backoff_s`, at least the server's Retry-After); anything else is
raised at once. Callers turn what is finally raised into an explicit missing value.
"""

from __future__ import annotations

import asyncio
import os
import time

import openai

_RETRYABLE = {openai.APITimeoutError: "timeout", openai.APIConnectionError: "connection",
              openai.RateLimitError: "rate_limited", openai.InternalServerError: "server_error"}


def make_client(base_url: str, api_key_env: str, timeout_s: float) -> openai.AsyncOpenAI:
    """The async client; its own retries are off (with_retries does them, bounded)."""
    return openai.AsyncOpenAI(base_url=base_url, api_key=os.environ.get(api_key_env) or "EMPTY",
                              timeout=timeout_s, max_retries=0)


def failure_kind(e: Exception) -> tuple[str, bool]:
    """(reason, retry?) for an exception raised by the client."""
    for cls, kind in _RETRYABLE.items():  # APITimeoutError subclasses APIConnectionError: order matters
        if isinstance(e, cls):
            return kind, True
    if isinstance(e, openai.APIStatusError):
        return f"http_{e.status_code}", e.status_code >= 500
    return type(e).__name__, False


def backoff(policy, attempt: int, e: Exception | None = None) -> float:
    delay = policy.backoff_s * 2 ** attempt
    retry_after = getattr(getattr(e, "response", None), "headers", {}).get("retry-after") if e else None
    try:
        delay = max(delay, float(retry_after)) if retry_after else delay
    except ValueError:
        pass
    return min(delay, policy.max_backoff_s)


async def with_retries(call, policy, stats=None):
    """Await call() with bounded retries on transient failures; counts calls, retries, latency in stats."""
    for attempt in range(policy.max_retries + 1):
        t0 = time.perf_counter()
        if stats is not None:
            stats.calls += 1
        try:
            result = await call()
        except Exception as e:  # noqa: BLE001 - classified; re-raised unless transient
            if stats is not None:
                stats.latency_s += time.perf_counter() - t0
            if not failure_kind(e)[1] or attempt == policy.max_retries:
                raise
            if stats is not None:
                stats.retries += 1
            await asyncio.sleep(backoff(policy, attempt, e))
            continue
        if stats is not None:
            stats.latency_s += time.perf_counter() - t0
            usage = getattr(result, "usage", None)
            if usage:
                stats.prompt_tokens += usage.prompt_tokens or 0
                stats.completion_tokens += usage.completion_tokens or 0
        return result
    raise AssertionError("unreachable")
