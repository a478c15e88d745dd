"""Rubric-ARM: preference pairs (built, imported, split, capped), the text formats and their parsers on hand cases,
the SFT targets, the scoring in both orders and the rewards with hand-worked numbers, the forced-prefix reading on a
tiny model, and the whole stage (SFT and two alternating rounds) on tiny models in a scripted world; the trained
models serve the judge and the rubrics stage by a params change."""

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from focal.config import load_params
from focal.rubrics.types import Check, Criterion, Item, RubricError
from focal.training.pairs import build_pairs, cap_per_prompt, import_pairs, split_by_items, split_by_prompt
from focal.training.rubricarm_formats import (HARD, JUDGE_PAIR, PRINCIPLE, RUBRIC_PROMPT, RubricLine, both_orders,
                                              forced_prefix, judge_reward, judge_target, parse_rubric_text,
                                              parse_winner, render_rubric, rubric_reward)

SUN = Criterion("sun", "Mentions the sun.", 2.0, "important", check=Check("contains_any", {"words": ["sun"]}), key="sun")
SHORT = Criterion("short", "At most 3 words.", 1.0, "important", check=Check("max_words", {"n": 3}), key="short")
BANG = Criterion("bang", "Uses an exclamation mark.", 1.0, "pitfall", pitfall=True,
                 check=Check("min_count", {"text": "!", "n": 1}), key="bang")


# ---- pairs ---------------------------------------------------------------------------------------------

def rollouts_and_checks(texts: dict) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    from focal.judging.prompts import decide_checks, requests_for

    items = {pid: Item(pid, f"question {pid}", (SUN, SHORT, BANG)) for pid in texts}
    rollouts = pd.DataFrame([{"prompt_id": pid, "rollout_id": f"{pid}-{i}", "completion": t}
                             for pid, ts in texts.items() for i, t in enumerate(ts)])
    checked = decide_checks(requests_for(rollouts, items, "test"))
    return rollouts, pd.DataFrame([j.__dict__ for j in checked]), items


def test_pairs_from_checked_rollouts_choose_more_checked_weight_and_drop_ties():
    # checked weight (sun 2, short 1, no bang 1; total 4): "the sun" 4, "the sun is up today" 3, "a dog" 2,
    # "a dog !" 1, "a cat" 2 (ties "a dog")
    rollouts, checked, items = rollouts_and_checks({"p1": ["the sun", "the sun is up today", "a dog", "a dog !", "a cat"]})
    pairs = build_pairs(rollouts, checked, items)
    got = {(r.chosen_id, r.rejected_id): r.margin for r in pairs.itertuples()}
    assert got == {("p1-0", "p1-1"): 0.25, ("p1-0", "p1-2"): 0.5, ("p1-0", "p1-3"): 0.75, ("p1-0", "p1-4"): 0.5,
                   ("p1-1", "p1-2"): 0.25, ("p1-1", "p1-3"): 0.5, ("p1-1", "p1-4"): 0.25,
                   ("p1-2", "p1-3"): 0.25, ("p1-4", "p1-3"): 0.25}  # ("a dog", "a cat") tie: dropped
    row = pairs.iloc[0]
    assert row.source == "checks" and row.prompt == "question p1" and json.loads(row.messages)[0]["role"] == "user"
    assert pairs.pair_id.is_unique and set(pairs.split) == {"train"}


def test_the_label_does_not_depend_on_rollout_order():
    texts = ["the sun", "a dog !", "a cat"]
    a = build_pairs(*rollouts_and_checks({"p1": texts}))
    b = build_pairs(*rollouts_and_checks({"p1": texts[::-1]}))
    assert set(zip(a.chosen, a.rejected)) == set(zip(b.chosen, b.rejected)) == {
        ("the sun", "a dog !"), ("the sun", "a cat"), ("a cat", "a dog !")}


def test_split_by_prompt_keeps_each_prompt_on_one_side():
    rollouts, checked, items = rollouts_and_checks({f"p{i}": ["the sun", "a dog !"] for i in range(6)})
    pairs = split_by_prompt(build_pairs(rollouts, checked, items), 0.34)
    sides = pairs.groupby("prompt_id").split.nunique()
    assert (sides == 1).all()
    assert (pairs.split == "heldout").sum() == 2  # round(0.34 * 6) prompts, one pair each
    assert split_by_prompt(pairs, 0.34).split.tolist() == pairs.split.tolist()  # deterministic
    one = split_by_prompt(pairs[pairs.prompt_id == "p0"], 0.34)
    assert set(one.split) == {"train"}  # a single prompt cannot be held out
    two = split_by_prompt(pairs[pairs.prompt_id.isin(["p0", "p1"])], 0.01)
    assert sorted(two.split) == ["heldout", "train"]  # at least one prompt each side


