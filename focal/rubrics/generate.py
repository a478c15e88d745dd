"""Rubric generation through an OpenAI-compatible model, following the published recipes.

    gen = RubricGenerator(params.rubricgen, endpoint, cache)
    result = gen.run(prompts)        # {"items": [Item], "rejected": [{prompt_id, attempt, reason}]}

- RaR: 7-20 atomic, self-contained criteria with categories essential / important /
  optional / pitfall, weights 1-5, pitfalls phrased as the bad behaviour.
- Chasing the Tail (refinement rounds, optional): sample several responses to the
  prompt, show them with the current rubric, and ask for a rubric that separates
  the best responses from the rest.
Every answer is validated with focal.rubrics.sets's own validator (invalid ones are
retried up to `rubricgen.max_attempts` times, then reported), criteria are
deduplicated by their normalised text, answers are cached (a rerun makes no
repeated calls), and the result is a Focal rubric set written atomically.
"""

from __future__ import annotations

import asyncio
import json
import re

from focal.core.cache import Cache, content_key
from focal.rubrics.sets import CATEGORIES, Item, RubricError, make_item, parse_criterion
from focal.rubrics.types import Where
from focal.serving.client import failure_kind, make_client, scrub, with_retries

GENERATE = """You write grading rubrics for answers to a user's request.

# The request
{prompt}

# What to write
A rubric of {lo} to {hi} criteria. Each criterion is atomic (checks one thing) and self-contained (can be judged from the answer alone). Categories: "essential" (weight 5), "important" (weight 3), "optional" (weight 1), and at least one "pitfall" (weight 2-4): a pitfall's text describes a BAD behaviour, phrased so that "true" means the answer does the bad thing.
Return JSON: {{"criteria": [{{"id": "names_the_cause", "text": "The answer names the main cause.", "category": "essential", "weight": 5}}, ...]}}"""

REFINE = """You improve a grading rubric so that it separates great answers from merely good ones.

# The request
{prompt}

# The current rubric
{rubric}

# Answers written for the request
{responses}

# What to write
Decide which answers are best and why, then return a revised rubric of {lo} to {hi} criteria that rewards exactly what makes the best answers better (keep good criteria, drop vague ones, add criteria that tell the answers apart). Same rules: atomic, self-contained criteria; categories essential / important / optional / pitfall; at least one pitfall describing a bad behaviour.
Return JSON: {{"criteria": [{{"id": "names_the_cause", "text": "The answer names the main cause.", "category": "essential", "weight": 5}}, ...]}}"""


def rubric_schema(lo: int, hi: int) -> dict:
    crit = {"type": "object", "additionalProperties": False, "required": ["id", "text", "category", "weight"],
            "properties": {"id": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,39}$"},
                           "text": {"type": "string", "minLength": 8, "maxLength": 240},
                           "category": {"enum": list(CATEGORIES)},
                           "weight": {"type": "integer", "minimum": 1, "maximum": 5}}}
    return {"type": "object", "additionalProperties": False, "required": ["criteria"],
            "properties": {"criteria": {"type": "array", "items": crit, "minItems": lo, "maxItems": hi}}}


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def parse_rubric(answer: str, prompt_id: str, prompt: str, lo: int, hi: int) -> Item:
    """Validate a generated rubric with Focal's validator; dedupe; RubricError says what is wrong."""
    where = Where("generated", None, prompt_id)
    try:
        obj = json.loads(answer)
    except json.JSONDecodeError:
        raise RubricError(f"item {prompt_id!r}: the answer is not JSON: {answer[:80]!r}") from None
    raw = obj.get("criteria") if isinstance(obj, dict) else None
    if not isinstance(raw, list):
        raise RubricError(f"item {prompt_id!r}: the answer has no `criteria` list")
    seen, ids, crits = set(), set(), []
    for d in raw:
        c = parse_criterion(d, where)
        if _norm(c.text) in seen:
            continue  # a duplicate criterion
        seen.add(_norm(c.text))
        cid, k = c.id, 2
        while cid in ids:  # two criteria with one id: number the second
            cid, k = f"{c.id}_{k}", k + 1
        ids.add(cid)
        crits.append(type(c)(cid, c.text, c.weight, c.category, c.pitfall, c.scale, c.check))
    if not lo <= len(crits) <= hi:
        raise RubricError(f"item {prompt_id!r}: {len(crits)} distinct criteria, need {lo} to {hi}")
    if not any(c.pitfall for c in crits):
        raise RubricError(f"item {prompt_id!r}: no pitfall criterion; a rubric needs at least one")
    return make_item(prompt_id, prompt, crits, "train", where)


def rubric_text(item: Item) -> str:
    return "\n".join(f"- [{c.category}, weight {c.weight:g}] {c.text}" for c in item.criteria)


