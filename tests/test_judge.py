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
  is NaN with its (scrubbed) reason, never 0. `judge.base_url` may list replicas
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
- A persistent SQLite cache keyed by a hash of (the judge's identity: its weights'
  fingerprint or what the remote endpoint reports; every decoding setting; the
  template text; conversation, response, criterion): every success is committed at
  once, so a rerun or a restart after a crash makes no repeated calls, and another
  judge, temperature or template never reuses an answer.
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

from focal.aggregate import MET
from focal.api import EndpointDown, Limiter, Pool, estimate_tokens, failure_kind, scrub, with_retries
from focal.cache import Cache, content_key
from focal.checks import run_check
from focal.endpoints import Endpoint
from focal.rubric import MARKER, Criterion, Item

DEFAULT_TEMPLATE = (Path(__file__).parent / "judge_template.md").read_text(encoding="utf-8")
JSON_ONLY = "Reply with the JSON object only, no other text."
EXPLANATION_CHARS = 200  # keeps answers inside judge.max_tokens when the schema is enforced
_FENCED_JSON = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)


class AnswerError(ValueError):
    """The judge's answer gives no verdict: not valid JSON of the expected schema (kind invalid_answer), or, in
    judge.mode one_token, no answer token among the most likely first tokens (kind no_verdict). `raw` is the
    reply as stored; `partial` what a per-response answer did give (its valid part)."""

    def __init__(self, message: str, kind: str = "invalid_answer", raw: str = "", partial=None):
        super().__init__(message)
        self.kind, self.raw, self.partial = kind, raw, partial


# ---- prompt, schema, parsing --------------------------------------------------------

def fence_tag(response: str) -> str:
    """A fence name the response cannot contain (derived from the response's own hash)."""
    return "RESPONSE-" + hashlib.sha256(response.encode()).hexdigest()[:16].upper()


def answer_format(c: Criterion) -> str:
    if c.scale.kind == "binary":
        what = ("true if the response shows this undesirable behaviour, false if it does not" if c.pitfall
                else "true if the response meets the rubric item, false if it does not")
        return ('Return a JSON object {"explanation": "<one or two sentences>", "criteria_met": <true or false>}, '
                f"where criteria_met is {what}. {JSON_ONLY}")
    lo, hi = int(c.scale.min), int(c.scale.max)
    what = "how strongly the response shows this undesirable behaviour" if c.pitfall else "how well the response does on the rubric item"
    return ('Return a JSON object {"explanation": "<one or two sentences>", "score": <integer>}, '
            f"where score, from {lo} to {hi}, is {what}. {JSON_ONLY}")


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
    """The judge's decoding settings that can change an answer (one_token: the mode and how many top tokens are read;
    judge.verdict is applied to the stored probabilities, so it is not part of it)."""
    if getattr(cfg, "mode", "") == "one_token":
        return {"mode": "one_token", "temperature": cfg.temperature, "top_logprobs": cfg.top_logprobs,
                "seed": getattr(cfg, "seed", None)}
    return {"temperature": cfg.temperature, "max_tokens": cfg.max_tokens, "structured": cfg.structured,
            "seed": getattr(cfg, "seed", None)}


def reward_identity(params, template: str) -> list:
    """Everything about judging that can change a reward: who answers (the endpoint's identity), its decoding,
    the mode (one call per criterion or per response) and the prompt template. For run keys and protocols."""
    from focal.endpoints import judge_identity

    j = params.judge
    return [judge_identity(params), decoding(j), j.mode, template] + ([j.verdict] if j.mode == "one_token" else [])


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
            "shows it). " + JSON_ONLY)


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


# ---- judge.mode one_token: the verdict read from the next-token probabilities --------

PUNCTUATION = " \t\n.,:;!?\"'`*()[]{}<>"