def test_import_preference_and_hh_rlhf_formats(tmp_path):
    pref = tmp_path / "prefs.jsonl"
    pref.write_text("\n".join(json.dumps(r) for r in [
        {"prompt": "Name a star.", "chosen": "The sun.", "rejected": "A dog."},
        {"prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                    {"role": "user", "content": "Color of grass?"}],
         "chosen": [{"role": "assistant", "content": "Green."}], "rejected": [{"role": "assistant", "content": "Blue."}]},
        {"chosen": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
         "rejected": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "5"}]},
    ]) + "\n")
    df = import_pairs(pref, "preference")
    assert list(df.chosen) == ["The sun.", "Green.", "4"] and list(df.rejected) == ["A dog.", "Blue.", "5"]
    assert list(df.prompt) == ["Name a star.", "Color of grass?", "2+2?"]
    assert len(json.loads(df.messages[1])) == 3 and set(df.source) == {"import:preference:prefs.jsonl"}
    assert df.margin.isna().all() and df.prompt_id.is_unique
    hh = tmp_path / "hh.jsonl"
    hh.write_text(json.dumps({"chosen": "\n\nHuman: Name a star.\n\nAssistant: The sun.\n\nIt is close.",
                              "rejected": "\n\nHuman: Name a star.\n\nAssistant: A dog."}) + "\n")
    h = import_pairs(hh, "hh_rlhf")
    assert h.chosen[0] == "The sun.\n\nIt is close." and h.rejected[0] == "A dog." and h.prompt[0] == "Name a star."
    assert h.prompt_id[0] == df.prompt_id[0]  # the same conversation has the same id, whatever the format


@pytest.mark.parametrize("fmt, line, message", [
    ("preference", {"prompt": "x", "chosen": "a"}, r"prefs.jsonl:1: field 'rejected' is missing or empty"),
    ("preference", {"prompt": "x", "chosen": "a", "rejected": "a"}, "same chosen and rejected text"),
    ("preference", {"prompt": "x", "chosen": [{"role": "user", "content": "a"}], "rejected": "b"},
     "ends with a 'user' message"),
    ("preference", {"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                    "rejected": [{"role": "user", "content": "other"}, {"role": "assistant", "content": "b"}]},
     "do not share their conversation"),
    ("hh_rlhf", {"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "\n\nHuman: other\n\nAssistant: b"},
     "differ before their last Assistant reply"),
    ("hh_rlhf", {"chosen": "just text", "rejected": "\n\nHuman: q\n\nAssistant: b"}, "does not start with a Human"),
])
def test_bad_pair_files_name_the_line_field_and_fix(tmp_path, fmt, line, message):
    path = tmp_path / "prefs.jsonl"
    path.write_text(json.dumps(line) + "\n")
    with pytest.raises(RubricError, match=message):
        import_pairs(path, fmt)


def test_an_unknown_pair_format_lists_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match="pairs format 'csv' is unknown; use one of preference, hh_rlhf"):
        import_pairs(tmp_path / "x", "csv")



def test_ifeval_pairs_split_where_their_prompt_is_and_are_capped_per_prompt_by_the_seed():
    texts = ["the sun", "the sun is up today", "a dog", "a dog !", "a cat"]
    rollouts, checked, items = rollouts_and_checks({"p1": texts, "p2": texts})
    items["p2"] = dataclasses.replace(items["p2"], split="eval")
    pairs = split_by_items(build_pairs(rollouts, checked, items), items)  # 9 pairs a prompt
    assert set(pairs.split[pairs.prompt_id == "p1"]) == {"train"} and set(pairs.split[pairs.prompt_id == "p2"]) == {"heldout"}
    capped = cap_per_prompt(pairs, {"train": 4, "heldout": 2}, seed=0)
    assert capped.groupby("prompt_id").size().to_dict() == {"p1": 4, "p2": 2}
    assert set(capped.pair_id) <= set(pairs.pair_id)
    shuffled = cap_per_prompt(pairs.sample(frac=1, random_state=3), {"train": 4, "heldout": 2}, seed=0)
    assert sorted(shuffled.pair_id) == sorted(capped.pair_id)  # the draw does not depend on the rows' order
    other = cap_per_prompt(pairs, {"train": 4, "heldout": 2}, seed=1)
    assert sorted(other.pair_id) != sorted(capped.pair_id)  # another seed, another draw
    assert len(cap_per_prompt(pairs, {"train": 0, "heldout": 0}, seed=0)) == 18  # 0 = all
    with pytest.raises(ValueError, match="prompt 'p3', which the rubric set does not have"):
        split_by_items(pairs.assign(prompt_id="p3"), items)


# ---- the text formats, on hand cases ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, winner", [
    ("Compliance check: ...\nResponse A, criterion 1: met\nWinner: Response A", "A"),
    ("**Winner:** Response B.", "B"),
    ("winner: response b", "B"),
    ("Winner: Response A\nWinner: Response A", None),  # two winner lines: malformed, even when they agree
    ("Winner: Response A\nand then Winner: Response B", "A"),  # a line that does not start with Winner: is analysis
    ("Winner: Response A or Response B", None),
    ("Winner: Response C", None),
    ("Winner: A", None),
    ("The first response is better.", None),  # junk
    ("", None),  # an empty reply
])
def test_the_winner_line_decides_and_only_exactly_one(text, winner):
    assert parse_winner(text) == winner


