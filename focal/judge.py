"""The judge: one judgment per (rollout, criterion) through an OpenAI-compatible API.

    with judge_endpoint(params) as endpoint:        # focal/endpoints.py: where, and who answers
        judge = Judge(params.judge, endpoint, template=rubric_set.judge_template, cache=Cache(path))
    judgments = judge.run([Request(item, criterion, response, rollout_id), ...])

- The prompt is a template (the rubric set's, or focal/judge_template.md) with
  <<conversation>>, <<response>>, <<rubric_item>>, <<answer_format>> and the fence
  markers, filled in one pass (text inside a filled value is never re-read as a
  marker). The response sits between fence lines derived from its own hash, so it
  cannot close its fence, and the instructions and the JSON schema come from us.
- Answers are JSON `{explanation, criteria_met}` (binary) or `{explanation, score}`
  (likert), requested as a JSON schema when `judge.structured` and validated
  strictly either way. A pitfall's judgment says whether the bad behaviour is
  present; the satisfaction is projected by focal.rubric.Criterion.satisfaction.
- Bounded everything (focal/api.py): `judge.concurrency` requests in flight,
  `judge.timeout_s` as a deadline on each whole request, `judge.max_retries`
  retries with jittered exponential backoff on timeouts, dropped connections, 429
  and 5xx (Retry-After honoured), `judge.parse_retries` on invalid answers,
  `judge.rpm` / `judge.tpm` client-side rate limits. A judgment that still fails
  is NaN with its (scrubbed) reason, never 0. The answer text is scrubbed too
  (focal.api.scrub) before it is parsed, stored in `raw` or cached. `judge.base_url` may list replicas
  (comma-separated): requests go to the one with the fewest in flight; one that
  refuses connections or answers 401/403/404 is skipped, and the run stops
  (EndpointDown) when none is left.
- `judge.mode: per_response` asks one call per response for every LLM-judged
  criterion at once (a JSON object keyed by criterion id, its own cache key);
  per_criterion (the default) is one call per (rollout, criterion).
- Tokens come from the usage the server reports; `JudgeStats.metrics()` gives
  judge/prompt_tokens, judge/completion_tokens, judge/tokens and judge/cost_usd
  (judge.price_*_per_mtok).
- Criteria with a programmatic check are decided locally, with no call.
- A response longer than `judge.max_response_chars` is never sent: its LLM-judged
  criteria fail (NaN) with reason `too_long`, counted like any failure.
- A persistent SQLite cache keyed by a hash of (the judge's identity: its weights'
  fingerprint or what the remote endpoint reports; every decoding setting; the
  template text; conversation, response, criterion): every success is committed at
  once, so a rerun or a restart after a crash makes no repeated calls, and another
  judge, temperature or template never reuses an answer. Judges in several processes
  may share one cache: a judge claims a key before calling for it, and another that
  needs the same key waits for that answer instead of paying for it again
  (focal/cache.py's claims).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import math
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from focal.api import EndpointDown, Limiter, Pool, estimate_tokens, failure_kind, scrub, with_retries
from focal.cache import Cache, content_key
from focal.checks import run_check
from focal.endpoints import Endpoint
from focal.rubric import MARKER, Criterion, Item

DEFAULT_TEMPLATE = (Path(__file__).parent / "judge_template.md").read_text(encoding="utf-8")
EXPLANATION_CHARS = 200  # keeps answers inside judge.max_tokens when the schema is enforced
CLAIM_POLL_S = 0.2  # how often a judge waiting for another judge's answer to the same key looks again
_FENCED_JSON = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)


class AnswerError(ValueError):
    """The judge's answer is not valid JSON of the expected schema."""


# ---- prompt, schema, parsing --------------------------------------------------------

def fence_tag(response: str) -> str:
    """A fence name the response cannot contain (derived from the response's own hash)."""
    return "RESPONSE-" + hashlib.sha256(response.encode()).hexdigest()[:16].upper()