def verdict_format(c: Criterion) -> str:
    """The <<answer_format>> of judge.mode one_token: the answer is one token, yes / no or a digit."""
    if c.scale.kind == "binary":
        what = "the response shows this undesirable behaviour" if c.pitfall else "the response meets the rubric item"
        return f"Answer with one word: yes if {what}, no if it does not. Reply with that one word only."
    lo, hi = int(c.scale.min), int(c.scale.max)
    what = "how strongly the response shows this undesirable behaviour" if c.pitfall else "how well the response does on the rubric item"
    return f"Answer with one digit from {lo} to {hi}: {what}. Reply with that one digit only."


def verdict_prompt(template: str, item: Item, c: Criterion, response: str) -> str:
    """The template filled for judge.mode one_token: the same question, answered in one token. The template puts the
    conversation and the response before the rubric item (rubric.check_template), so every criterion asked of one
    response shares the prompt up to its rubric item: a server with prefix caching computes that part once."""
    return _fill(template, item, response, rubric_item_text(c), verdict_format(c))


def verdict_tokens(c: Criterion) -> tuple[str, ...]:
    """The answer tokens of a one-token verdict: ("yes", "no"), or every digit of a likert scale within 0-9;
    () when the scale does not fit in one digit."""
    if c.scale.kind == "binary":
        return ("yes", "no")
    lo, hi = c.scale.min, c.scale.max
    if lo == int(lo) and hi == int(hi) and 0 <= lo and hi <= 9:
        return tuple(str(d) for d in range(int(lo), int(hi) + 1))
    return ()


def first_token_logprobs(choice) -> list[tuple[str, float]]:
    """[(token, logprob)] of the most likely first tokens of a reply (`logprobs.content[0].top_logprobs`, with the
    token the server chose); AnswerError when the server returned no logprobs."""
    content = getattr(getattr(choice, "logprobs", None), "content", None)
    if not content:
        raise AnswerError("the server returned no logprobs; judge.mode one_token needs an endpoint that serves "
                          "logprobs and top_logprobs (vLLM does), else use judge.mode per_criterion")
    first = content[0]
    top = [(t.token, t.logprob) for t in (first.top_logprobs or [])]
    if (first.token, first.logprob) not in top:
        top.append((first.token, first.logprob))
    return top


def token_probs(top, c: Criterion) -> dict[str, float]:
    """{answer token: probability} of a reply's first token: every spelling of an answer among the top tokens
    (case, spaces and punctuation around it ignored: "Yes", " yes", "YES.") summed; 0 for an answer not among them."""
    probs = dict.fromkeys(verdict_tokens(c), 0.0)
    for token, logprob in top:
        word = token.strip(PUNCTUATION).lower()
        if word in probs:
            probs[word] += math.exp(logprob)
    return probs


def verdict_value(probs: dict, c: Criterion, how: str = "soft"):
    """The judged value of a one-token verdict (judge.verdict `how`), before the pitfall's polarity:
    binary: p = P(yes) / (P(yes) + P(no)) (soft), or p >= 0.5 as true / false (threshold);
    likert: the expected digit under the answer tokens' renormalised probabilities (soft), or the most likely one
    (threshold). AnswerError (kind no_verdict) when no answer token is among the top ones: never a guess."""
    total = sum(probs.values())
    if total <= 0:
        raise AnswerError(f"none of {'/'.join(probs) or 'the answers'} among the most likely first tokens",
                          kind="no_verdict")
    if c.scale.kind == "binary":
        p = probs["yes"] / total
        return p if how == "soft" else bool(p >= MET)
    if how == "soft":
        return sum(int(t) * v for t, v in probs.items()) / total
    return int(max(probs, key=lambda t: (probs[t], -int(t))))