@pytest.mark.parametrize("text, rubric", [
    ("1. Use no commas. [Hard Rule]\n2. The response is kind. [Principle]",
     (RubricLine("Use no commas.", HARD), RubricLine("The response is kind.", PRINCIPLE))),
    ("Here is a rubric:\n1) End with P.S. [hard rule].\nsome words\n3. Be brief",  # other lines ignored; tags any case
     (RubricLine("End with P.S.", HARD), RubricLine("Be brief", ""))),
    ("1. a\n2. b\n3. c\n4. d", (RubricLine("a"), RubricLine("b"), RubricLine("c"))),  # the first `most` kept
    ("1. [Principle]\nA rubric with no numbered criterion.", ()),  # a number with no text: nothing
    ("The response should be good.", ()),  # junk
    ("", ()),  # an empty reply
])
def test_the_generated_rubric_is_read_line_by_line(text, rubric):
    assert parse_rubric_text(text, most=3) == rubric


def test_a_rubric_renders_as_it_is_read():
    rubric = (RubricLine("Use no commas.", HARD), RubricLine("Be kind.", PRINCIPLE), RubricLine("Be brief."))
    assert render_rubric(rubric) == "1. Use no commas. [Hard Rule]\n2. Be kind. [Principle]\n3. Be brief."
    assert parse_rubric_text(render_rubric(rubric), 5) == rubric
    assert render_rubric(()).startswith("(no rubric")


def test_the_judge_target_of_a_hand_made_pair():
    rubric = (RubricLine("Use no commas.", HARD), RubricLine("End with P.S.", HARD), RubricLine("Be kind.", PRINCIPLE))
    target = judge_target(rubric, (True, False, True), (False, False, True), "A")
    assert target == ("Compliance check: Response A meets 1 of 2 hard rules; Response B meets 0 of 2.\n"
                      "Response A, criterion 1: met\nResponse A, criterion 2: not met\nResponse A, criterion 3: met\n"
                      "Response B, criterion 1: not met\nResponse B, criterion 2: not met\nResponse B, criterion 3: met\n"
                      "Winner: Response A")
    assert parse_winner(target) == "A"
    assert forced_prefix(target) == target.rsplit("\n", 1)[0] + "\nWinner: Response"
    assert forced_prefix("no layout at all") == "no layout at all\nWinner: Response"
    assert forced_prefix("") == "Winner: Response"
    with pytest.raises(ValueError, match="one verdict per criterion"):
        judge_target(rubric, (True,), (False,), "A")


