"""Rubric-ARM's text formats: the pairwise judge's layout and the generator's numbered rubric, their parsers, the
SFT targets, and the scoring of a verdict in both orders. Pure functions, no model.

    rubric = parse_rubric_text("1. Use no commas. [Hard Rule]\\n2. The response is kind. [Principle]", 5)
    prompt = judge_prompt("Write a poem.", rubric, response_a, response_b)
    parse_winner("Compliance check: ...\\nWinner: Response B")        # 'B'; None unless exactly one winner line
    both_orders(["A", None], ["A", "B"])                               # accuracy 0.625 (a malformed verdict: 0.5)

The judge (after the paper's judge, arXiv 2602.01511) sees the instruction, the rubric and two responses, and
writes, one line each:

    Compliance check: Response A meets 2 of 2 hard rules; Response B meets 1 of 2.
    Response A, criterion 1: met
    Response A, criterion 2: met
    Response B, criterion 1: met
    Response B, criterion 2: not met
    Winner: Response A

Only the winner line decides; a judgment is well formed when it has exactly one line starting `Winner:` and that
line names Response A or Response B. The other lines are read leniently (`analysis`), for the report only.
The generator writes a numbered list, one criterion a line, each tagged `[Hard Rule]` (checkable) or
`[Principle]` (a quality); the list is read line by line (`parse_rubric_text`), never as JSON.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from focal.judging.prompts import fence_tag

HARD, PRINCIPLE = "Hard Rule", "Principle"
WINNER_PREFIX = "Winner: Response"  # what the forced-prefix reading appends before comparing " A" with " B"
NO_RUBRIC = "(no rubric: judge by the instruction alone)"

JUDGE_PAIR = """You are a fair and impartial judge. Decide which response follows the instruction better, using the rubric.

Instruction:
<<instruction>>

Rubric:
<<rubric>>

Response A:
<<response_a>>

Response B:
<<response_b>>

Write your judgment in this layout, one line each:
Compliance check: Response A meets <n> of <total> hard rules; Response B meets <n> of <total>.
Response A, criterion <i>: met (or: not met), one line per criterion
Response B, criterion <i>: met (or: not met), one line per criterion
Winner: Response A (or: Winner: Response B)"""

RUBRIC_PROMPT = """Write a rubric for judging responses to the instruction below: a numbered list of 1 to <<most>> criteria, one per line. End each criterion with [Hard Rule] when it can be checked objectively (a format, a length, a word that must or must not appear) or [Principle] when it is a matter of quality.

Instruction:
<<instruction>>"""

_PLACEHOLDER = re.compile(r"<<(\w+)>>")
_NUMBERED = re.compile(r"^\s*(\d{1,3})\s*[.)]\s+(.*\S)\s*$")
_TAG = re.compile(r"\s*\[\s*(hard\s*rule|principle)\s*\]\s*\.?\s*$", re.I)
_WINNER_LINE = re.compile(r"^[\s*#>_-]*winner\s*:", re.I)
_WINNER = re.compile(r"^[\s*#>_-]*winner\s*:\s*[*_]*\s*response\s+([ab])\b[\s*_.!)]*$", re.I)
_ANALYSIS = re.compile(r"response\s+([ab])\s*,?\s*criterion\s+(\d+)\s*:\s*[*_]*\s*(not\s+met|met)\b", re.I)


@dataclass(frozen=True)
class RubricLine:
    """One criterion of a rubric: its text and its tag (HARD, PRINCIPLE, or '' when the writer gave none)."""

    text: str
    tag: str = ""


def fill(template: str, **values: str) -> str:
    """The template with each <<name>> replaced in one pass (a value that contains <<x>> is not filled again)."""
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


# ---- the generator's rubric -----------------------------------------------------------------------------

def parse_rubric_text(text: str, most: int) -> tuple[RubricLine, ...]:
    """The numbered criteria of a generated rubric, line by line: `1. <text> [Hard Rule]` (or `1)`; the tag is
    optional, any case). Other lines are ignored; the first `most` criteria are kept. () means no rubric (no
    numbered line with text): the caller counts it as invalid."""
    out = []
    for line in text.splitlines():
        m = _NUMBERED.match(line)
        if not m:
            continue
        body, tag = m.group(2), ""
        t = _TAG.search(body)
        if t:
            tag = HARD if t.group(1).lower().startswith("hard") else PRINCIPLE
            body = body[:t.start()].strip()
        if body:
            out.append(RubricLine(body, tag))
    return tuple(out[:most])


def render_rubric(rubric) -> str:
    """A rubric as the numbered list the generator writes and the judge reads (numbered from 1); the SFT target of
    the generator is its oracle rubric rendered so."""
    if not rubric:
        return NO_RUBRIC
    return "\n".join(f"{i}. {r.text}" + (f" [{r.tag}]" if r.tag else "") for i, r in enumerate(rubric, 1))


def rubric_prompt(instruction: str, most: int) -> str:
    """pi_r's prompt for one instruction."""
    return fill(RUBRIC_PROMPT, instruction=instruction, most=str(most))


# ---- the judge ---------------------------------------------------------------------------------------------

def fenced(response: str) -> str:
    """A response inside a fence named by its own hash: the response cannot close it (focal/judging/prompts.py)."""
    tag = fence_tag(response)
    return f"<{tag}>\n{response}\n</{tag}>"