def parse_verdict(choice, c: Criterion) -> dict:
    """A one-token reply as stored (and cached): {"answer": the reply and its top first tokens as JSON, "probs":
    {answer token: probability}}; AnswerError when the server returned no logprobs. Whether it holds a verdict
    is verdict_of's business: a reply without one is the model's answer too, cached like any other."""
    top = first_token_logprobs(choice)
    raw = json.dumps({"reply": getattr(choice.message, "content", None) or "",
                      "top_logprobs": [[t, round(lp, 4)] for t, lp in top]}, ensure_ascii=False)
    return {"answer": raw, "probs": token_probs(top, c)}


def verdict_of(entry: dict, c: Criterion, how: str = "soft"):
    """The judged value of a stored one-token reply (verdict_value); AnswerError (no_verdict) naming how the reply
    began when no answer token was among the top ones."""
    try:
        return verdict_value(entry["probs"], c, how)
    except AnswerError as e:
        began = str(json.loads(entry["answer"]).get("reply", "")).strip()
        raise AnswerError(f"{e} (the reply began with {began[:20]!r})", e.kind, entry["answer"]) from None


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
    raw: str  # the judge's answer text (one_token: its top first tokens), or the check's verdict
    score: float  # satisfaction in [0, 1] (one_token soft verdicts: any value in it); NaN when the judgment failed
    failure: str  # "" when it succeeded, else the failure kind (timeout, invalid_answer, no_verdict, http_4xx, ...)
    reason: str  # "" when it succeeded, else "<failure>: <what happened>" (scrubbed)
    cached: bool
    latency_s: float


def _row_ids(req: Request) -> dict:
    c = req.criterion
    return dict(prompt_id=req.item.id, rollout_id=req.rollout_id, criterion_id=c.id, key=c.key,
                category=c.category, weight=c.weight, pitfall=c.pitfall)


def judged(req: Request, raw: str, score: float, cached: bool = False, latency_s: float = 0.0) -> Judgment:
    """A successful judgment of `req` by the judge."""
    return Judgment(**_row_ids(req), source="judge", raw=raw, score=score, failure="", reason="", cached=cached,
                    latency_s=latency_s)


def failed(req: Request, raw: str, failure: str, reason: str, cached: bool = False, latency_s: float = 0.0) -> Judgment:
    """A failed judgment of `req`: NaN with its failure kind and reason, never a guess."""
    return Judgment(**_row_ids(req), source="judge", raw=raw, score=math.nan, failure=failure,
                    reason=f"{failure}: {reason}", cached=cached, latency_s=latency_s)


