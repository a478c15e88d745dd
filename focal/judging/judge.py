"""The judge client: judges requests through an OpenAI-compatible API, bounded, cached; `open_judge` is the one way
to a ready judge.

    spec = JudgeSpec.from_params(params, template)      # focal/judging/spec.py: built once per stage
    with open_judge(spec) as judge:                        # endpoint, identity, cache
        judgments = judge.run(requests_for(rollouts, items, "data/rollouts.parquet"))

What is asked and how an answer is read (prompts, schemas, parsing, Request and
Judgment) is focal/judging/prompts.py, each mode's request, parser and cache key
focal/judging/modes.py; judged tables, the failure budget and the judge stage's work
are focal/judging/tables.py.
- `open_judge` opens every judge from its spec (focal/judging/spec.py: the configured
  one, the audit's, an ensemble member's): its endpoint (judge.base_url, or the local
  vLLM server with the base model, started only when some request needs a call:
  focal/serving/endpoints.py), its identity fetched once, the cache at
  paths.judge_cache, the template.
- Bounded everything (focal/serving/client.py): `judge.concurrency` requests in flight,
  `judge.timeout_s` as a deadline on each whole request, `judge.max_retries`
  retries with jittered exponential backoff on timeouts, dropped connections, 429
  and 5xx (Retry-After honoured), `judge.rpm` / `judge.tpm` client-side rate limits.
  `Judge._ask` is the one loop of every mode: an answer that gives no verdict is asked
  again `judge.parse_retries` times. A judgment that still fails is NaN with its
  failure kind (its own column, `failure`) and (scrubbed) reason, never 0.
  The answer text is scrubbed too (focal.serving.client.scrub) before it is parsed, stored in
  `raw` or cached. A response longer than `judge.max_response_chars` is never sent:
  its LLM-judged criteria fail (NaN) with reason `too_long`, counted like any failure.
  `judge.base_url` may list replicas (comma-separated): requests go to the one with
  the fewest in flight; one that refuses connections or answers 401/403/404 is
  skipped, and the run stops (EndpointDown) when none is left.
- judge.mode: per_criterion (one call per (rollout, criterion)), per_response (one
  call per response), one_token (one call per (rollout, criterion), one token, the
  verdict from its top_logprobs; a reply is cached whatever it holds, so a rerun
  makes no call): each a class of focal/judging/modes.py's MODES, which owns the
  request, the reply's parser and its part of the cache key.
- Tokens come from the usage the server reports; `JudgeStats.metrics()` gives
  judge/prompt_tokens, judge/completion_tokens, judge/tokens and judge/cost_usd
  (judge.price_*_per_mtok).
- A persistent SQLite cache keyed by who judges and how (the mode's key):
  every success is committed at once, so a rerun or a restart after a crash makes no
  repeated calls, and another judge, mode, temperature or template never reuses an answer. Judges in several
  processes may share one cache: a judge claims a key before calling for it, and another that needs the same key
  waits for that answer instead of paying for it again (focal/core/cache.py's claims).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field

from focal.core.cache import Cache
from focal.serving.client import EndpointDown, Limiter, Pool, estimate_tokens, failure_kind, scrub, with_retries
from focal.serving.endpoints import NO_ENDPOINT, Endpoint
from focal.judging.modes import get_mode
from focal.judging.prompts import DEFAULT_TEMPLATE, AnswerError, Judgment, NoLogprobs, Request, check_judgment, failed, judged
from focal.judging.spec import JudgeSpec

CLAIM_POLL_S = 0.2  # how often a judge waiting for another judge's answer to the same key looks again


@dataclass
class JudgeStats:
    """Counts of one judge's work (docs/method.md's judge/* metrics)."""

    calls: int = 0
    cache_hits: int = 0
    checks: int = 0
    failures: Counter = field(default_factory=Counter)
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    rate_wait_s: float = 0.0  # time calls waited for the client-side rate limits (judge.rpm, judge.tpm)
    price_prompt_per_mtok: float = 0.0  # USD per million tokens (judge.price_*): judge/cost_usd
    price_completion_per_mtok: float = 0.0

    def cost_usd(self) -> float:
        """Estimated cost of the tokens counted so far, at the configured prices (0 for a local judge)."""
        return (self.prompt_tokens * self.price_prompt_per_mtok
                + self.completion_tokens * self.price_completion_per_mtok) / 1e6

    def metrics(self) -> dict:
        out = {"judge/calls": self.calls, "judge/cache_hits": self.cache_hits, "judge/checks": self.checks,
               "judge/failures": sum(self.failures.values()), "judge/retries": self.retries,
               "judge/prompt_tokens": self.prompt_tokens, "judge/completion_tokens": self.completion_tokens,
               "judge/tokens": self.prompt_tokens + self.completion_tokens,
               "judge/cost_usd": round(self.cost_usd(), 6), "judge/rate_wait_s": round(self.rate_wait_s, 3),
               "judge/latency_s": round(self.latency_s / self.calls, 4) if self.calls else 0.0}
        out.update({f"judge/failures/{k}": v for k, v in sorted(self.failures.items())})
        return out


class Judge:
    """Judges requests against an OpenAI-compatible endpoint; see the module docstring. What is asked and how a reply
    is read is the mode's (focal/judging/modes.py); the loop, bounds and cache are this class's."""

    def __init__(self, cfg, endpoint: Endpoint, template: str | None = None, cache: Cache | None = None):
        if not isinstance(endpoint, Endpoint):
            raise TypeError("Judge needs a focal.serving.endpoints.Endpoint (base_url, model, identity); "
                            "open a judge with focal.judging.judge.open_judge")
        self.cfg = cfg
        self.mode = get_mode(cfg.mode)
        self.endpoint = endpoint
        self.template = template or DEFAULT_TEMPLATE
        self.cache = cache
        self.stats = JudgeStats(price_prompt_per_mtok=cfg.price_prompt_per_mtok,
                                price_completion_per_mtok=cfg.price_completion_per_mtok)
        self.limiter = Limiter(cfg.rpm, cfg.tpm)  # one per judge, across runs
        self.sent: dict = {}  # base_url -> attempts sent there (every run of this judge)

    def variant(self, **changes) -> "Judge":
        """This judge (endpoint, template, cache) with other judge.* settings and counts of its own: for benchmarks
        that compare settings on one server (benchmarks/judge.py, benchmarks/judge_modes.py)."""
        return Judge(dataclasses.replace(self.cfg, **changes), self.endpoint, self.template, self.cache)

    def request(self, reqs: list[Request]) -> tuple[str, dict]:
        """(prompt, the arguments of its chat.completions.create call) of one unit in this judge's mode
        (benchmarks/judge.py sends exactly these)."""
        return self.mode.request(self.template, self.cfg, self.endpoint.model, reqs)

    async def _ask(self, pool: Pool, slot, prompt: str, kwargs: dict, parse):
        """The one loop of a unit: ask (transient failures retried by focal/serving/client.py, bounded), parse; an answer that
        gives no verdict is asked again, judge.parse_retries times. Returns (parse's result, "", "", raw) or, when it
        finally failed, (AnswerError.partial, failure kind, reason, the last reply); EndpointDown stops everything."""
        last = AnswerError("not asked")
        for _ in range(self.cfg.parse_retries + 1):
            try:
                resp = await with_retries(lambda client: client.chat.completions.create(**kwargs), self.cfg,
                                          self.stats, slot=slot, pool=pool, limiter=self.limiter,
                                          tokens=estimate_tokens(prompt, kwargs["max_tokens"]))
                if not resp.choices:
                    raise AnswerError("the server returned no choices")
                return parse(resp.choices[0]), "", "", ""
            except AnswerError as e:
                last = e
            except EndpointDown:
                raise  # the whole run stops: nothing more can be judged there
            except Exception as e:  # noqa: BLE001 - becomes an explicit missing value
                return None, failure_kind(e)[0], scrub(str(e), self.cfg.api_key_env)[:160], ""
        return last.partial, last.kind, scrub(str(last), self.cfg.api_key_env), last.raw

    def _key(self, reqs: list[Request]) -> str:
        return self.mode.key(self.endpoint.identity, self.cfg, self.template, reqs)

    def _too_long(self, response: str) -> str:
        """The failure reason of a response over judge.max_response_chars ('' when it may be sent)."""
        cap = self.cfg.max_response_chars
        if len(response) <= cap:
            return ""
        return (f"the response has {len(response)} characters > judge.max_response_chars {cap}; it was not sent "
                "(raise judge.max_response_chars if the judge's context holds it)")

    def _refuse(self, reqs: list[Request], kind: str, why: str) -> list[Judgment]:
        """Judgments that failed before any call (too_long, or a unit the mode cannot ask)."""
        self.stats.failures[kind] += len(reqs)
        return [failed(r, "", kind, why) for r in reqs]

    async def _lookup(self, key: str):
        """The cached answer for key; else None, once this judge holds the key's claim in the cache. While another
        judge on the same cache (another process) holds it, that judge is calling for this key: wait for its
        answer rather than pay for the call twice (until its claim ends: released, expired or its process gone)."""
        if self.cache is None:
            return None
        while (hit := self.cache.get(key)) is None and not self.cache.claim(key, self._claim_s()):
            await asyncio.sleep(CLAIM_POLL_S)
        if hit is None and (hit := self.cache.get(key)) is not None:  # answered between the get and the claim
            self.cache.release(key)
        return hit

    def _release(self, key: str) -> None:
        if self.cache is not None:
            self.cache.release(key)

    def _claim_s(self) -> float:
        """How long one call for a key can take, every retry included: a claim's life."""
        c = self.cfg
        return (c.timeout_s + c.max_backoff_s) * (c.max_retries + 1) * (c.parse_retries + 1) + 60.0

    def _cached(self, key: str) -> bool:
        return self.cache is not None and self.cache.get(key) is not None

    def pending(self, requests: list[Request]) -> int:
        """How many API calls the requests would need (not a check, not cached)."""
        units = [[requests[i] for i in u] for u in self.mode.units(requests)]
        return sum(u[0].criterion.check is None and not self._too_long(u[0].response) and not self._cached(self._key(u))
                   for u in units)

    async def _judge_unit(self, pool: Pool, slot, reqs: list[Request]) -> list[Judgment]:
        """The judgments of one unit (the requests one call decides): checks locally, else from the cache or a call."""
        if reqs[0].criterion.check is not None:
            self.stats.checks += len(reqs)
            return [check_judgment(r) for r in reqs]
        if too_long := self._too_long(reqs[0].response):
            return self._refuse(reqs, "too_long", too_long)
        if refused := self.mode.refusal(reqs):
            return self._refuse(reqs, *refused)
        key = self._key(reqs)
        hit = await self._lookup(key)
        if hit is not None:
            self.stats.cache_hits += len(reqs)
            return self._read(reqs, hit, cached=True)
        try:
            return await self._call(pool, slot, reqs, key)
        finally:
            self._release(key)

    async def _call(self, pool: Pool, slot, reqs: list[Request], key: str) -> list[Judgment]:
        """_judge_unit's call, once the key's claim is held: a reply is cached, then read."""
        prompt, kwargs = self.request(reqs)

        def parse(choice) -> dict:  # the cache entry of a reply
            try:
                return self.mode.parse(choice, reqs, kwargs, self.cfg)
            except NoLogprobs as e:  # it never will: stop at once rather than fail every judgment
                raise EndpointDown(f"{self.endpoint.param} {self.endpoint.base_url} {e}") from None

        t0 = time.perf_counter()
        entry, failure, reason, raw = await self._ask(pool, slot, prompt, kwargs, parse)
        latency = time.perf_counter() - t0
        if failure and entry is None:
            self.stats.failures[failure] += len(reqs)
            return [failed(r, self.mode.unanswered(raw), failure, reason, latency_s=latency) for r in reqs]
        if not failure and self.cache is not None:
            self.cache.put(key, entry)
        return self._read(reqs, entry, latency_s=latency)  # a partial answer (per_response): its valid part kept

    def _read(self, reqs: list[Request], entry: dict, cached: bool = False, latency_s: float = 0.0) -> list[Judgment]:
        """The judgments of an entry (fresh, cached, or what a failed per-response answer did give): a request the
        entry gives no verdict (one_token: no answer token among its top ones; per_response: its part invalid) is
        a failed judgment of its own."""
        out = []
        for r in reqs:
            try:
                raw, value = self.mode.read(entry, r, self.cfg)
            except AnswerError as e:
                self.stats.failures[e.kind] += 1
                out.append(failed(r, e.raw, e.kind, scrub(str(e), self.cfg.api_key_env), cached, latency_s))
                continue
            out.append(judged(r, raw, r.criterion.satisfaction(value), cached, latency_s))
        return out

    async def arun(self, requests: list[Request], progress: bool | None = None) -> list[Judgment]:
        """Judge all requests (order kept). EndpointDown (no replica can answer at all) stops every request.

        progress: a tqdm bar (at most a line per 5 s); None = when at least judge.progress_min_calls
        requests need an API call (the training reward's case)."""
        if progress is None:
            least = self.cfg.progress_min_calls
            progress = least > 0 and self.pending(requests) >= least
        slot = asyncio.Semaphore(self.cfg.concurrency)
        pool = Pool.connect(self.endpoint.base_urls, self.cfg.api_key_env, self.cfg.timeout_s, self.endpoint.param)
        async with pool:
            units = self.mode.units(requests)
            tasks = [asyncio.ensure_future(self._judge_unit(pool, slot, [requests[i] for i in u])) for u in units]
            try:
                if progress:
                    from tqdm import tqdm

                    for fut in tqdm(asyncio.as_completed(tasks), total=len(tasks), desc="judge",
                                    unit=self.mode.counts, mininterval=5):
                        await fut
                out = [None] * len(requests)
                for u, judgments in zip(units, await asyncio.gather(*tasks)):
                    for i, j in zip(u, judgments):
                        out[i] = j
                return out
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                for r in pool.replicas:
                    self.sent[r.base_url] = self.sent.get(r.base_url, 0) + r.sent

    def run(self, requests: list[Request], progress: bool | None = None) -> list[Judgment]:
        return asyncio.run(self.arun(requests, progress))


def OpenAIJudge(base_url: str, model: str, cache: str | None = None, template: str | None = None, **knobs) -> Judge:
    """A judge at any OpenAI-compatible endpoint, for use outside the pipeline (no params.yaml):

        judge = OpenAIJudge("http://127.0.0.1:8000/v1", "Qwen/Qwen3-8B", cache="judge.sqlite")
        FocalReward(rubric_set, aggregator="focal", judge=judge)

    `knobs` are any judge.* settings (focal/config.py's Judge: mode, concurrency, timeout_s, max_retries,
    api_key_env, temperature, ...), validated as in params.yaml. Its identity is fetched once now (GET /models,
    bounded by timeout_s), so cached verdicts are keyed by what actually answers. `cache`: a SQLite file that
    makes a rerun free (None: no cache). The pipeline's stages use open_judge, which this shares its parts with."""
    from focal.config import Judge as JudgeConfig

    if not base_url:
        raise ValueError("OpenAIJudge needs the endpoint's base_url, e.g. http://127.0.0.1:8000/v1")
    spec = JudgeSpec(JudgeConfig(base_url=base_url, model=model, **knobs), template, cache or "",
                     source="OpenAIJudge base_url")
    return Judge(spec.cfg, Endpoint(base_url, model, spec.identity(), spec.source), spec.template,
                 Cache(spec.cache_path) if spec.cache_path else None)


@contextmanager
def open_judge(spec: JudgeSpec, requests: list[Request] | None = None, identity: str | None = None):
    """The one way to a ready Judge of `spec` (focal/judging/spec.py: the configured judge, the audit's, an ensemble
    member's): its endpoint (spec.cfg.base_url, else the local vLLM server of spec.serve with spec.local_model,
    started only when needed), its identity (fetched once: GET /models of a remote judge; pass `identity` when it
    was fetched already, e.g. for a run key), its cache (spec.cache_path) and template. With `requests` of which
    none needs a call (all checks or cached), no server is started."""
    from focal.serving.endpoints import judge_endpoint

    identity = identity or spec.identity()
    store = Cache(spec.cache_path) if spec.cache_path else None
    try:
        judge = Judge(spec.cfg, Endpoint(NO_ENDPOINT, spec.cfg.model, identity, spec.source), spec.template, store)
        needed = requests is None or judge.pending(requests) > 0
        with judge_endpoint(spec.cfg, spec.serve, spec.local_model, identity, needed, spec.source) as endpoint:
            judge.endpoint = endpoint
            yield judge
    finally:
        if store is not None:
            store.close()