class RubricGenerator:
    def __init__(self, cfg, endpoint, cache: Cache | None = None):
        """endpoint: a focal.serving.endpoints.Endpoint (its identity keys the cache)."""
        self.cfg, self.endpoint, self.cache = cfg, endpoint, cache
        self.calls = 0

    async def _complete(self, client, content: str, schema: dict | None, n: int = 1, temperature: float = 0.7,
                        max_tokens: int | None = None) -> list[str]:
        key = content_key("rubricgen", self.endpoint.identity, self.cfg.seed, content, schema, n, temperature,
                          max_tokens or self.cfg.max_tokens)
        hit = self.cache.get(key) if self.cache is not None else None
        if hit is not None:
            return hit
        kwargs = {"model": self.endpoint.model, "messages": [{"role": "user", "content": content}], "n": n,
                  "temperature": temperature, "max_tokens": max_tokens or self.cfg.max_tokens, "seed": self.cfg.seed}
        if schema:
            kwargs["response_format"] = {"type": "json_schema",
                                         "json_schema": {"name": "rubric", "schema": schema, "strict": True}}
        self.calls += 1
        resp = await with_retries(lambda: client.chat.completions.create(**kwargs), self.cfg)
        texts = [ch.message.content or "" for ch in sorted(resp.choices, key=lambda ch: ch.index)]
        if self.cache is not None:
            self.cache.put(key, texts)
        return texts

    async def _one(self, client, sem, pid: str, prompt: str, rejected: list) -> Item | None:
        lo, hi = self.cfg.min_criteria, self.cfg.max_criteria
        schema = rubric_schema(lo, hi) if self.cfg.structured else None
        async with sem:
            item = None
            for attempt in range(self.cfg.max_attempts):
                content = GENERATE.format(prompt=prompt, lo=lo, hi=hi) + ("\n" * attempt)  # a new key per attempt
                try:
                    (answer,) = await self._complete(client, content, schema)
                    item = parse_rubric(answer, pid, prompt, lo, hi)
                    break
                except RubricError as e:
                    rejected.append({"prompt_id": pid, "round": 0, "attempt": attempt + 1, "reason": str(e)})
                except Exception as e:  # noqa: BLE001 - reported, never invented
                    rejected.append({"prompt_id": pid, "round": 0, "attempt": attempt + 1,
                                     "reason": f"{failure_kind(e)[0]}: {scrub(str(e), self.cfg.api_key_env)[:160]}"})
                    break
            for rnd in range(1, self.cfg.refine_rounds + 1 if item else 0):
                try:
                    responses = await self._complete(client, prompt, None, n=self.cfg.refine_samples,
                                                     temperature=1.0, max_tokens=self.cfg.response_tokens)
                    listing = "\n\n".join(f"## Answer {i + 1}\n{r}" for i, r in enumerate(responses))
                    content = REFINE.format(prompt=prompt, rubric=rubric_text(item), responses=listing, lo=lo, hi=hi)
                    (answer,) = await self._complete(client, content, schema)
                    item = parse_rubric(answer, pid, prompt, lo, hi)
                except RubricError as e:  # keep the previous round's rubric
                    rejected.append({"prompt_id": pid, "round": rnd, "attempt": 1, "reason": str(e)})
                except Exception as e:  # noqa: BLE001
                    rejected.append({"prompt_id": pid, "round": rnd, "attempt": 1,
                                     "reason": f"{failure_kind(e)[0]}: {scrub(str(e), self.cfg.api_key_env)[:160]}"})
            return item

    async def arun(self, prompts: list[tuple[str, str]]) -> dict:
        rejected: list = []
        sem = asyncio.Semaphore(self.cfg.concurrency)
        async with make_client(self.endpoint.base_url, self.cfg.api_key_env, self.cfg.timeout_s) as client:
            items = await asyncio.gather(*[self._one(client, sem, pid, p, rejected) for pid, p in prompts])
        rejected.sort(key=lambda r: (r["prompt_id"], r["round"], r["attempt"]))
        return {"items": [it for it in items if it is not None], "rejected": rejected,
                "failed_prompts": [pid for (pid, _), it in zip(prompts, items) if it is None]}

    def run(self, prompts: list[tuple[str, str]]) -> dict:
        return asyncio.run(self.arun(prompts))


def to_yaml_items(items: list[Item], eval_every: int = 4) -> list[dict]:
    """Focal's item format (every eval_every-th item goes to eval), ready for yaml.safe_dump."""
    out = []
    for i, it in enumerate(items, 1):
        out.append({"id": it.id, "split": "eval" if eval_every and i % eval_every == 0 else "train",
                    "prompt": it.prompt,
                    "criteria": [{"id": c.id, "text": c.text, "weight": c.weight, "category": c.category}
                                 for c in it.criteria]})
    return out
