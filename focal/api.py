"""Calls to OpenAI-compatible endpoints: one client recipe, one bounded retry loop, a circuit breaker.

    client = make_client(base_url, api_key_env, timeout_s)
    breaker = Breaker(base_url, "judge.base_url")
    resp = await with_retries(lambda: client.chat.completions.create(...), policy, stats, slot=sem, breaker=breaker)

- A deadline, not a read timeout: every attempt is bounded as a whole by
  `policy.timeout_s` (a server trickling bytes cannot hold a call longer).
- Transient failures (deadline, dropped connection, 429, 5xx) are retried up to
  `policy.max_retries` times with exponential backoff and full jitter
  (`uniform(0, backoff_s * 2**attempt)`, capped at `max_backoff_s`, never below the
  server's Retry-After). The concurrency slot is held only while a request is in
  flight, never while sleeping.
- Fail fast: the breaker trips, and every call through it raises `EndpointDown`
  (a ValueError: one line naming the URL and the param to fix), when the endpoint
  answers 401, 403 or 404, or refuses `max_retries + 1` connections in a row
  (endpoint-wide, with no success between: nothing listens there).
- Error text that is stored (a judgment's `reason`) goes through `scrub`: the API key
  and anything shaped like a bearer token are removed.
Callers turn what is finally raised (other than EndpointDown) into an explicit missing value.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import time

import httpx
import openai

_RETRYABLE = {openai.APITimeoutError: "timeout", openai.APIConnectionError: "connection",
              openai.RateLimitError: "rate_limited", openai.InternalServerError: "server_error"}
FATAL_STATUS = {401: "refused the API key (401)", 403: "forbids access (403)", 404: "has no such route or model (404)"}
_TOKENS = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{6,}|\b(sk|key|tok)-[A-Za-z0-9_-]{8,}")


class DeadlineExceeded(Exception):
    """One attempt took longer than its deadline (policy.timeout_s) as a whole."""


class EndpointDown(ValueError):
    """The endpoint cannot answer at all (refused connections, 401/403/404): the stage stops."""


def make_client(base_url: str, api_key_env: str, timeout_s: float) -> openai.AsyncOpenAI:
    """The async client; its own retries are off (with_retries does them, bounded)."""
    return openai.AsyncOpenAI(base_url=base_url, api_key=os.environ.get(api_key_env) or "EMPTY",
                              timeout=timeout_s, max_retries=0)


def scrub(text: str, api_key_env: str | None = None) -> str:
    """text without the API key (its value in api_key_env) or anything shaped like a bearer token."""
    key = os.environ.get(api_key_env) if api_key_env else None
    if key and len(key) >= 4:
        text = text.replace(key, "***")
    return _TOKENS.sub(lambda m: (m.group(1) or "") + "***", text)


def refused(e: Exception) -> bool:
    """The connection was refused (nothing listens there), as opposed to dropped or timed out."""
    cause = e
    while cause is not None:
        if isinstance(cause, (httpx.ConnectError, ConnectionRefusedError)):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def failure_kind(e: Exception) -> tuple[str, bool]:
    """(reason, retry?) for an exception raised by a call."""
    if isinstance(e, DeadlineExceeded):
        return "timeout", True
    for cls, kind in _RETRYABLE.items():  # APITimeoutError subclasses APIConnectionError: order matters
        if isinstance(e, cls):
            return kind, True
    if isinstance(e, openai.APIStatusError):
        return f"http_{e.status_code}", e.status_code >= 500
    return type(e).__name__, False


class Breaker:
    """Shared by every call to one endpoint: once tripped, each call raises EndpointDown at once."""

    def __init__(self, base_url: str, param: str):
        self.base_url, self.param, self.reason = base_url, param, None
        self.refusals = 0  # refused attempts in a row, endpoint-wide (a success resets it)

    def refused(self, limit: int) -> None:
        """Count a refused connection; `limit` in a row (no success between) trips the breaker."""
        self.refusals += 1
        if self.refusals >= limit:
            self.trip(f"refused the connection ({self.refusals} attempts in a row)")
            self.check()

    def ok(self) -> None:
        self.refusals = 0

    def trip(self, why: str) -> None:
        if self.reason is None:
            self.reason = f"{self.param} {self.base_url} {why}; check the server and {self.param}"

    def check(self) -> None:
        if self.reason is not None:
            raise EndpointDown(self.reason)


def backoff(policy, attempt: int, e: Exception | None = None, rng=random) -> float:
    """Full jitter: uniform(0, backoff_s * 2**attempt), capped at max_backoff_s, at least Retry-After."""
    delay = rng.uniform(0, policy.backoff_s * 2 ** attempt)
    retry_after = getattr(getattr(e, "response", None), "headers", {}).get("retry-after") if e else None
    try:
        delay = max(delay, float(retry_after)) if retry_after else delay
    except ValueError:
        pass
    return min(delay, policy.max_backoff_s)


async def _attempt(call, timeout_s: float, slot, breaker, stats):
    """One attempt, bounded as a whole by timeout_s, holding the concurrency slot only while in flight."""
    async def bounded():
        if breaker is not None:
            breaker.check()  # it may have tripped while this call waited for the slot
        if stats is not None:
            stats.calls += 1
        try:
            return await asyncio.wait_for(call(), timeout_s)
        except asyncio.TimeoutError:
            raise DeadlineExceeded(f"no complete answer within {timeout_s:g} s") from None

    if slot is None:
        return await bounded()
    async with slot:
        return await bounded()


async def with_retries(call, policy, stats=None, slot: asyncio.Semaphore | None = None, breaker: Breaker | None = None):
    """Await call() with a deadline per attempt and bounded retries on transient failures (see the module docstring).

    Counts calls, retries, latency and tokens in stats."""
    for attempt in range(policy.max_retries + 1):
        if breaker is not None:
            breaker.check()
        t0 = time.perf_counter()
        try:
            result = await _attempt(call, policy.timeout_s, slot, breaker, stats)
        except Exception as e:  # noqa: BLE001 - classified; re-raised unless transient
            if stats is not None:
                stats.latency_s += time.perf_counter() - t0
            if breaker is not None and isinstance(e, openai.APIStatusError) and e.status_code in FATAL_STATUS:
                breaker.trip(FATAL_STATUS[e.status_code])
                breaker.check()
            if breaker is not None and refused(e):
                breaker.refused(policy.max_retries + 1)
            last = attempt == policy.max_retries
            if not failure_kind(e)[1] or last:
                raise
            if stats is not None:
                stats.retries += 1
            await asyncio.sleep(backoff(policy, attempt, e))  # outside the slot
            continue
        if breaker is not None:
            breaker.ok()
        if stats is not None:
            stats.latency_s += time.perf_counter() - t0
            usage = getattr(result, "usage", None)
            if usage:
                stats.prompt_tokens += usage.prompt_tokens or 0
                stats.completion_tokens += usage.completion_tokens or 0
        return result
    raise AssertionError("unreachable")