def test_sft_rows_from_a_hand_made_pair_are_the_checkers_verdicts_in_both_orders(tmp_path):
    from focal.config import Rubricarm
    from focal.rubrics.sets import load_rubric_set
    from focal.training.rubricarm import Run, generator_examples, judge_examples

    items = {it.id: it for it in load_rubric_set(ifeval_set(tmp_path)).items}
    pair = pd.DataFrame([{"pair_id": "x", "prompt_id": "t1", "prompt": items["t1"].prompt, "messages": "[]",
                          "chosen": "the sun\nP.S. bye", "rejected": "the sun, the moon", "chosen_id": "",
                          "rejected_id": "", "margin": 1.0, "source": "checks", "split": "train"}])
    run = Run(pair, items, Rubricarm())
    ab, ba = judge_examples(run)
    assert [m["role"] for m in ab["prompt"]] == ["user"] and ab["completion"][0]["role"] == "assistant"
    prompt = ab["prompt"][0]["content"]
    assert prompt.index("the sun\nP.S. bye") < prompt.index("the sun, the moon")  # chosen shown as Response A
    assert ab["completion"][0]["content"] == (
        "Compliance check: Response A meets 2 of 2 hard rules; Response B meets 0 of 2.\n"
        "Response A, criterion 1: met\nResponse A, criterion 2: met\n"
        "Response B, criterion 1: not met\nResponse B, criterion 2: not met\nWinner: Response A")
    swapped = ba["prompt"][0]["content"]
    assert swapped.index("the sun, the moon") < swapped.index("the sun\nP.S. bye")
    assert ba["completion"][0]["content"].endswith("Response A, criterion 2: not met\n"
                                                   "Response B, criterion 1: met\nResponse B, criterion 2: met\n"
                                                   "Winner: Response B")
    [gen] = generator_examples(run)
    assert gen["completion"][0]["content"] == (
        "1. In your entire response, refrain from the use of any commas. [Hard Rule]\n"
        "2. At the end of your response, please explicitly add a postscript starting with P.S. [Hard Rule]")
    assert items["t1"].prompt in gen["prompt"][0]["content"]


def test_both_orders_scored_by_hand_with_a_malformed_verdict_a_coin_flip():
    # four pairs; order AB is right with 'A', order BA with 'B'
    ab, ba = ["A", None, "B", "A"], ["B", "B", None, "A"]
    # per pair and order: AB 1, .5, 0, 1 (mean .625); BA 1, 1, .5, 0 (mean .625); both: 1, .5, 0, 0 (mean .375)
    assert both_orders(ab, ba) == {"accuracy": 0.625, "accuracy_ab": 0.625, "accuracy_ba": 0.625,
                                   "accuracy_both": 0.375, "well_formed": 0.75}
    always_a = both_orders(["A"] * 3, ["A"] * 3)  # pure position bias: right in one order only
    assert (always_a["accuracy"], always_a["accuracy_ab"], always_a["accuracy_ba"], always_a["accuracy_both"]) == \
        (0.5, 1.0, 0.0, 0.0)
    chance = both_orders([None] * 2, [None] * 2)
    assert (chance["accuracy"], chance["accuracy_both"], chance["well_formed"]) == (0.5, 0.25, 0.0)
    with pytest.raises(ValueError, match="both orders of every pair"):
        both_orders(["A"], [])


def test_rewards_by_hand():
    assert [judge_reward(v, "A", 0.1) for v in ("A", "B", None)] == [1.1, 0.1, 0.0]
    assert judge_reward("B", "B", 0.0) == 1.0
    assert rubric_reward(True, ["A", None], ["B", "A"]) == 0.625  # (1 + .5 + 1 + 0) / 4
    assert rubric_reward(False, ["A"], ["B"]) == 0.0  # no numbered criterion: nothing to judge with


def test_the_forced_prefix_reading_on_a_tiny_model(tmp_path):
    """P(A) / (P(A) + P(B)) after `Winner: Response`: finite, in [0, 1], the same alone or left-padded in a batch,
    and the softmax of the model's own logits."""
    import torch

    from focal.training.rubricarm import forced_preference, load_model

    model, tok = load_model(make_tiny_bytes_model(tmp_path / "tiny"))
    chats = [({"role": "user", "content": "Name a star."},), ({"role": "user", "content": PROMPTS["t1"] * 3},)]
    prefixes = ["Winner: Response", "Response A, criterion 1: met\nWinner: Response"]
    batch = forced_preference(model, tok, chats, prefixes, batch_size=2)
    alone = [forced_preference(model, tok, [c], [p], batch_size=1)[0] for c, p in zip(chats, prefixes)]
    assert all(0.0 <= p <= 1.0 for p in batch) and batch == pytest.approx(alone, abs=1e-5)
    text = tok.apply_chat_template(list(chats[0]), add_generation_prompt=True, tokenize=False) + prefixes[0]
    ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    a, b = (tok(text + s, add_special_tokens=False)["input_ids"][ids.shape[1]] for s in (" A", " B"))
    with torch.no_grad():
        probs = model(input_ids=ids).logits[0, -1].softmax(-1)
    assert batch[0] == pytest.approx(float(probs[a] / (probs[a] + probs[b])), abs=1e-5)


# ---- the scripted world: tiny models whose `generate` answers by a script ------------------------------------

PROMPTS = {"t1": "Describe the sun.", "t2": "Describe the moon.", "e1": "Describe a star."}
SPLITS = {"t1": "train", "t2": "train", "e1": "eval"}
INSTRUCTIONS = [{"instruction_id_list": ["punctuation:no_comma", "detectable_content:postscript"],
                 "kwargs": [{}, {"postscript_marker": "P.S."}]}]
