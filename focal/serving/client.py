"""Calls to OpenAI-compatible endpoints: one client recipe, one bounded retry loop, replicas, rate limits.

    pool = Pool.connect(["http://a:8000/v1", "http://b:8000/v1"], api_key_env, timeout_s, "judge.base_url")
    limiter = Limiter(rpm=500, tpm=200_000)                      # client-side, 0 = off
    async with pool:
        resp = await with_retries(lambda client: client.chat.completions.create(...), policy, stats,
                                  slot=sem, pool=pool, limiter=limiter, tokens=estimate_tokens(prompt, max_tokens))
    # one endpoint and its own client (rollouts, rubricgen): the same loop, a pool of one
    resp = await with_retries(lambda: client.chat.completions.create(...), policy, stats, slot=sem, breaker=breaker)

- A deadline, not a read timeout: every attempt is bounded as a whole by
  `policy.timeout_s` (a server trickling bytes cannot hold a call longer); so is
  `get_json`, the GET of an endpoint's model list.
- Transient failures (deadline, dropped connection, 429, 5xx) are retried up to
  `policy.max_retries` times with exponential backoff and full jitter
  (`uniform(0, backoff_s * 2**attempt)`, capped at `max_backoff_s`). A 429 or 503
  with `Retry-After` (seconds or an HTTP date) or `retry-after-ms` cools that
  replica: no call is sent to it until then (up to MAX_RETRY_AFTER_S, openai's own
  bound), so with one replica the wait is at least the server's. The concurrency
  slot is held only while a request is in flight, never while sleeping or waiting
  for the rate limiter.
- Replicas (`Pool`): several URLs serving the same model; each attempt goes to the
  live, not cooling replica with the fewest requests in flight (ties: fewest sent),
  and a retry avoids the replica that just failed when another one is live.
- Fail fast: each replica has its own `Breaker`. It trips when the replica answers
  401, 403 or 404, or refuses `max_retries + 1` connections in a row (with no
  success between: nothing listens there). A tripped replica is skipped; when every
  replica has tripped, every call raises `EndpointDown` (a ValueError: one line
  naming each URL and the param to fix).
- Client-side rate limits (`Limiter`): a token bucket for requests per minute and
  one for tokens per minute. A call reserves 1 request and its estimated tokens
  (prompt chars / 4 + max_tokens) before it is sent, waits if the bucket is in
  debt, and is corrected with the `usage` the server returns.
- Text that is stored (a judgment's `reason`, and the judge's answer itself: `raw`
  and the cache) goes through `scrub`: the API key, any other `*API_KEY` variable's
  value and anything shaped like a bearer token are removed, so a server that echoes
  the Authorization header, in an error or in a normal answer, cannot put a key on disk.
Callers turn what is finally raised (other than EndpointDown) into an explicit missing value.

Why this loop rather than openai's own retries or tenacity (issue 13): openai's
client retries (max_retries > 0) honour Retry-After with jitter, but they sleep
inside `create()`, so a sleeping retry would hold its concurrency slot; its timeout
is httpx's per-read timeout, so a trickling server holds a call indefinitely, and
wrapping its retries in one deadline would bound all attempts together; it has no
notion of a breaker shared by calls, of sending the retry to another replica, or of
charging a rate limiter per attempt. tenacity (not installed here) would replace the
`for` loop below but none of the rest: the slot, the replica choice, the breaker and
the limiter still have to run between attempts. Each of those behaviours is tested
(tests/test_judge.py, tests/test_api.py), so the loop stays, at about 40 lines, and its
Retry-After parsing follows openai's (retry-after-ms, then seconds, then a date).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import email.utils
import math
import os
import random
import re
import time
from dataclasses import dataclass

import httpx
import openai

_RETRYABLE = {openai.APITimeoutError: "timeout", openai.APIConnectionError: "connection",
              openai.RateLimitError: "rate_limited", openai.InternalServerError: "server_error"}
FATAL_STATUS = {401: "refused the API key (401)", 403: "forbids access (403)", 404: "has no such route or model (404)"}
COOLING_STATUS = (429, 503)  # statuses whose Retry-After cools the replica
MAX_RETRY_AFTER_S = 120.0  # a longer Retry-After is cut to this (openai's client does not retry past it)
CHARS_PER_TOKEN = 4  # the prompt-size estimate charged to the tokens-per-minute bucket before the call
_TOKENS = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{6,}|\b(sk|key|tok)-[A-Za-z0-9_-]{8,}")


class DeadlineExceeded(Exception):
    """One attempt took longer than its deadline (policy.timeout_s) as a whole."""


class EndpointDown(ValueError):
    """The endpoint cannot answer at all (refused connections, 401/403/404): the stage stops."""


class CallsFailed(ValueError):
    """A stage's calls still failed after their bounded retries. `transient`: every failure was of a transient kind
    (timeout, dropped connection, 429, 5xx), so running the stage again may succeed (focal.core.stage exits with
    EX_TEMPFAIL; the flows retry such a stage, flows/workspace.py)."""

    def __init__(self, message: str, transient: bool):
        super().__init__(message)
        self.transient = transient


def transient_kind(kind: str) -> bool:
    """Whether a failure kind (failure_kind's, a judgment's `failure` column) is transient: retrying may succeed."""
    return kind in ("timeout", "connection", "rate_limited", "server_error") or kind.startswith("http_5")


def make_client(base_url: str, api_key_env: str, timeout_s: float) -> openai.AsyncOpenAI:
    """The async client; its own retries are off (with_retries does them, bounded)."""
    return openai.AsyncOpenAI(base_url=base_url, api_key=os.environ.get(api_key_env) or "EMPTY",
                              timeout=timeout_s, max_retries=0)


def secrets(api_key_env: str | None = None) -> list[str]:
    """Values that must never be stored: the variable api_key_env names, and every `*API_KEY` variable
    (another endpoint's key); longest first, values under 4 characters ignored."""
    names = {n for n in os.environ if n.upper().endswith("API_KEY")} | ({api_key_env} if api_key_env else set())
    values = {os.environ.get(n) or "" for n in names}
    return sorted((v for v in values if len(v) >= 4 and v != "EMPTY"), key=len, reverse=True)


def scrub(text: str, api_key_env: str | None = None, shapes: bool = True) -> str:
    """text without any API key (secrets()) and, with shapes, anything shaped like a bearer token (a policy's
    completion is scrubbed with shapes=False: its text is training data, only a real key is removed)."""
    for key in secrets(api_key_env):
        text = text.replace(key, "***")
    return _TOKENS.sub(lambda m: (m.group(1) or "") + "***", text) if shapes else text


def run_sync(coro):
    """Run a coroutine to its end from sync code, also when this thread already runs an event loop (TRL's reward
    thread): then in a worker thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def get_json(url: str, api_key_env: str = "", timeout_s: float = 10.0):
    """GET url (with the API key of api_key_env as a bearer token) and parse its JSON, bounded as a whole by
    timeout_s: a server trickling bytes cannot hold it longer. Raises DeadlineExceeded, an httpx error (no
    connection, an HTTP error status) or ValueError (not JSON)."""
    key = os.environ.get(api_key_env) if api_key_env else None
    headers = {"Authorization": f"Bearer {key}"} if key else {}

    async def fetch():
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            resp = await client.get(url, headers=headers)
            resp.raise_for_status()
            return resp.json()

    async def bounded():
        try:
            return await asyncio.wait_for(fetch(), timeout_s)
        except asyncio.TimeoutError:
            raise DeadlineExceeded(f"no complete answer within {timeout_s:g} s") from None

    return run_sync(bounded())


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


def retry_after_s(headers, now: float | None = None) -> float | None:
    """Seconds the server asks to wait: `retry-after-ms`, else `Retry-After` in seconds or as an HTTP date;
    None when absent or unreadable. Never negative."""
    if not headers:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            continue
        return max(0.0, seconds) if math.isfinite(seconds) else MAX_RETRY_AFTER_S
    value = headers.get("retry-after")
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp() if value else None
    except (TypeError, ValueError, IndexError):
        return None
    return None if when is None else max(0.0, when - (time.time() if now is None else now))


def backoff(policy, attempt: int, rng=random) -> float:
    """Full jitter: uniform(0, backoff_s * 2**attempt), capped at max_backoff_s (Retry-After is the pool's cooling)."""
    return min(rng.uniform(0, policy.backoff_s * 2 ** attempt), policy.max_backoff_s)


def estimate_tokens(prompt: str, max_tokens: int) -> int:
    """What a call is charged against the tokens-per-minute bucket before the server reports its usage."""
    return math.ceil(len(prompt) / CHARS_PER_TOKEN) + max_tokens


# ---- the breaker, replicas --------------------------------------------------------------

class Breaker:
    """Shared by every call to one endpoint (one replica): once tripped, the replica is skipped."""

    def __init__(self, base_url: str, param: str):
        self.base_url, self.param, self.reason = base_url, param, None
        self.refusals = 0  # refused attempts in a row, endpoint-wide (a success resets it)

    def refused(self, limit: int) -> None:
        """Count a refused connection; `limit` in a row (no success between) trips the breaker."""
        self.refusals += 1
        if self.refusals >= limit:
            self.trip(f"refused the connection ({self.refusals} attempts in a row)")

    def ok(self) -> None:
        self.refusals = 0

    def trip(self, why: str) -> None:
        if self.reason is None:
            self.reason = f"{self.param} {self.base_url} {why}; check the server and {self.param}"

    def check(self) -> None:
        if self.reason is not None:
            raise EndpointDown(self.reason)


@dataclass
class Replica:
    """One URL of a pool: its client, its breaker, and what is in flight there."""

    base_url: str
    client: object
    breaker: Breaker | None
    outstanding: int = 0  # requests in flight now
    sent: int = 0  # attempts sent so far
    cool_until: float = 0.0  # no call before this time (time.monotonic): the server's Retry-After

    @property
    def alive(self) -> bool:
        return self.breaker is None or self.breaker.reason is None


class Pool:
    """Replicas of one model; each attempt goes to the live replica with the fewest requests in flight."""

    def __init__(self, replicas: list[Replica], param: str, clock=time.monotonic):
        if not replicas:
            raise ValueError(f"{param}: no endpoint to call")
        self.replicas, self.param, self.clock = replicas, param, clock

    @classmethod
    def connect(cls, base_urls, api_key_env: str, timeout_s: float, param: str) -> "Pool":
        return cls([Replica(u, make_client(u, api_key_env, timeout_s), Breaker(u, param)) for u in base_urls], param)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        for r in self.replicas:
            if hasattr(r.client, "close"):
                await r.client.close()

    def check(self) -> None:
        """EndpointDown when no replica is live (one replica: its breaker's own message)."""
        if any(r.alive for r in self.replicas):
            return
        if len(self.replicas) == 1:
            self.replicas[0].breaker.check()
        raise EndpointDown(f"every {self.param} replica is down: " + "; ".join(r.breaker.reason for r in self.replicas))

    def wait_s(self) -> float:
        """How long until some live replica may be called (0 if one may now)."""
        now = self.clock()  # no live replica: 0 (the next pick raises EndpointDown)
        return max(0.0, min((r.cool_until for r in self.replicas if r.alive), default=now) - now)

    def pick(self, avoid: Replica | None = None) -> Replica:
        """The live replica with the fewest in flight (then fewest sent), preferring ones not cooling and not `avoid`."""
        self.check()
        now = self.clock()
        live = [r for r in self.replicas if r.alive]
        ready = [r for r in live if r.cool_until <= now] or live
        fresh = [r for r in ready if r is not avoid] or ready
        return min(fresh, key=lambda r: (r.outstanding, r.sent))

    def cool(self, replica: Replica, seconds: float) -> None:
        replica.cool_until = max(replica.cool_until, self.clock() + min(seconds, MAX_RETRY_AFTER_S))


# ---- client-side rate limits -------------------------------------------------------------

class Bucket:
    """A token bucket for a per-minute limit: holds at most `per_minute`, refills at per_minute / 60 per second.

    `reserve` takes n at once and returns how long to wait before using them (the level
    may go below zero: later callers wait for what earlier ones took), so waiting callers
    are served in order. `refund` gives back (or, negative, charges) a correction."""

    def __init__(self, per_minute: float, now: float):
        self.capacity, self.rate, self.level, self.t = per_minute, per_minute / 60.0, float(per_minute), now

    def _refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.t) * self.rate)
        self.t = now

    def reserve(self, n: float, now: float) -> float:
        self._refill(now)
        self.level -= n
        return max(0.0, -self.level / self.rate)

    def refund(self, n: float, now: float) -> None:
        self._refill(now)
        self.level = min(self.capacity, self.level + n)


