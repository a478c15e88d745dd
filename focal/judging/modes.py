"""The judge modes (judge.mode), one small class each in one registry, MODES: what a mode asks, how it reads the
reply, and its part of the cache key. focal/judging/judge.py's Judge runs the loop every mode shares (bounds,
retries, the cache); the prompts and parsers a mode uses are focal/judging/prompts.py's.

    mode = get_mode("per_response")             # an unknown name lists the valid ones
    units = mode.units(requests)                # which requests one call decides
    key = mode.key(identity, cfg, template, reqs)
    prompt, kwargs = mode.request(template, cfg, model, reqs)   # one chat.completions.create call
    entry = mode.parse(choice, reqs, kwargs, cfg)               # the cache entry of a reply
    raw, value = mode.read(entry, req, cfg)     # one request's answer; AnswerError when it gives no verdict

- per_criterion: one call per (rollout, criterion), answered as JSON {explanation, criteria_met | score}.
- per_response: one call per response for all its LLM-judged criteria (response_groups), one JSON object keyed by
  criterion id; a criterion whose part is missing or invalid fails on its own.
- one_token: one call per (rollout, criterion) answered in one token; the verdict is read from the first token's
  top_logprobs, and a reply is cached whatever it holds (judge.verdict is applied when it is read).

A new mode is one class here (a Mode: request, parse, read, decoding), added to MODES; judge.mode names it.
Keys: every mode's key hashes who judges (the endpoint's identity), how (`decoding`), the template and what is
judged; the keys below are the ones the cache has always held, so existing caches keep answering.
"""

from __future__ import annotations

from focal.core.cache import content_key
from focal.judging.prompts import (AnswerError, answer_schema, answers_schema, json_object, parse_answer,
                                   parse_answers, parse_verdict, render_prompt, render_response_prompt,
                                   response_groups, verdict_of, verdict_prompt, verdict_tokens)
from focal.serving.client import scrub


def chat(model: str, prompt: str, cfg) -> dict:
    """The arguments every mode's call starts from."""
    return {"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": cfg.temperature}


def json_call(model: str, prompt: str, cfg, schema: dict, answers: int = 0) -> dict:
    """A call answered as JSON: judge.max_tokens per answer, the schema sent when judge.structured ("judgments"
    for a per-response call of `answers` criteria, else "judgment")."""
    kwargs = chat(model, prompt, cfg) | {"max_tokens": cfg.max_tokens * max(answers, 1)}
    if cfg.structured:
        kwargs["response_format"] = {"type": "json_schema", "json_schema": {
            "name": "judgments" if answers else "judgment", "schema": schema, "strict": True}}
    return kwargs


def json_reply(choice, max_tokens: int, api_key_env: str) -> str:
    """The answer text of a JSON reply, scrubbed (what is stored: raw, the cache); AnswerError when it was cut off
    before the JSON closed."""
    text = scrub(choice.message.content or "", api_key_env)
    if choice.finish_reason == "length":
        try:
            json_object(text)
        except AnswerError:
            raise AnswerError(f"cut off at max_tokens ({max_tokens}; raise judge.max_tokens): {text[:80]!r}",
                              raw=text) from None
    return text


def json_decoding(cfg) -> dict:
    """The settings that can change a JSON answer (per_criterion, per_response)."""
    return {"temperature": cfg.temperature, "max_tokens": cfg.max_tokens, "structured": cfg.structured,
            "seed": getattr(cfg, "seed", None)}


def repeat_part(r) -> tuple:
    """A repeated request's own part of its key (Request.repeat > 0); nothing for the first asking."""
    return (("repeat", r.repeat),) if r.repeat > 0 else ()


class Mode:
    """What a judge mode owns; the defaults are those of a mode that decides one request per call."""

    name = ""
    counts = "judgment"  # what the progress bar counts: one call decides a judgment (per_response: a "call")

    def units(self, requests) -> list[list[int]]:
        """Indices of the requests one call decides (a checked criterion's request is a unit of its own)."""
        return [[i] for i in range(len(requests))]

    def decoding(self, cfg) -> dict:
        """The judge.* settings that can change an answer in this mode: its part of every cache key."""
        raise NotImplementedError

    def key(self, identity: str, cfg, template: str, reqs) -> str:
        """The cache key of a unit: who judges, how, with which template, on what."""
        (r,) = reqs
        c = r.criterion
        return content_key("judge", identity, self.decoding(cfg), template, r.item.chat(), r.response, c.text,
                           c.pitfall, c.scale.kind, c.scale.min, c.scale.max, *repeat_part(r))

    def refusal(self, reqs) -> tuple[str, str] | None:
        """(failure kind, reason) when this mode cannot ask the unit at all; None when it can."""
        return None

    def request(self, template: str, cfg, model: str, reqs) -> tuple[str, dict]:
        """(prompt, the chat.completions.create arguments) of a unit."""
        raise NotImplementedError

    def parse(self, choice, reqs, kwargs: dict, cfg) -> dict:
        """The cache entry of a reply; AnswerError (its `partial` an entry of what it did give) when it gives no
        verdict, so it is asked again."""
        raise NotImplementedError

    def read(self, entry: dict, req, cfg) -> tuple[str, object]:
        """(raw answer, judged value) of one request from an entry (fresh, cached or partial); AnswerError when
        the entry gives it no verdict."""
        raise NotImplementedError

    def unanswered(self, raw: str) -> str:
        """What a request keeps as its raw answer when its call finally failed with nothing to read: the last
        reply."""
        return raw

    def verdict_rule(self, cfg) -> list:
        """Settings applied to a stored answer (not part of its cache key) that still change a reward."""
        return []