def check_judgment(req: Request) -> Judgment:
    """Decide a criterion with a programmatic check, locally (no call)."""
    c = req.criterion
    met = run_check(c.check.name, c.check.params, req.response)
    return Judgment(**_row_ids(req), source="check", raw=json.dumps(met), score=c.satisfaction(met), failure="",
                    reason="", cached=False, latency_s=0.0)


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

    @property
    def one_token(self) -> bool:
        return self.cfg.mode == "one_token"

    def request_kwargs(self, prompt: str, schema: dict, answers: int = 0) -> dict:
        """The arguments of one chat.completions.create call (benchmarks/judge.py sends exactly these);
        answers > 0: a per-response call (schema "judgments") for that many criteria, judge.max_tokens each;
        judge.mode one_token: one token, with the judge.top_logprobs most likely first tokens and no schema."""
        kwargs = {"model": self.endpoint.model, "messages": [{"role": "user", "content": prompt}],
                  "temperature": self.cfg.temperature}
        if self.one_token:
            return kwargs | {"max_tokens": 1, "logprobs": True, "top_logprobs": self.cfg.top_logprobs}
        kwargs["max_tokens"] = self.cfg.max_tokens * max(answers, 1)
        if self.cfg.structured:
            kwargs["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "judgments" if answers else "judgment", "schema": schema, "strict": True}}
        return kwargs

    def prompt(self, r: Request) -> str:
        """The prompt of one (rollout, criterion) request in this judge's mode."""
        if self.one_token:
            return verdict_prompt(self.template, r.item, r.criterion, r.response)
        return render_prompt(self.template, r.item, r.criterion, r.response)

    async def _ask(self, pool: Pool, slot, prompt: str, kwargs: dict, parse):
        """The one loop of a unit: ask (transient failures retried by focal/api.py, bounded), parse; an answer that
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

    def _json_reply(self, choice, max_tokens: int) -> str:
        """The answer text of a JSON-mode reply; AnswerError when it was cut off before the JSON closed."""
        text = choice.message.content or ""
        if choice.finish_reason == "length":
            try:
                _json_object(text)
            except AnswerError:
                raise AnswerError(f"cut off at max_tokens ({max_tokens}; raise judge.max_tokens): {text[:80]!r}",
                                  raw=text) from None
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

    def _cached(self, key: str) -> bool:
        return self.cache is not None and self.cache.get(key) is not None

    def pending(self, requests: list[Request]) -> int:
        """How many API calls the requests would need (not a check, not cached)."""
        if self.cfg.mode == "per_response":
            return sum(not self._cached(self._response_key([requests[i] for i in g])) for g in response_groups(requests))
        return sum(r.criterion.check is None and not self._cached(self._key(r)) for r in requests)

    async def _judge_unit(self, pool: Pool, slot, reqs: list[Request]) -> list[Judgment]:
        if reqs[0].criterion.check is not None:
            self.stats.checks += len(reqs)
            return [check_judgment(r) for r in reqs]
        if self.cfg.mode == "per_response":
            return await self._judge_response(pool, slot, reqs)
        return [await self._judge(pool, slot, r) for r in reqs]

    async def _judge(self, pool: Pool, slot, req: Request) -> Judgment:
        """One (rollout, criterion) in one call (judge.mode per_criterion or one_token)."""
        c = req.criterion
        key = self._key(req)
        hit = self.cache.get(key) if self.cache is not None else None
        if hit is not None:
            self.stats.cache_hits += 1
            return self._from_entry(req, hit, cached=True)
        if self.one_token and not verdict_tokens(c):
            self.stats.failures["unsupported_scale"] += 1
            return failed(req, "", "unsupported_scale", f"judge.mode one_token answers in one token, so a likert "
                          f"scale must lie within 0-9 (this one is {c.scale.min:g}-{c.scale.max:g}); use judge.mode "
                          "per_criterion for this rubric set")
        prompt = self.prompt(req)
        kwargs = self.request_kwargs(prompt, answer_schema(c))

        def parse(choice) -> dict:  # the cache entry of a reply
            if self.one_token:
                return parse_verdict(choice, c)
            text = self._json_reply(choice, kwargs["max_tokens"])
            try:
                return {"answer": text, "value": parse_answer(text, c)}
            except AnswerError as e:
                raise AnswerError(str(e), raw=text) from None

        t0 = time.perf_counter()
        entry, failure, reason, raw = await self._ask(pool, slot, prompt, kwargs, parse)
        latency = time.perf_counter() - t0
        if failure:
            self.stats.failures[failure] += 1
            return failed(req, raw, failure, reason, latency_s=latency)
        if self.cache is not None:
            self.cache.put(key, entry)
        return self._from_entry(req, entry, latency_s=latency)

    def _from_entry(self, req: Request, entry: dict, cached: bool = False, latency_s: float = 0.0) -> Judgment:
        """The judgment of a reply (fresh or cached); one_token: judge.verdict applied to its stored probabilities,
        a reply with no answer token among them a failed judgment (no_verdict)."""
        c = req.criterion
        try:
            value = verdict_of(entry, c, self.cfg.verdict) if self.one_token else entry["value"]
        except AnswerError as e:
            self.stats.failures[e.kind] += 1
            return failed(req, entry["answer"], e.kind, scrub(str(e), self.cfg.api_key_env), cached, latency_s)
        return judged(req, entry["answer"], c.satisfaction(value), cached, latency_s)

    async def _judge_response(self, pool: Pool, slot, reqs: list[Request]) -> list[Judgment]:
        """Every LLM-judged criterion of one response in one call (judge.mode per_response); a criterion whose
        part of the answer is missing or invalid after judge.parse_retries is NaN on its own."""
        criteria, first = [r.criterion for r in reqs], reqs[0]
        key = self._response_key(reqs)
        hit = self.cache.get(key) if self.cache is not None else None
        if hit is not None:
            self.stats.cache_hits += len(reqs)
            return [judged(r, hit["raws"][r.criterion.id], r.criterion.satisfaction(hit["values"][r.criterion.id]),
                           cached=True) for r in reqs]
        prompt = render_response_prompt(self.template, first.item, criteria, first.response)
        kwargs = self.request_kwargs(prompt, answers_schema(criteria), answers=len(criteria))

        def parse(choice):
            text = self._json_reply(choice, kwargs["max_tokens"])
            values, raws, errors = parse_answers(text, criteria)
            if errors:  # asked again; if it stays so, the valid part is kept and the rest fails on its own
                raise AnswerError(next(iter(errors.values())), raw=text, partial=(values, raws, errors))
            return values, raws, text

        t0 = time.perf_counter()
        got, failure, reason, _ = await self._ask(pool, slot, prompt, kwargs, parse)
        latency = time.perf_counter() - t0
        if not failure:
            values, raws, text = got
            if self.cache is not None:
                self.cache.put(key, {"answer": text, "values": values, "raws": raws})
            return [judged(r, raws[r.criterion.id], r.criterion.satisfaction(values[r.criterion.id]),
                           latency_s=latency) for r in reqs]
        values, raws, errors = got or ({}, {}, {})
        out = []
        for r in reqs:
            cid = r.criterion.id
            if cid in values and cid not in errors:
                out.append(judged(r, raws[cid], r.criterion.satisfaction(values[cid]), latency_s=latency))
                continue
            why = scrub(errors[cid], self.cfg.api_key_env) if cid in errors else reason
            self.stats.failures[failure] += 1
            out.append(failed(r, raws.get(cid, ""), failure, why, latency_s=latency))
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
            units = self._units(requests)
            tasks = [asyncio.ensure_future(self._judge_unit(pool, slot, [requests[i] for i in u])) for u in units]
            try:
                if progress:
                    from tqdm import tqdm

                    for fut in tqdm(asyncio.as_completed(tasks), total=len(tasks), desc="judge",
                                    unit="call" if self.cfg.mode == "per_response" else "judgment", mininterval=5):
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

    frames = [pd.read_parquet(p) for p in (params.paths.train_prompts, params.paths.eval_prompts)]
    return {row["prompt_id"]: item_from_row(row) for df in frames for _, row in df.iterrows()}


def requests_for(rollouts: pd.DataFrame, items: dict, source: str) -> list[Request]:
    """One request per (rollout, criterion), in table order."""
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
    rows = df[df.source == "judge"] if "source" in df else df
    bad = rows[rows.score.isna()]
    kinds = Counter(bad["failure"].fillna("") if "failure" in bad else [""] * len(bad))
    return int(len(bad)), int(len(rows)), {str(k) or "unknown": int(v) for k, v in sorted(kinds.items())}


def check_failure_budget(df, max_share: float, where: str) -> None:
    """Raise TooManyFailures (one line: share, budget, kinds and counts) when failed judge rows exceed max_share."""
    failed, total, kinds = failure_summary(df)
    if total and failed / total > max_share:
        listing = ", ".join(f"{k} {v}" for k, v in kinds.items())
        raise TooManyFailures(f"{where}: {failed} of {total} judge calls failed ({failed / total:.1%} > "
                              f"judge.max_failure_share {max_share:.0%}): {listing}; fix the judge endpoint "
                              "(judge.base_url) and rerun: what succeeded is cached")