class Limiter:
    """Requests per minute and tokens per minute on the client side (0 = that limit is off)."""

    def __init__(self, rpm: float = 0, tpm: float = 0, clock=time.monotonic):
        now = clock()
        self.clock = clock
        self.requests = Bucket(rpm, now) if rpm > 0 else None
        self.tokens = Bucket(tpm, now) if tpm > 0 else None

    def reserve(self, tokens: int) -> float:
        """Charge one request and `tokens` (estimated); seconds to wait before sending it."""
        now = self.clock()
        waits = [b.reserve(n, now) for b, n in ((self.requests, 1), (self.tokens, tokens)) if b is not None]
        return max(waits, default=0.0)

    def correct(self, estimated: int, actual: int) -> None:
        """The server reported `actual` tokens for a call charged `estimated`."""
        if self.tokens is not None:
            self.tokens.refund(estimated - actual, self.clock())


# ---- the retry loop ----------------------------------------------------------------------

async def _attempt(call, timeout_s: float, slot, pool: Pool, avoid: Replica | None, stats):
    """One attempt on the replica picked once the slot is held, bounded as a whole by timeout_s:
    (replica, result, None) or (replica, None, the exception)."""
    async with (slot if slot is not None else contextlib.nullcontext()):
        replica = pool.pick(avoid)  # EndpointDown if every replica tripped while this call waited for the slot
        replica.outstanding += 1
        replica.sent += 1
        if stats is not None:
            stats.calls += 1
        try:
            return replica, await asyncio.wait_for(call(replica.client), timeout_s), None
        except asyncio.TimeoutError:
            return replica, None, DeadlineExceeded(f"no complete answer within {timeout_s:g} s")
        except Exception as e:  # noqa: BLE001 - classified by the caller
            return replica, None, e
        finally:
            replica.outstanding -= 1