def answer_format(c: Criterion) -> str:
    if c.scale.kind == "binary":
        what = ("true if the response shows this undesirable behaviour, false if it does not" if c.pitfall
                else "true if the response meets the rubric item, false if it does not")
        return ('Return a JSON object {"explanation": "<one or two sentences>", "criteria_met": <true or false>}, '
                f"where criteria_met is {what}.")
    lo, hi = int(c.scale.min), int(c.scale.max)
    what = "how strongly the response shows this undesirable behaviour" if c.pitfall else "how well the response does on the rubric item"
    return ('Return a JSON object {"explanation": "<one or two sentences>", "score": <integer>}, '
            f"where score, from {lo} to {hi}, is {what}.")


def rubric_item_text(c: Criterion) -> str:
    note = " (This item describes an undesirable behaviour: say whether the response shows it.)" if c.pitfall else ""
    return f"{c.text}{note}"


def render_prompt(template: str, item: Item, c: Criterion, response: str) -> str:
    """Fill the template in one pass; an unknown marker is an error naming it."""
    return _fill(template, item, response, rubric_item_text(c), answer_format(c))


def _fill(template: str, item: Item, response: str, rubric_item: str, answer_format_text: str) -> str:
    tag = fence_tag(response)
    conversation = "\n\n".join(f"{m['role']}: {m['content']}" for m in item.chat())
    values = {"conversation": conversation, "response": response, "rubric_item": rubric_item,
              "answer_format": answer_format_text, "fence_open": f"<{tag}>", "fence_close": f"</{tag}>"}

    def fill(m):
        if m.group(1) not in values:
            raise ValueError(f"judge template has an unknown marker <<{m.group(1)}>>; known: {sorted(values)}")
        return values[m.group(1)]

    return MARKER.sub(fill, template)


def answer_schema(c: Criterion) -> dict:
    """The JSON schema of the answer (sent as response_format when judge.structured)."""
    explanation = {"type": "string", "maxLength": EXPLANATION_CHARS}
    if c.scale.kind == "binary":
        props = {"explanation": explanation, "criteria_met": {"type": "boolean"}}
    else:
        props = {"explanation": explanation,
                 "score": {"type": "integer", "minimum": int(c.scale.min), "maximum": int(c.scale.max)}}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def parse_answer(text: str, c: Criterion):
    """The judged value (bool, or a number in the scale) from the answer text; AnswerError otherwise."""
    return _value(_json_object(text), c)


def _json_object(text: str) -> dict:
    """The JSON object of an answer (a ```json fence allowed); AnswerError otherwise."""
    text = (text or "").strip()
    m = _FENCED_JSON.match(text)
    if m:
        text = m.group(1)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        raise AnswerError(f"not JSON: {text[:80]!r}") from None
    if not isinstance(obj, dict):
        raise AnswerError(f"not a JSON object: {text[:80]!r}")
    return obj


def _value(obj, c: Criterion):
    """The judged value in one answer object: criteria_met (binary) or score (in the scale); AnswerError otherwise."""
    if not isinstance(obj, dict):
        raise AnswerError(f"not a JSON object: {str(obj)[:80]!r}")
    if not isinstance(obj.get("explanation", ""), str):
        raise AnswerError("explanation is not a string")
    if c.scale.kind == "binary":
        value = obj.get("criteria_met")
        if not isinstance(value, bool):
            raise AnswerError(f"criteria_met must be true or false, got {value!r}")
        return value
    value = obj.get("score")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not c.scale.min <= value <= c.scale.max:
        raise AnswerError(f"score must be a number from {c.scale.min:g} to {c.scale.max:g}, got {value!r}")
    return value


def cache_key(identity: str, cfg, template: str, item: Item, c: Criterion, response: str, repeat: int = 0) -> str:
    """Everything that can change an answer: who judges (the endpoint's identity), how (every decoding
    setting), with which prompt (template text) and on what (conversation, response, criterion). `repeat` > 0
    asks the same request afresh (its own key; 0 adds nothing, so existing keys stay as they were)."""
    return content_key("judge", identity, decoding(cfg), template, item.chat(), response, c.text, c.pitfall,
                       c.scale.kind, c.scale.min, c.scale.max, *((("repeat", repeat),) if repeat > 0 else ()))