def judge_prompt(instruction: str, rubric, response_a: str, response_b: str) -> str:
    """pi_j's prompt: the instruction, the rubric (() = none), Response A and Response B."""
    return fill(JUDGE_PAIR, instruction=instruction, rubric=render_rubric(rubric), response_a=fenced(response_a),
                response_b=fenced(response_b))


def parse_winner(text: str) -> str | None:
    """'A' or 'B' from the judgment's one winner line; None (malformed) when there is no line starting `Winner:`,
    more than one, or one that names neither response alone."""
    lines = [line for line in text.splitlines() if _WINNER_LINE.match(line)]
    if len(lines) != 1:
        return None
    m = _WINNER.match(lines[0])
    return m.group(1).upper() if m else None


def analysis(text: str) -> dict[tuple[str, int], bool]:
    """The analysis lines read leniently: (response 'A' | 'B', criterion number) -> met; the first line about a
    (response, criterion) counts."""
    out = {}
    for line in text.splitlines():
        m = _ANALYSIS.search(line)
        if m:
            out.setdefault((m.group(1).upper(), int(m.group(2))), m.group(3).lower() == "met")
    return out


def forced_prefix(text: str) -> str:
    """What the forced-prefix reading puts in the judge's mouth: its own judgment up to (not including) its first
    winner line (all of it when it wrote none), then `Winner: Response`."""
    lines = text.splitlines()
    cut = next((i for i, line in enumerate(lines) if _WINNER_LINE.match(line)), len(lines))
    head = "\n".join(lines[:cut]).rstrip()
    return f"{head}\n{WINNER_PREFIX}" if head else WINNER_PREFIX


def judge_target(rubric, met_a, met_b, winner: str) -> str:
    """The judge's SFT target: the compliance check (hard rules met by each response), one analysis line per
    criterion for each response, the winner line. met_a / met_b: one bool per criterion (the checkers' verdicts)."""
    if winner not in ("A", "B"):
        raise ValueError(f"winner must be 'A' or 'B', got {winner!r}")
    if not len(rubric) == len(met_a) == len(met_b):
        raise ValueError(f"one verdict per criterion: {len(rubric)} criteria, {len(met_a)} and {len(met_b)} verdicts")
    hard = [i for i, r in enumerate(rubric) if r.tag == HARD]
    a, b = sum(met_a[i] for i in hard), sum(met_b[i] for i in hard)
    lines = [f"Compliance check: Response A meets {a} of {len(hard)} hard rules; Response B meets {b} of {len(hard)}."]
    for name, met in (("A", met_a), ("B", met_b)):
        lines += [f"Response {name}, criterion {i}: {'met' if m else 'not met'}" for i, m in enumerate(met, 1)]
    return "\n".join(lines + [f"{WINNER_PREFIX} {winner}"])


# ---- scoring a pair judged in both orders ---------------------------------------------------------------------

def order_score(verdict: str | None, correct: str) -> float:
    """1 for the right verdict, 0 for the wrong one, 0.5 for a malformed one (a coin flip: chance stays 0.5)."""
    if verdict is None:
        return 0.5
    return 1.0 if verdict == correct else 0.0


def both_orders(ab: list, ba: list) -> dict:
    """Figures of pairs judged in both orders: ab[k] is the verdict on pair k shown (chosen, rejected) as (A, B),
    ba[k] shown swapped, so the right verdicts are 'A' and 'B'. `accuracy` is the mean over both orders,
    `accuracy_ab` / `accuracy_ba` per order, `accuracy_both` the share of pairs right in both orders (a malformed
    verdict a coin flip: chance 0.25), `well_formed` the share of verdicts that are not None."""
    if len(ab) != len(ba):
        raise ValueError(f"both orders of every pair: {len(ab)} verdicts in order AB, {len(ba)} in order BA")
    if not ab:
        return {"accuracy": None, "accuracy_ab": None, "accuracy_ba": None, "accuracy_both": None, "well_formed": None}
    s_ab, s_ba = [order_score(v, "A") for v in ab], [order_score(v, "B") for v in ba]
    n = len(ab)
    return {"accuracy": (sum(s_ab) + sum(s_ba)) / (2 * n), "accuracy_ab": sum(s_ab) / n, "accuracy_ba": sum(s_ba) / n,
            "accuracy_both": sum(x * y for x, y in zip(s_ab, s_ba)) / n,
            "well_formed": sum(v is not None for v in ab + ba) / (2 * n)}


def preferred(p_a: float) -> str | None:
    """The verdict a forced-prefix reading gives: 'A' when P(A) > P(B), 'B' when less, None (a coin flip) when equal."""
    return "A" if p_a > 0.5 else "B" if p_a < 0.5 else None


def judge_reward(verdict: str | None, correct: str, format_weight: float) -> float:
    """R_j of one judgment: 1 when its verdict is right, plus format_weight when it is well formed (malformed: 0)."""
    return (1.0 if verdict == correct else 0.0) + (format_weight if verdict is not None else 0.0)


def rubric_reward(valid: bool, ab: list, ba: list) -> float:
    """R_r of one rubric: the frozen judge's accuracy with it on its pair in both orders (every verdict of each
    order; a malformed one 0.5); 0 for a rubric with no criterion."""
    return both_orders(ab, ba)["accuracy"] if valid else 0.0