class PerCriterion(Mode):
    """judge.mode per_criterion: one call per (rollout, criterion), a JSON answer with an explanation."""

    name = "per_criterion"

    def decoding(self, cfg) -> dict:
        return json_decoding(cfg)

    def request(self, template, cfg, model, reqs):
        (r,) = reqs
        prompt = render_prompt(template, r.item, r.criterion, r.response)
        return prompt, json_call(model, prompt, cfg, answer_schema(r.criterion))

    def parse(self, choice, reqs, kwargs, cfg):
        text = json_reply(choice, kwargs["max_tokens"], cfg.api_key_env)
        try:
            return {"answer": text, "value": parse_answer(text, reqs[0].criterion)}
        except AnswerError as e:
            raise AnswerError(str(e), raw=text) from None

    def read(self, entry, req, cfg):
        return entry["answer"], entry["value"]


class PerResponse(Mode):
    """judge.mode per_response: every LLM-judged criterion of a response in one call, one JSON object keyed by
    criterion id; a criterion whose part is missing or invalid after judge.parse_retries is NaN on its own."""

    name = "per_response"
    counts = "call"

    def units(self, requests):
        return [[i] for i, r in enumerate(requests) if r.criterion.check is not None] + response_groups(requests)

    def decoding(self, cfg) -> dict:
        return json_decoding(cfg)

    def key(self, identity, cfg, template, reqs):
        r = reqs[0]
        return content_key("judge", identity, self.decoding(cfg), template, "per_response", r.item.chat(), r.response,
                           [(q.criterion.id, q.criterion.text, q.criterion.pitfall, q.criterion.scale.kind,
                             q.criterion.scale.min, q.criterion.scale.max) for q in reqs], *repeat_part(r))

    def request(self, template, cfg, model, reqs):
        criteria, first = [r.criterion for r in reqs], reqs[0]
        prompt = render_response_prompt(template, first.item, criteria, first.response)
        return prompt, json_call(model, prompt, cfg, answers_schema(criteria), answers=len(criteria))

    def parse(self, choice, reqs, kwargs, cfg):
        text = json_reply(choice, kwargs["max_tokens"], cfg.api_key_env)
        values, raws, errors = parse_answers(text, [r.criterion for r in reqs])
        entry = {"answer": text, "values": values, "raws": raws}
        if errors:  # asked again; if it stays so, the valid part is kept and the rest fails on its own
            raise AnswerError(next(iter(errors.values())), raw=text, partial=entry | {"errors": errors})
        return entry

    def read(self, entry, req, cfg):
        cid = req.criterion.id
        if cid in entry.get("errors", {}):
            raise AnswerError(entry["errors"][cid])
        return entry["raws"][cid], entry["values"][cid]

    def unanswered(self, raw):
        return ""  # a row holds its criterion's own part of the answer; a failed call gave none


class OneToken(Mode):
    """judge.mode one_token: one call per (rollout, criterion) answered in one token (yes / no, or a digit), the
    verdict read from the first token's top_logprobs (judge.verdict, applied when an entry is read)."""

    name = "one_token"

    def decoding(self, cfg) -> dict:
        return {"mode": "one_token", "temperature": cfg.temperature, "top_logprobs": cfg.top_logprobs,
                "seed": getattr(cfg, "seed", None)}

    def refusal(self, reqs):
        c = reqs[0].criterion
        if verdict_tokens(c):
            return None
        return "unsupported_scale", (f"judge.mode one_token answers in one token, so a likert scale must lie within "
                                     f"0-9 (this one is {c.scale.min:g}-{c.scale.max:g}); use judge.mode "
                                     "per_criterion for this rubric set")

    def request(self, template, cfg, model, reqs):
        (r,) = reqs
        prompt = verdict_prompt(template, r.item, r.criterion, r.response)
        return prompt, chat(model, prompt, cfg) | {"max_tokens": 1, "logprobs": True, "top_logprobs": cfg.top_logprobs}

    def parse(self, choice, reqs, kwargs, cfg):
        entry = parse_verdict(choice, reqs[0].criterion)  # NoLogprobs when the server serves none: the run stops
        return entry | {"answer": scrub(entry["answer"], cfg.api_key_env)}

    def read(self, entry, req, cfg):
        return entry["answer"], verdict_of(entry, req.criterion, cfg.verdict)

    def verdict_rule(self, cfg) -> list:
        return [cfg.verdict]


MODES = {m.name: m for m in (PerCriterion(), PerResponse(), OneToken())}


def get_mode(name: str, knob: str = "judge.mode") -> Mode:
    """The mode called `name`; an unknown name lists the valid ones (`knob`: where the name was set)."""
    if name not in MODES:
        raise ValueError(f"{knob} must be one of {', '.join(MODES)}, got {name!r}")
    return MODES[name]


def reward_identity(identity: str, cfg, template: str) -> list:
    """Everything about judging that can change a reward: who answers (the endpoint's identity), its decoding, the
    mode (and a rule applied to stored answers, one_token's judge.verdict) and the prompt template. For run keys and
    protocols."""
    mode = get_mode(cfg.mode)
    return [identity, mode.decoding(cfg), mode.name, template, *mode.verdict_rule(cfg)]