def decoding(cfg) -> dict:
    """The judge's decoding settings that can change an answer."""
    return {"temperature": cfg.temperature, "max_tokens": cfg.max_tokens, "structured": cfg.structured,
            "seed": getattr(cfg, "seed", None)}


def reward_identity(params, template: str) -> list:
    """Everything about judging that can change a reward: who answers (the endpoint's identity), its decoding,
    the mode (one call per criterion or per response) and the prompt template. For run keys and protocols."""
    from focal.endpoints import judge_identity

    return [judge_identity(params), decoding(params.judge), params.judge.mode, template]


# ---- judge.mode per_response: one call for every LLM-judged criterion of a response ----

def rubric_list_text(criteria) -> str:
    """The <<rubric_item>> of a per-response prompt: every criterion with its id and what to answer."""
    lines = ["Judge each rubric item below on its own; each is named by its id."]
    for c in criteria:
        kind = ("true or false" if c.scale.kind == "binary"
                else f"a score from {int(c.scale.min)} to {int(c.scale.max)}")
        lines.append(f"- {c.id} ({kind}): {rubric_item_text(c)}")
    return "\n".join(lines)


def answers_format(criteria) -> str:
    """The <<answer_format>> of a per-response prompt."""
    ids = ", ".join(c.id for c in criteria)
    return ("Return one JSON object with one property per rubric item, named by its id (" + ids + "). For a true "
            'or false item the value is {"explanation": "<one sentence>", "criteria_met": <true or false>}, where '
            "criteria_met is true if the response meets the item (for an item that describes an undesirable "
            'behaviour: true if the response shows it). For a scored item it is {"explanation": "<one sentence>", '
            '"score": <integer>}, in the item\'s range (for an undesirable behaviour: how strongly the response '
            "shows it).")


def render_response_prompt(template: str, item: Item, criteria, response: str) -> str:
    """The template filled with every criterion at once (judge.mode per_response)."""
    return _fill(template, item, response, rubric_list_text(criteria), answers_format(criteria))


def answers_schema(criteria) -> dict:
    """One property per criterion id, each that criterion's answer_schema."""
    props = {c.id: answer_schema(c) for c in criteria}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def parse_answers(text: str, criteria) -> tuple[dict, dict, dict]:
    """({id: value}, {id: its answer object as JSON}, {id: error}) of a per-response answer; AnswerError when
    the answer is not a JSON object at all. A missing or invalid property is an error of that criterion only."""
    obj = _json_object(text)
    values, raws, errors = {}, {}, {}
    for c in criteria:
        try:
            values[c.id] = _value(obj.get(c.id), c)
            raws[c.id] = json.dumps(obj[c.id])
        except AnswerError as e:
            errors[c.id] = str(e)
    return values, raws, errors


def response_cache_key(identity: str, cfg, template: str, item: Item, criteria, response: str,
                       repeat: int = 0) -> str:
    """cache_key's inputs for a per-response call: the mode, and every criterion judged in it (in order)."""
    return content_key("judge", identity, decoding(cfg), template, "per_response", item.chat(), response,
                       [(c.id, c.text, c.pitfall, c.scale.kind, c.scale.min, c.scale.max) for c in criteria],
                       *((("repeat", repeat),) if repeat > 0 else ()))


def response_groups(requests) -> list[list[int]]:
    """Indices of the LLM-judged requests, grouped by (rollout, prompt, response, repeat, probe or not); a
    criterion id asked twice for the same response (a restated probe) opens another group. Probes (a criterion
    the rubric item does not have as asked: a check's criterion without its check, a restated item) never share
    a call with the item's own criteria, so a trained verdict's call, and its cache key, do not depend on which
    probes were sampled."""
    groups, by = [], {}
    for i, r in enumerate(requests):
        if r.criterion.check is not None:
            continue
        probe = r.criterion not in r.item.criteria
        open_groups = by.setdefault((r.rollout_id, r.item.id, r.response, r.repeat, probe), [])
        g = next((g for g in open_groups if all(requests[j].criterion.id != r.criterion.id for j in g)), None)
        if g is None:
            g = []
            open_groups.append(g)
            groups.append(g)
        g.append(i)
    return groups