# the instructions each follows (no comma, a postscript): 2, 1, 1, 0 -> 5 pairs a prompt (the two 1s tie)
RESPONSES = ["the sun\nP.S. bye", "the sun, the moon\nP.S. bye", "the sun", "the sun, the moon"]
NORMAL = "1. Use no commas. [Hard Rule]\n2. End with a postscript. [Hard Rule]"
BACKWARDS = "1. The response reads backwards. [Principle]"
FENCE = re.compile(r"<(RESPONSE-[0-9A-F]+)>\n(.*?)\n</\1>", re.S)


def followed(response: str) -> tuple[bool, bool]:
    return "," not in response, "P.S." in response


def ifeval_set(root: Path) -> Path:
    """A three-prompt IFEval-format rubric set (two train prompts, one eval prompt), as rubrics/ifeval is."""
    folder = root / "rubrics" / "tinyeval"
    folder.mkdir(parents=True)
    (folder / "set.yaml").write_text("name: tinyeval\nformat: ifeval\nfile: prompts.jsonl\nsaturation_key: id\n")
    (folder / "prompts.jsonl").write_text("".join(
        json.dumps({"key": pid, "prompt": text, "split": SPLITS[pid], **INSTRUCTIONS[0]}) + "\n"
        for pid, text in PROMPTS.items()))
    return folder


def judgment(prompt: str, variant: int) -> str:
    """The scripted judge: the response that follows more instructions wins, with true analysis lines for the
    rubric's criteria (at most two); a rubric 'read backwards' inverts the winner. Variants (sampled): 0, 1 right,
    2 inverted, 3 malformed."""
    if variant == 3:
        return "it is fine"
    a, b = (text for _, text in FENCE.findall(prompt))
    rubric = prompt.split("Rubric:\n", 1)[1].split("\n\nResponse A:", 1)[0]
    winner = "A" if sum(followed(a)) > sum(followed(b)) else "B"
    if ("backwards" in rubric) != (variant == 2):
        winner = {"A": "B", "B": "A"}[winner]
    n = len(re.findall(r"^\d+\. ", rubric, re.M))
    lines = ["Compliance check: fine."]
    for name, response in (("A", a), ("B", b)):
        lines += [f"Response {name}, criterion {i}: {'met' if m else 'not met'}"
                  for i, m in enumerate(followed(response)[:n], 1)]
    return "\n".join(lines + [f"Winner: Response {winner}"])


def script(prompt: str, index: int, sampled: bool) -> str:
    """What the scripted world answers. Sampled answers (GRPO's trainee, rollouts) vary with the row's index in its
    group of 4; greedy ones (the frozen partner, measurements) are variant 0.
    - a judge prompt: `judgment` (0, 1 right, 2 inverted, 3 malformed);
    - a rubric prompt: NORMAL; sampled: 0 NORMAL, 1 BACKWARDS, 2 no numbered line, 3 NORMAL;
    - anything else (a policy's prompt): RESPONSES[index]."""
    variant = index % 4 if sampled else 0
    if "fair and impartial judge" in prompt:
        return judgment(prompt, variant)
    if "Write a rubric for judging" in prompt:
        return [NORMAL, BACKWARDS, "a rubric", NORMAL][variant]
    return RESPONSES[index % 4]