async def with_retries(call, policy, stats=None, slot: asyncio.Semaphore | None = None, breaker: Breaker | None = None,
                       pool: Pool | None = None, limiter: Limiter | None = None, tokens: int = 0, sleep=asyncio.sleep):
    """Await a call with a deadline per attempt and bounded retries on transient failures (see the module docstring).

    With `pool`, call(client) gets the picked replica's client; without, call() is one endpoint guarded
    by `breaker` (optional). Counts calls, retries, latency, tokens and rate-limit waits in stats."""
    if pool is None:
        pool, fn = Pool([Replica(getattr(breaker, "base_url", ""), None, breaker)], "endpoint"), (lambda _client: call())
    else:
        fn = call
    replica = None
    for attempt in range(policy.max_retries + 1):
        pool.check()
        while (wait := pool.wait_s()) > 0:  # the server's Retry-After, outside the slot
            await sleep(wait)
        if limiter is not None:
            wait = limiter.reserve(tokens)
            if stats is not None:
                stats.rate_wait_s += wait
            if wait > 0:
                await sleep(wait)
        t0 = time.perf_counter()
        replica, result, e = await _attempt(fn, policy.timeout_s, slot, pool, replica, stats)
        if stats is not None:
            stats.latency_s += time.perf_counter() - t0
        if e is None:
            if replica.breaker is not None:
                replica.breaker.ok()
            usage = getattr(result, "usage", None)
            if usage:
                if stats is not None:
                    stats.prompt_tokens += usage.prompt_tokens or 0
                    stats.completion_tokens += usage.completion_tokens or 0
                if limiter is not None:
                    limiter.correct(tokens, (usage.prompt_tokens or 0) + (usage.completion_tokens or 0))
            return result
        status = getattr(e, "status_code", None) if isinstance(e, openai.APIStatusError) else None
        if replica.breaker is not None and status in FATAL_STATUS:
            replica.breaker.trip(FATAL_STATUS[status])
        if replica.breaker is not None and refused(e):
            replica.breaker.refused(policy.max_retries + 1)
        pool.check()  # every replica down: the run stops
        if status in COOLING_STATUS:
            wait = retry_after_s(getattr(e.response, "headers", None))
            if wait:
                pool.cool(replica, wait)
        moved = not replica.alive  # this replica just tripped; another one is live
        if not (failure_kind(e)[1] or moved) or attempt == policy.max_retries:
            raise e
        if stats is not None:
            stats.retries += 1
        if not moved:
            await sleep(backoff(policy, attempt))  # outside the slot
    raise AssertionError("unreachable")