# ---- the judge ----------------------------------------------------------------------

@dataclass
class Request:
    """One (rollout, criterion) to judge."""

    item: Item
    criterion: Criterion
    response: str
    rollout_id: str
    repeat: int = 0  # > 0: the same request asked again, not answered from the first one's cache entry


@dataclass
class Judgment:
    """One row of data/judgments.parquet."""

    prompt_id: str
    rollout_id: str
    criterion_id: str
    key: str
    category: str
    weight: float
    pitfall: bool
    source: str  # "judge" | "check"
    raw: str  # the judge's answer text, or the check's verdict
    score: float  # satisfaction in [0, 1]; NaN when the judgment failed
    reason: str  # "" when it succeeded, else why it failed
    cached: bool
    latency_s: float


def _row_ids(req: Request) -> dict:
    c = req.criterion
    return dict(prompt_id=req.item.id, rollout_id=req.rollout_id, criterion_id=c.id, key=c.key,
                category=c.category, weight=c.weight, pitfall=c.pitfall)


def check_judgment(req: Request) -> Judgment:
    """Decide a criterion with a programmatic check, locally (no call)."""
    c = req.criterion
    met = run_check(c.check.name, c.check.params, req.response)
    return Judgment(**_row_ids(req), source="check", raw=json.dumps(met), score=c.satisfaction(met), reason="",
                    cached=False, latency_s=0.0)


