"""What the judge is asked and how its answer is read: the pure part of judging (no I/O, no network).

    requests = requests_for(rollouts, items, "data/rollouts.parquet")    # one per (rollout, criterion)
    prompt = render_prompt(template, item, criterion, response)         # judge.mode per_criterion
    value = parse_answer('{"explanation": "..", "criteria_met": true}', criterion)

- The prompt is a template (the rubric set's, or focal/judging/template.md; `set_template`)
  with <<conversation>>, <<response>>, <<rubric_item>>, <<answer_format>> and the fence
  markers, filled in one pass (text inside a filled value is never re-read as a
  marker). The response sits between fence lines derived from its own hash, so it
  cannot close its fence, and the instructions and the JSON schema come from us. The
  rubric item comes after the response (focal.rubrics.sets.check_template), so every
  criterion asked of one response shares the prompt up to it (a server's prefix cache).
- judge.mode per_criterion: JSON `{explanation, criteria_met}` (binary) or
  `{explanation, score}` (likert), requested as a JSON schema when `judge.structured`
  and validated strictly either way (`answer_schema`, `parse_answer`).
- judge.mode per_response: every LLM-judged criterion of a response at once, a JSON
  object keyed by criterion id (`render_response_prompt`, `answers_schema`,
  `parse_answers`); `response_groups` says which requests share a call.
- judge.mode one_token: the same question answered in one token (`verdict_prompt`);
  the verdict is read from the first token's top_logprobs (`token_probs`,
  `verdict_value`): P(yes) / (P(yes) + P(no)) (soft), or that >= 0.5 (threshold); a
  likert item's expected (or most likely) digit. No answer token among the top ones
  is a failed judgment (AnswerError kind no_verdict), never a guess.
- A pitfall's judgment says whether the bad behaviour is present; the satisfaction is
  projected by focal.rubrics.sets.Criterion.satisfaction. Criteria with a programmatic check
  are decided locally (`check_judgment`).
- Which mode uses which of these, and each mode's cache key, is focal/judging/modes.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from focal.rubrics.checks import run_check
from focal.rubrics.sets import MARKER, Criterion, Item
from focal.rubrics.types import MET

DEFAULT_TEMPLATE = (Path(__file__).parent / "template.md").read_text(encoding="utf-8")
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


# ---- prompt, schema, parsing (judge.mode per_criterion) ---------------------------

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
    return _value(json_object(text), c)


def json_object(text: str) -> dict:
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


def set_template(rubric_set) -> str:
    """The judge template of a rubric set (its `judge_template:`, else Focal's default): the one place a template is
    taken from rubrics/. The prepare stage writes it to paths.judge_template; the stages read that (stage_template)."""
    return rubric_set.judge_template or DEFAULT_TEMPLATE


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
    obj = json_object(text)
    values, raws, errors = {}, {}, {}
    for c in criteria:
        try:
            values[c.id] = _value(obj.get(c.id), c)
            raws[c.id] = json.dumps(obj[c.id])
        except AnswerError as e:
            errors[c.id] = str(e)
    return values, raws, errors


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


class NoLogprobs(AnswerError):
    """The endpoint returned no logprobs: judge.mode one_token cannot read a verdict there (the run stops)."""


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
    token the server chose); NoLogprobs when the server returned none."""
    content = getattr(getattr(choice, "logprobs", None), "content", None)
    if not content:
        raise NoLogprobs("returned no logprobs; judge.mode one_token needs an endpoint that serves logprobs and "
                         "top_logprobs (vLLM, llama.cpp's server and OpenAI's chat models do): serve one, or set "
                         "judge.mode per_criterion")
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


# ---- requests and judgments --------------------------------------------------------

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


def probe(req: Request) -> Request:
    """`req` with its criterion's check removed, so that the LLM judge is asked what the check decides: the one
    builder of a probe (agreement's check probes, the reward audit, benchmarks/judge_modes, Rubric-ARM's agreement)."""
    return dataclasses.replace(req, criterion=dataclasses.replace(req.criterion, check=None))


def check_rollout_rows(rollouts, source: str) -> None:
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


def requests_for(rollouts, items: dict, source: str, only_checks: bool = False,
                 fix: str = "rerun the prepare stage or regenerate the rollouts") -> list[Request]:
    """The one builder of judge requests: one per (rollout, criterion of its prompt's rubric), in rollout order.
    rollouts: a table (or a list of dicts) with prompt_id, rollout_id and completion; only_checks: the criteria
    with a check only (a reward without a judge). An unknown prompt_id is an error naming `source` and `fix`; a
    table's rows are checked first (check_rollout_rows)."""
    if hasattr(rollouts, "to_dict"):
        check_rollout_rows(rollouts, source)
    rows = rollouts.to_dict("records") if hasattr(rollouts, "to_dict") else list(rollouts)
    missing = sorted({r["prompt_id"] for r in rows} - set(items))
    if missing:
        raise ValueError(f"{source}: prompt_id {missing[0]!r} (and {len(missing) - 1} more) has no rubric in the "
                         f"prompt tables; {fix}")
    return [Request(items[r["prompt_id"]], c, r["completion"], r["rollout_id"]) for r in rows
            for c in items[r["prompt_id"]].criteria if not only_checks or c.check is not None]


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
    from focal.rubrics.ifeval import Unavailable

    c = req.criterion
    try:
        met = run_check(c.check.name, c.check.params, req.response)
    except Unavailable as e:  # a benchmark checker that needs data this machine lacks: decided nothing, pays nothing
        return Judgment(**_row_ids(req), source="check", raw="", score=math.nan, failure="unavailable",
                        reason=f"unavailable: {e}", cached=False, latency_s=0.0)
    return Judgment(**_row_ids(req), source="check", raw=json.dumps(met), score=c.satisfaction(met), failure="",
                    reason="", cached=False, latency_s=0.0)


def decide_checks(requests: list[Request]) -> list[Judgment]:
    """Judgments of requests whose criteria all have a check (no judge needed)."""
    unchecked = [r.criterion.id for r in requests if r.criterion.check is None]
    if unchecked:
        raise ValueError(f"criterion {unchecked[0]!r} has no check: it needs a judge")
    return [check_judgment(r) for r in requests]