def make_tiny_bytes_model(folder: Path) -> Path:
    """A 2-layer Llama with a byte-level BPE tokenizer trained on the prompts' text (any text encodes)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from tiny import CHAT_TEMPLATE

    specials = ["<unk>", "<pad>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [JUDGE_PAIR, RUBRIC_PROMPT, NORMAL, BACKWARDS, *PROMPTS.values(), *RESPONSES,
              judgment(f"Rubric:\n{NORMAL}\n\nResponse A:\n<RESPONSE-0>\nx\n</RESPONSE-0>\n<RESPONSE-1>\ny, z\n</RESPONSE-1>", 0),
              "Winner: Response A", "Winner: Response B"] * 3
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=1200, special_tokens=specials,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>",
                                   bos_token="<|im_start|>", eos_token="<|im_end|>")
    fast.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         pad_token_id=fast.pad_token_id, eos_token_id=fast.eos_token_id,
                         bos_token_id=fast.bos_token_id, tie_word_embeddings=True)
    folder.mkdir(parents=True, exist_ok=True)
    LlamaForCausalLM(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def scripted_generate(monkeypatch, folder: Path, answer, asked: list) -> None:
    """Every generate of a tiny Llama answers `answer(prompt, index, sampled)`, or None: the model's own generate."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(folder)
    real = LlamaForCausalLM.generate

    def generate(self, input_ids=None, attention_mask=None, generation_config=None, num_return_sequences=None,
                 do_sample=None, **kwargs):
        n = num_return_sequences or 1
        sampled = do_sample if do_sample is not None else bool(generation_config and generation_config.do_sample)
        rows = input_ids.repeat_interleave(n, dim=0)
        prompts = [tok.decode(row, skip_special_tokens=True) for row in rows]
        texts = [answer(prompt, i, sampled) for i, prompt in enumerate(prompts)]
        if None in texts:
            given = {"generation_config": generation_config, "num_return_sequences": num_return_sequences,
                     "do_sample": do_sample}
            return real(self, input_ids=input_ids, attention_mask=attention_mask,
                        **{k: v for k, v in given.items() if v is not None}, **kwargs)
        asked.extend(prompts)
        ids = [tok(t, add_special_tokens=False).input_ids + [tok.eos_token_id] for t in texts]
        width = max(map(len, ids))
        out = torch.full((len(ids), width), tok.pad_token_id, dtype=rows.dtype)
        for i, x in enumerate(ids):
            out[i, :len(x)] = torch.tensor(x)
        return torch.cat([rows, out], dim=1)

    monkeypatch.setattr(LlamaForCausalLM, "generate", generate)


@pytest.fixture
def scripted(monkeypatch, tmp_path):
    """Every generate of the tiny Llama answers by `script`; returns (model folder, the prompts it was asked)."""
    folder, asked = make_tiny_bytes_model(tmp_path / "tiny"), []
    scripted_generate(monkeypatch, folder, script, asked)
    return folder, asked