def decide_checks(requests: list[Request]) -> list[Judgment]:
    """Judgments of requests whose criteria all have a check (no judge needed)."""
    unchecked = [r.criterion.id for r in requests if r.criterion.check is None]
    if unchecked:
        raise ValueError(f"criterion {unchecked[0]!r} has no check: it needs a judge")
    return [check_judgment(r) for r in requests]


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
    """Judges requests against an OpenAI-compatible endpoint; see the module docstring."""

    def __init__(self, cfg, endpoint: Endpoint, template: str | None = None, cache: Cache | None = None):
        if not isinstance(endpoint, Endpoint):
            raise TypeError("Judge needs a focal.endpoints.Endpoint (base_url, model, identity); "
                            "get one from focal.endpoints.judge_endpoint(params)")
        self.cfg = cfg
        self.endpoint = endpoint
        self.template = template or DEFAULT_TEMPLATE
        self.cache = cache
        self.stats = JudgeStats(price_prompt_per_mtok=cfg.price_prompt_per_mtok,
                                price_completion_per_mtok=cfg.price_completion_per_mtok)
        self.limiter = Limiter(cfg.rpm, cfg.tpm)  # one per judge, across runs
        self.sent: dict = {}  # base_url -> attempts sent there (every run of this judge)

    def request_kwargs(self, prompt: str, schema: dict, answers: int = 0) -> dict:
        """The arguments of one chat.completions.create call (benchmarks/judge.py sends exactly these);
        answers > 0: a per-response call (schema "judgments") for that many criteria, judge.max_tokens each."""
        kwargs = {"model": self.endpoint.model, "messages": [{"role": "user", "content": prompt}],
                  "temperature": self.cfg.temperature, "max_tokens": self.cfg.max_tokens * max(answers, 1)}
        if self.cfg.structured:
            kwargs["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "judgments" if answers else "judgment", "schema": schema, "strict": True}}
        return kwargs

    async def _ask(self, pool: Pool, prompt: str, schema: dict, slot, answers: int = 0) -> str:
        """One answer text (transient failures retried, bounded); raises what finally failed."""
        kwargs = self.request_kwargs(prompt, schema, answers)
        resp = await with_retries(lambda client: client.chat.completions.create(**kwargs), self.cfg, self.stats,
                                  slot=slot, pool=pool, limiter=self.limiter,
                                  tokens=estimate_tokens(prompt, kwargs["max_tokens"]))
        if not resp.choices:
            raise AnswerError("the server returned no choices")
        text = scrub(resp.choices[0].message.content or "", self.cfg.api_key_env)  # what is stored: raw, the cache
        if resp.choices[0].finish_reason == "length":
            try:
                _json_object(text)
            except AnswerError:
                raise AnswerError(f"cut off at max_tokens ({kwargs['max_tokens']}; raise judge.max_tokens): "
                                  f"{text[:80]!r}") from None
        return text

    def _key(self, r: Request) -> str:
        return cache_key(self.endpoint.identity, self.cfg, self.template, r.item, r.criterion, r.response, r.repeat)

    def _response_key(self, reqs: list[Request]) -> str:
        r = reqs[0]
        return response_cache_key(self.endpoint.identity, self.cfg, self.template, r.item,
                                  [q.criterion for q in reqs], r.response, r.repeat)

    def _units(self, requests: list[Request]) -> list[list[int]]:
        """What is decided together: [i] per request, or (per_response) one list per response's LLM-judged criteria."""
        if self.cfg.mode != "per_response":
            return [[i] for i in range(len(requests))]
        return [[i] for i, r in enumerate(requests) if r.criterion.check is not None] + response_groups(requests)

    def _too_long(self, response: str) -> str:
        """The failure reason of a response over judge.max_response_chars ('' when it may be sent)."""
        cap = self.cfg.max_response_chars
        if len(response) <= cap:
            return ""
        return (f"too_long: the response has {len(response)} characters > judge.max_response_chars {cap}; it was "
                "not sent (raise judge.max_response_chars if the judge's context holds it)")

    def _refuse(self, reqs: list[Request], reason: str) -> list[Judgment]:
        """Judgments that failed before any call (reason 'kind: why')."""
        self.stats.failures[reason.split(":", 1)[0]] += len(reqs)
        return [Judgment(**_row_ids(r), source="judge", raw="", score=math.nan, reason=reason, cached=False,
                         latency_s=0.0) for r in reqs]

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
        if self.cfg.mode == "per_response":
            return sum(not self._too_long(requests[g[0]].response)
                       and not self._cached(self._response_key([requests[i] for i in g])) for g in response_groups(requests))
        return sum(r.criterion.check is None and not self._too_long(r.response) and not self._cached(self._key(r))
                   for r in requests)

    async def _judge_unit(self, pool: Pool, slot, reqs: list[Request]) -> list[Judgment]:
        if self.cfg.mode == "per_response" and reqs[0].criterion.check is None:
            return await self._judge_response(pool, slot, reqs)
        return [await self._judge(pool, slot, r) for r in reqs]

    async def _judge_response(self, pool: Pool, slot, reqs: list[Request]) -> list[Judgment]:
        """Every LLM-judged criterion of one response in one call (judge.mode per_response); a criterion whose
        part of the answer is missing or invalid after judge.parse_retries is NaN on its own."""
        criteria, first = [r.criterion for r in reqs], reqs[0]
        if too_long := self._too_long(first.response):
            return self._refuse(reqs, too_long)
        key = self._response_key(reqs)
        hit = await self._lookup(key)
        if hit is not None:
            self.stats.cache_hits += len(reqs)
            return [Judgment(**_row_ids(r), source="judge", raw=hit["raws"][r.criterion.id],
                             score=r.criterion.satisfaction(hit["values"][r.criterion.id]), reason="", cached=True,
                             latency_s=0.0) for r in reqs]
        try:
            prompt = render_response_prompt(self.template, first.item, criteria, first.response)
            t0 = time.perf_counter()
            values, raws, errors = {}, {}, {}
            for attempt in range(self.cfg.parse_retries + 1):
                try:
                    answer = await self._ask(pool, prompt, answers_schema(criteria), slot, answers=len(criteria))
                    values, raws, errors = parse_answers(answer, criteria)
                    errors = {k: f"invalid_answer: {scrub(v, self.cfg.api_key_env)}" for k, v in errors.items()}
                except AnswerError as e:
                    errors = {c.id: f"invalid_answer: {scrub(str(e), self.cfg.api_key_env)}" for c in criteria}
                    continue
                except EndpointDown:
                    raise
                except Exception as e:  # noqa: BLE001 - becomes an explicit missing value for each criterion
                    why = f"{failure_kind(e)[0]}: {scrub(str(e), self.cfg.api_key_env)[:160]}"
                    values, errors = {}, {c.id: why for c in criteria}
                    break
                if not errors:
                    if self.cache is not None:
                        self.cache.put(key, {"answer": answer, "values": values, "raws": raws})
                    break
            latency = time.perf_counter() - t0
            out = []
            for r in reqs:
                cid = r.criterion.id
                if cid in errors:
                    self.stats.failures[errors[cid].split(":", 1)[0]] += 1
                    out.append(Judgment(**_row_ids(r), source="judge", raw=raws.get(cid, ""), score=math.nan,
                                        reason=errors[cid], cached=False, latency_s=latency))
                else:
                    out.append(Judgment(**_row_ids(r), source="judge", raw=raws[cid],
                                        score=r.criterion.satisfaction(values[cid]), reason="", cached=False,
                                        latency_s=latency))
            return out
        finally:
            self._release(key)

    async def _judge(self, pool: Pool, slot: asyncio.Semaphore, req: Request) -> Judgment:
        c, item = req.criterion, req.item
        row = _row_ids(req)
        if c.check is not None:
            self.stats.checks += 1
            return check_judgment(req)
        if too_long := self._too_long(req.response):
            return self._refuse([req], too_long)[0]
        key = self._key(req)
        hit = await self._lookup(key)
        if hit is not None:
            self.stats.cache_hits += 1
            return Judgment(**row, source="judge", raw=hit["answer"], score=c.satisfaction(hit["value"]), reason="",
                            cached=True, latency_s=0.0)
        try:
            prompt = render_prompt(self.template, item, c, req.response)
            t0 = time.perf_counter()
            answer, reason = "", ""
            for attempt in range(self.cfg.parse_retries + 1):
                try:
                    answer = await self._ask(pool, prompt, answer_schema(c), slot)
                    value = parse_answer(answer, c)
                except AnswerError as e:
                    reason = f"invalid_answer: {scrub(str(e), self.cfg.api_key_env)}"
                    continue
                except EndpointDown:
                    raise  # the whole run stops: nothing more can be judged there
                except Exception as e:  # noqa: BLE001 - becomes an explicit missing value
                    reason = f"{failure_kind(e)[0]}: {scrub(str(e), self.cfg.api_key_env)[:160]}"
                    break
                if self.cache is not None:
                    self.cache.put(key, {"answer": answer, "value": value})
                return Judgment(**row, source="judge", raw=answer, score=c.satisfaction(value), reason="",
                                cached=False, latency_s=time.perf_counter() - t0)
            self.stats.failures[reason.split(":", 1)[0]] += 1
            return Judgment(**row, source="judge", raw=answer, score=math.nan, reason=reason, cached=False,
                            latency_s=time.perf_counter() - t0)
        finally:
            self._release(key)

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
            units = self._units(requests)
            tasks = [asyncio.ensure_future(self._judge_unit(pool, slot, [requests[i] for i in u])) for u in units]
            try:
                if progress:
                    from tqdm import tqdm

                    for fut in tqdm(asyncio.as_completed(tasks), total=len(tasks), desc="judge",
                                    unit="call" if self.cfg.mode == "per_response" else "judgment", mininterval=5):
                        await fut
                out = [None] * len(requests)
                for u, judged in zip(units, await asyncio.gather(*tasks)):
                    for i, j in zip(u, judged):
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


def judge_table(params, requests: list[Request], template: str | None):
    """Judge requests with the configured judge and cache: (judgments DataFrame, JudgeStats).

    The judge is judge.base_url, else the local vLLM server with the base model,
    started only if some request is neither a check nor cached."""
    import pandas as pd

    from focal.endpoints import NO_ENDPOINT, judge_endpoint, judge_identity

    cache = Cache(params.paths.judge_cache)
    try:
        probe = Endpoint(NO_ENDPOINT, params.judge.model, judge_identity(params))
        needed = Judge(params.judge, probe, template, cache).pending(requests) > 0
        with judge_endpoint(params, needed) as endpoint:
            judge = Judge(params.judge, endpoint, template, cache)
            judgments = judge.run(requests, progress=True)
    finally:
        cache.close()
    columns = [f.name for f in dataclasses.fields(Judgment)]
    return pd.DataFrame([j.__dict__ for j in judgments], columns=columns), judge.stats


def load_items(params: Params) -> dict:
    """prompt_id -> Item, from both prompt tables."""
    import pandas as pd

    from focal.rubric import item_from_row

    tables = (params.paths.train_prompts, params.paths.eval_prompts)
    for path in tables:
        if not Path(path).exists():
            raise ValueError(f"{path}: prompt table not found (paths.train_prompts, paths.eval_prompts); build them "
                             "with `focal run --stages prepare`")
    frames = [pd.read_parquet(p) for p in tables]
    return {row["prompt_id"]: item_from_row(row) for df in frames for _, row in df.iterrows()}


def check_rollout_rows(rollouts: pd.DataFrame, source: str) -> None:
    """ValueError naming the file and the line (a .jsonl read with its line numbers as the index and
    attrs['row_label'] = 'line') or the row, when a prompt_id, completion or rollout_id is not text."""
    by_line = rollouts.attrs.get("row_label") == "line"
    for col in ("prompt_id", "completion", "rollout_id"):
        if col not in rollouts:
            continue
        for pos, (idx, value) in enumerate(zip(rollouts.index, rollouts[col])):
            if not isinstance(value, str):
                missing = value is None or (isinstance(value, float) and math.isnan(value))
                where = f"{source}:{idx}" if by_line else f"{source}: row {pos + 1}"
                raise ValueError(f"{where}: `{col}` must be text, got {'null (or missing)' if missing else repr(value)};"
                                 f' write it as a JSON string ("{col}": "...")')


def requests_for(rollouts: pd.DataFrame, items: dict, source: str) -> list[Request]:
    """One request per (rollout, criterion), in table order (rows checked first: check_rollout_rows)."""
    check_rollout_rows(rollouts, source)
    missing = sorted(set(rollouts.prompt_id) - set(items))
    if missing:
        raise ValueError(f"{source}: prompt_id {missing[0]!r} (and {len(missing) - 1} more) is in no prompt table; "
                         "rerun the prepare stage or regenerate the rollouts")
    return [Request(items[r.prompt_id], c, r.completion, r.rollout_id)
            for r in rollouts.itertuples() for c in items[r.prompt_id].criteria]


class TooManyFailures(ValueError):
    """More judge calls failed than the configured budget allows."""


def failure_summary(df) -> tuple[int, int, dict]:
    """(failed judge rows, judge rows, {failure kind: count}) of a judgments table; checks cannot fail and are not counted."""
    judged = df[df.source == "judge"] if "source" in df else df
    failed = judged[judged.score.isna()]
    kinds = failed.reason.fillna("").str.split(":", n=1).str[0].value_counts().sort_index()
    return int(len(failed)), int(len(judged)), {str(k) or "unknown": int(v) for k, v in kinds.items()}


def failure_text(df) -> str:
    """What a command prints beside a score: '2 of 40 judge calls failed (timeout 1, server_error 1)'."""
    failed, total, kinds = failure_summary(df)
    return f"{failed} of {total} judge calls failed" + (f" ({_listing(kinds)})" if kinds else "")


def _listing(kinds: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in kinds.items())


def check_failure_budget(df, max_share: float, where: str) -> None:
    """Raise TooManyFailures (one line: share, budget, kinds and counts) when failed judge rows exceed max_share.
    Every command that prints or writes a score calls it first (the judge and evaluate stages, `focal judge`)."""
    failed, total, kinds = failure_summary(df)
    if total and failed / total > max_share:
        raise TooManyFailures(f"{where}: {failed} of {total} judge calls failed ({failed / total:.1%} > "
                              f"judge.max_failure_share {max_share:.0%}): {_listing(kinds)}; fix the judge endpoint "
                              "(judge.base_url) and rerun: what succeeded is cached")