def tiny_project(tmp_path: Path, model: Path, **rubricarm) -> Path:
    ifeval_set(tmp_path)
    raw = {"paths": {"rubrics": str(tmp_path / "rubrics"), "base_model": str(model),
                     **{k: str(tmp_path / v) for k, v in {
                         "rollout_cache": "cache/rollouts.sqlite", "rubricarm_pairs": "data/pairs.parquet",
                         "rubricarm_generator": "models/rubricarm/generator", "rubricarm_judge": "models/rubricarm/judge",
                         "rubricarm_report": "metrics/rubricarm.json", "rubricarm_work": "checkpoints/rubricarm"}.items()}},
           "rubricarm": {"enabled": True, "rubric_set": "tinyeval", "backend": "transformers", "pair_generations": 4,
                         "pair_max_tokens": 8, "rounds": 2, "steps_per_phase": 2, "group_size": 4, "pairs_per_step": 1,
                         "learning_rate": 1e-2, "lora_r": 4, "lora_layers": 1, "judge_max_tokens": 48,
                         "rubric_max_tokens": 32, "generate_batch": 4,
                         "sft": {"max_steps": 2, "batch_size": 4, "learning_rate": 1e-2, "lora_r": 4, "lora_layers": 1},
                         "results": str(tmp_path / "results.json"), **rubricarm}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_sft_and_two_alternating_rounds_through_the_stage_with_hand_worked_rewards(tmp_path, scripted):
    from safetensors.torch import load_file

    from stages import rubricarm

    model, asked = scripted
    params = load_params(tiny_project(tmp_path, model))
    rubricarm.run(params)
    report = json.loads((tmp_path / "metrics/rubricarm.json").read_text())
    assert sorted(report) == ["arm", "enabled", "pairs", "seed", "sft", "untrained", "work"]
    assert report["pairs"] == {"train": 10, "heldout": 3, "prompts": 3}  # 5 pairs a prompt; 3 held out at most
    pairs = pd.read_parquet(tmp_path / "data/pairs.parquet")
    assert (pairs.chosen.map(lambda r: sum(followed(r))) > pairs.rejected.map(lambda r: sum(followed(r)))).all()
    assert set(pairs.split[pairs.prompt_id == "e1"]) == {"heldout"}
    sft, arm = report["sft"], report["arm"]
    assert sft["sft_judge_examples"] == 20 and sft["sft_generator_examples"] == 2  # 10 pairs x 2 orders; 2 prompts
    assert sft["sft_judge_steps"] == sft["sft_generator_steps"] == 2
    for r in (1, 2):
        assert arm[f"arm_r{r}_judge_pairs"] == 10 and arm[f"arm_r{r}_judge_generated_rubrics"] == 10
    # judge phase, one pair (two ordered prompts) a step: each prompt's 4 judgments are right, right, wrong,
    # malformed: 1 + 0.1, 1 + 0.1, 0 + 0.1, 0
    assert arm["arm_judge_rewards"] == [pytest.approx([1.1, 1.1, 0.1, 0.0] * 2)] * 4
    assert arm["arm_judge_well_formed"] == 0.75 and arm["arm_judge_accuracy"] == 0.625  # (1 + 1 + 0 + .5) / 4
    # generator phase: rubrics NORMAL, BACKWARDS, no criterion, NORMAL; the frozen judge (greedy) is right in both
    # orders with NORMAL (1), wrong with BACKWARDS (0); no criterion: 0
    assert arm["arm_generator_rewards"] == [[1.0, 0.0, 0.0, 1.0]] * 4
    assert arm["arm_generator_rubric_valid"] == 0.75
    for phase in ("untrained", "sft", "arm"):
        f = report[phase]
        assert f["heldout_pairs"] == 3 and f["train_pairs"] == 10 and f["generator_pairs"] == 1
        assert (f["heldout_accuracy"], f["accuracy_ab"], f["accuracy_ba"], f["accuracy_both"], f["well_formed"]) == \
            (1.0, 1.0, 1.0, 1.0, 1.0)
        assert f["criteria_lines"] == 1.0 and f["criteria_agreement"] == 1.0  # the script writes the checkers' truth
        assert (f["rubric_valid"], f["generated_accuracy"], f["oracle_subset_accuracy"], f["norubric_accuracy"]) == \
            (1.0, 1.0, 1.0, 1.0)
        assert 0.0 <= f["forced_accuracy"] <= 1.0 and 0.0 <= f["forced_prefers_a"] <= 1.0  # the tiny model's own
        assert f["example_judgment"].endswith("Winner: Response A") and f["example_rubric"] == NORMAL
    before = load_file(model / "model.safetensors")
    work = Path(report["work"])
    for folder in (work / "sft" / "judge", work / "sft" / "generator", tmp_path / "models/rubricarm/judge",
                   tmp_path / "models/rubricarm/generator"):
        after = load_file(folder / "model.safetensors")
        assert any(not before[k].equal(after[k]) for k in before), f"training changed no weight of {folder}"
    # started again: every phase is kept, nothing is generated (the rollouts come from the rollout cache)
    asked.clear()
    rubricarm.run(params)
    assert asked == [] and json.loads((tmp_path / "metrics/rubricarm.json").read_text()) == report


def test_disabled_writes_its_report_and_empty_folders_that_cannot_be_served(tmp_path):
    from focal.judging.judge import open_judge
    from focal.judging.spec import JudgeSpec
    from stages import rubricarm

    path = tiny_project(tmp_path, tmp_path / "none", enabled=False)
    raw = yaml.safe_load(path.read_text())
    raw["paths"]["judge_model"] = raw["paths"]["rubricarm_judge"]
    path.write_text(yaml.safe_dump(raw))
    params = load_params(path)
    rubricarm.run(params)
    assert json.loads((tmp_path / "metrics/rubricarm.json").read_text()) == {"enabled": False}
    assert pd.read_parquet(tmp_path / "data/pairs.parquet").empty
    with pytest.raises(ValueError, match="paths.judge_model is .*models/rubricarm/judge, which holds no model "
                                         r"\(no config.json\).*rubricarm.enabled: true"):
        with open_judge(JudgeSpec.from_params(params, None)):
            pass


def test_greedy_generation_asks_each_distinct_chat_once_and_keeps_the_order(scripted):
    from focal.training.rubricarm import generate, load_model

    folder, asked = scripted
    a, b = ({"role": "user", "content": "Name a star."},), ({"role": "user", "content": "Name a dog, " * 5},)
    assert generate(*load_model(folder), [b, a, b], 8, batch_size=1) == [RESPONSES[0], RESPONSES[0], RESPONSES[0]]
    assert len(asked) == 2

    def judge(response_a, response_b):  # the scripted judge names the response that follows more instructions
        return ({"role": "user", "content": f"You are a fair and impartial judge.\nRubric:\n{NORMAL}\n\nResponse A:\n"
                                            f"<RESPONSE-0>\n{response_a}\n</RESPONSE-0>\n<RESPONSE-1>\n{response_b}\n"
                                            "</RESPONSE-1>"},)

    chats = [judge("a, b, c, d, e, f, g", "the sun"), judge("the sun", "a, b"),
             judge("the sun and the moon and a bright star tonight", "x, y"), judge("c, d", "the sun\nP.S. no")]  # four lengths, out of order
    got = generate(*load_model(folder), chats, 8, batch_size=2)  # batched by length, put back in order
    assert [parse_winner(t) for t in got] == ["B", "A", "A", "B"]


@pytest.fixture
def fake_server(monkeypatch):
    """focal.serving.server.serving replaced by a loopback fake OpenAI server (playing vLLM): (server, folders served)."""
    from contextlib import contextmanager

    import focal.serving.server
    from fake_openai import FakeOpenAI

    served = []
    with FakeOpenAI() as fake:
        @contextmanager
        def serving(cfg, folder, *args, **kwargs):
            served.append(str(folder))
            yield fake.base_url

        monkeypatch.setattr(focal.serving.server, "serving", serving)
        yield fake, served


def test_the_trained_judge_serves_the_judge_stage_by_a_params_change(tmp_path, fake_server):
    """paths.judge_model: the local judge server serves that folder, and the judge's identity (cache keys) is its
    weights'; a stand-in model plays the trained judge, a loopback fake server plays vLLM."""
    from focal.serving.endpoints import judge_identity, local_identity
    from stages import judge, prepare, rollouts
    from tiny import make_tiny_model

    base, trained = make_tiny_model(tmp_path / "base"), make_tiny_model(tmp_path / "trained_judge", seed=1)
    fake, served = fake_server
    root = Path(__file__).parents[1]
    raw = {"paths": {"rubrics": str(root / "rubrics"), "base_model": str(base),
                     **{k: str(tmp_path / v) for k, v in {
                         "train_prompts": "train.parquet", "eval_prompts": "eval.parquet", "rollouts": "r.parquet",
                         "judge_template": "t.md", "rollout_cache": "r.sqlite", "judge_cache": "j.sqlite", "judgments": "j.parquet",
                         "judge_stats": "j.json", "judge_votes": "v.parquet"}.items()}},
           "prepare": {"max_train_prompts": 1, "max_eval_prompts": 1},
           "rollouts": {"backend": "transformers", "max_prompts": 1, "num_generations": 1, "max_tokens": 4},
           "judge": {"backoff_s": 0.01, "agreement_share": 0.0, "consistency_share": 0.0}}
    calls = []
    for judge_model in (base, trained):
        raw["paths"]["judge_model"] = str(judge_model)
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
        params = load_params(tmp_path / "params.yaml")
        if judge_model == base:
            prepare.run(params)
            rollouts.run(params)
        judge.run(params)
        calls.append(fake.calls)
    assert served == [str(base), str(trained)]
    assert judge_identity(params.judge, params.paths.judge_model) == local_identity(trained) != local_identity(base)
    assert calls[1] == 2 * calls[0] > 0  # the trained judge's identity finds nothing of the base's in the cache


def test_dvc_repro_rubricarm_on_the_defaults(tmp_path):
    """The stage under real DVC, on the committed defaults (off: its report and empty outputs, cached)."""
    from test_pipeline import copy_project, dvc
    from tiny import make_tiny_model

    proj = copy_project(tmp_path)
    make_tiny_model(proj / "models" / "base")
    out = dvc(proj, "repro", "--single-item", "rubricarm")
    assert "Running stage 'rubricarm'" in out
    assert json.loads((proj / "metrics/rubricarm.json").read_text()) == {"enabled": False}
    assert "didn't change" in dvc(proj, "repro", "--single-item", "rubricarm")


def test_the_trained_generator_serves_the_rubrics_stage_by_a_params_change(tmp_path, fake_server):
    """paths.rubric_model: the rubrics stage's local server serves that folder (a stand-in model plays the
    trained generator; the fake server answers no rubric, which the stage reports as such)."""
    from stages import rubrics
    from tiny import make_tiny_model

    generator = make_tiny_model(tmp_path / "generator")
    fake, served = fake_server
    shutil.copytree(Path(__file__).parents[1] / "rubrics" / "default", tmp_path / "rubrics" / "default")
    raw = {"paths": {"rubrics": str(tmp_path / "rubrics"), "rubric_model": str(generator),
                     "rubricgen_cache": str(tmp_path / "g.sqlite"), "rubricgen_report": str(tmp_path / "g.json")},
           "rubricgen": {"enabled": True, "max_prompts": 1, "max_attempts": 1, "out_set": "none"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(RubricError, match="no prompt got a valid rubric"):
        rubrics.run(load_params(tmp_path / "params.yaml"))
    assert served == [str(generator)] and fake.calls == 1
    assert "no `criteria` list" in json.loads((tmp_path / "g.json").read_text())["rejected"][0]["reason"]
