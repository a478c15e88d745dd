"""Rubric-ARM: preference pairs (built, imported, split), the rewards with hand-worked numbers, and two alternating
rounds through the stage function on tiny models in a scripted world; the trained models serve the judge and the
rubrics stage by a params change."""

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from focal.config import load_params
from focal.judging.prompts import DEFAULT_TEMPLATE, answers_format, rubric_list_text
from focal.rubrics.types import Check, Criterion, Item, RubricError
from focal.training.pairs import build_pairs, import_pairs, split_by_prompt
from focal.training.rubricarm import (correct, judge_rewards, judgment_score, pair_accuracy, parse_generated, rubric_reward)
from focal.rubrics.generate import GENERATE

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


# ---- rewards, worked by hand -----------------------------------------------------------------------------

RUBRIC = (Criterion("sun", "Mentions the sun.", 3.0, "essential", key="sun"),
          Criterion("dog", "Talks about a dog.", 1.0, "pitfall", pitfall=True, key="dog"))


def answer(**met) -> str:
    return json.dumps({k: {"explanation": "", "criteria_met": v} for k, v in met.items()})


def test_a_judgment_scores_its_rubric_statically_or_is_malformed():
    assert judgment_score(answer(sun=True, dog=False), RUBRIC) == 1.0
    assert judgment_score(answer(sun=True, dog=True), RUBRIC) == 0.75  # (3 * 1 + 1 * 0) / 4
    assert judgment_score(answer(sun=False, dog=False), RUBRIC) == 0.25
    assert judgment_score(answer(sun=True), RUBRIC) is None  # a criterion unanswered
    assert judgment_score("The response is good.", RUBRIC) is None
    assert judgment_score('{"sun": {"criteria_met": "yes"}, "dog": {"criteria_met": false}}', RUBRIC) is None


def test_judge_reward_correct_wrong_tie_and_malformed():
    assert correct(1.0, 0.25) and not correct(0.25, 1.0) and not correct(0.5, 0.5) and not correct(None, 0.0)
    # one judgment each side: correct -> 1 + 0.1, wrong -> 0 + 0.1, malformed -> 0 (no decision, no format)
    assert judge_rewards([1.0], [0.25], 0.1) == ([1.1], [1.1])
    assert judge_rewards([0.25], [1.0], 0.1) == ([0.1], [0.1])
    assert judge_rewards([None], [0.25], 0.1) == ([0.0], [0.1])
    # groups of 4: chosen [1, 1, 0, malformed], rejected [0, 0, 1, malformed]
    # chosen 1.0 beats rejected 0, 0 (not 1: a tie, nor malformed): 2/4 + 0.1; chosen 0 beats none: 0.1
    c, r = judge_rewards([1.0, 1.0, 0.0, None], [0.0, 0.0, 1.0, None], 0.1)
    assert c == pytest.approx([0.6, 0.6, 0.1, 0.0]) and r == pytest.approx([0.6, 0.6, 0.1, 0.0])
    assert judge_rewards([1.0], [0.0], 0.0) == ([1.0], [1.0])


def test_generator_reward_is_the_frozen_judges_accuracy_with_its_rubric():
    assert pair_accuracy([1.0, 0.5], [0.25, 0.75]) == 0.75  # 1 > .25, 1 > .75, .5 > .25, not .5 > .75
    assert rubric_reward(True, [1.0, 0.5], [0.25, 0.75]) == 0.75
    assert rubric_reward(True, [None], [0.0]) == 0.0
    assert rubric_reward(False, [1.0], [0.0]) == 0.0  # an invalid rubric cannot be judged with


def test_generated_rubrics_go_through_the_rubrics_stages_validator():
    ok = json.dumps({"criteria": [{"id": "names_sun", "text": "The answer names the sun.", "category": "essential",
                                   "weight": 5},
                                  {"id": "dog", "text": "The answer talks about a dog.", "category": "pitfall",
                                   "weight": 2}]})
    crit, why = parse_generated(ok, "p1", "q", 2, 3)
    assert [c.id for c in crit] == ["names_sun", "dog"] and crit[1].pitfall and why == ""
    crit, why = parse_generated(ok, "p1", "q", 3, 4)
    assert crit is None and "need 3 to 4" in why
    assert parse_generated("Here is a rubric", "p1", "q", 1, 3)[0] is None


# ---- the scripted world: tiny models whose `generate` answers by a script ------------------------------------

PROMPTS = {"p1": "Why is the sky blue?", "p2": "Name a star.", "p3": "What do plants need?"}
RESPONSES = ["the sun is good", "a dog", "the sun", "a cat"]  # checked weight: sun 2, 0, 2, 0 -> 4 pairs a prompt
NORMAL = {"criteria": [{"id": "names_sun", "text": "The answer names the sun.", "category": "essential", "weight": 5},
                       {"id": "dog", "text": "The answer talks about a dog.", "category": "pitfall", "weight": 2}]}
BACKWARDS = {"criteria": [{"id": "names_sun", "text": "The answer names the sun, read backwards.",
                           "category": "essential", "weight": 5},
                          {"id": "dog", "text": "The answer talks about a dog.", "category": "pitfall", "weight": 2}]}
ITEM_LINE = re.compile(r"^- (\S+) \((?:true or false|a score from (\d+) to (\d+))\): (.*)$", re.M)
FENCE = re.compile(r"<(RESPONSE-[0-9A-F]+)>\n(.*?)\n</\1>", re.S)


def script(prompt: str, index: int, sampled: bool) -> str:
    """What the scripted world answers. Sampled answers (GRPO's trainee, rollouts) vary with the row's index in its
    group of 4; greedy ones (the frozen partner, measurements) are the right answer.
    - a judge prompt: every item met for a response that mentions the sun (a pitfall: present for one that does
      not); a rubric with an item 'read backwards' inverts that. Sampled: 0, 1 right, 2 inverted, 3 malformed.
    - a rubric prompt: NORMAL; sampled: 0 NORMAL, 1 BACKWARDS, 2 not JSON, 3 NORMAL.
    - anything else (a policy's prompt): RESPONSES[index]."""
    variant = index % 4 if sampled else 0
    if "Judge each rubric item below" in prompt:
        if variant == 3:
            return "it is fine"
        good = "sun" in FENCE.search(prompt).group(2)
        items = ITEM_LINE.findall(prompt)
        if variant == 2 or any("read backwards" in text for *_, text in items):
            good = not good
        out = {}
        for cid, lo, hi, text in items:
            bad_item = "undesirable behaviour" in text
            if lo:
                out[cid] = {"explanation": "", "score": int(hi if good != bad_item else lo)}
            else:
                out[cid] = {"explanation": "", "criteria_met": good != bad_item}
        return json.dumps(out)
    if "You write grading rubrics" in prompt:
        return [json.dumps(NORMAL), json.dumps(BACKWARDS), "a rubric", json.dumps(NORMAL)][variant]
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
    corpus = [DEFAULT_TEMPLATE, GENERATE, rubric_list_text(RUBRIC), answers_format(RUBRIC), json.dumps(NORMAL),
              json.dumps(BACKWARDS), *PROMPTS.values(), *RESPONSES, answer(sun=True, dog=False)] * 3
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


@pytest.fixture
def scripted(monkeypatch, tmp_path):
    """Every generate of the tiny Llama answers by `script`; returns (model folder, the prompts it was asked)."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    folder = make_tiny_bytes_model(tmp_path / "tiny")
    tok = AutoTokenizer.from_pretrained(folder)
    asked = []

    def generate(self, input_ids=None, attention_mask=None, generation_config=None, num_return_sequences=None,
                 do_sample=None, **kwargs):
        n = num_return_sequences or 1
        sampled = do_sample if do_sample is not None else bool(generation_config and generation_config.do_sample)
        rows = input_ids.repeat_interleave(n, dim=0)
        texts = []
        for i, row in enumerate(rows):
            prompt = tok.decode(row, skip_special_tokens=True)
            asked.append(prompt)
            texts.append(script(prompt, i, sampled))
        ids = [tok(t, add_special_tokens=False).input_ids + [tok.eos_token_id] for t in texts]
        width = max(map(len, ids))
        out = torch.full((len(ids), width), tok.pad_token_id, dtype=rows.dtype)
        for i, x in enumerate(ids):
            out[i, :len(x)] = torch.tensor(x)
        return torch.cat([rows, out], dim=1)

    monkeypatch.setattr(LlamaForCausalLM, "generate", generate)
    return folder, asked


def tiny_project(tmp_path: Path, model: Path, **rubricarm) -> Path:
    rubrics = tmp_path / "rubrics" / "tiny"
    rubrics.mkdir(parents=True)
    (rubrics / "set.yaml").write_text("format: focal\nfile: prompts.yaml\n")
    (rubrics / "prompts.yaml").write_text(yaml.safe_dump([
        {"id": pid, "split": "train", "prompt": text,
         "criteria": [{"id": "sun", "text": "The answer mentions the sun.", "weight": 2, "check": {"contains_any": ["sun"]}},
                      {"id": "relevant", "text": "The answer is about the question.", "weight": 1}]}
        for pid, text in PROMPTS.items()]))
    raw = {"base": {"rubric_set": "tiny"},
           "paths": {"rubrics": str(tmp_path / "rubrics"), "base_model": str(model),
                     **{k: str(tmp_path / v) for k, v in {
                         "rollout_cache": "cache/rollouts.sqlite", "rubricarm_pairs": "data/pairs.parquet",
                         "rubricarm_generator": "models/rubricarm/generator", "rubricarm_judge": "models/rubricarm/judge",
                         "rubricarm_report": "metrics/rubricarm.json", "rubricarm_work": "checkpoints/rubricarm"}.items()}},
           "rollouts": {"backend": "transformers", "num_generations": 4, "max_tokens": 8},
           "rubricgen": {"source_set": "tiny", "min_criteria": 2, "max_criteria": 3},
           "rubricarm": {"enabled": True, "rounds": 2, "steps_per_phase": 2, "group_size": 4, "pairs_per_step": 1,
                         "learning_rate": 1e-2, "lora_r": 4, "lora_layers": 1, "judge_max_tokens": 64,
                         "rubric_max_tokens": 64, **rubricarm}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_two_alternating_rounds_through_the_stage_with_hand_worked_rewards(tmp_path, scripted):
    from safetensors.torch import load_file

    from stages import rubricarm

    model, asked = scripted
    params = load_params(tiny_project(tmp_path, model))
    rubricarm.run(params)
    report = json.loads((tmp_path / "metrics/rubricarm.json").read_text())
    assert sorted(report) == ["enabled", "pairs", "r0_untrained", "r1_generator", "r1_judge", "r2_generator",
                              "r2_judge", "work"]
    assert report["pairs"] == {"train": 8, "heldout": 4, "prompts": 3}  # 3 prompts x 4 pairs; 1 prompt held out
    pairs = pd.read_parquet(tmp_path / "data/pairs.parquet")
    assert pairs.chosen.str.contains("sun").all() and not pairs.rejected.str.contains("sun").any()
    for r in (1, 2):
        judge, gen = report[f"r{r}_judge"], report[f"r{r}_generator"]
        # judge phase, one pair a step: the trainee judges the chosen response 4 times (right, right, inverted,
        # malformed) and the rejected one likewise: 2/4 + 0.1, 2/4 + 0.1, 0 + 0.1, 0 for each side
        assert judge["train/rewards"] == [pytest.approx([0.6, 0.6, 0.1, 0.0] * 2)] * 2
        assert judge["train/generated_rubrics"] == 8 and judge["train/pairs"] == 8
        assert judge["train/well_formed"] == 0.75 and gen["train/valid_rubrics"] == 0.75  # 3 of 4 each
        # generator phase: rubrics NORMAL, BACKWARDS, not JSON, NORMAL; the frozen judge (greedy) decides right
        # with NORMAL (accuracy 1), inverted with BACKWARDS (0); an invalid rubric gets 0
        assert gen["train/rewards"] == [[1.0, 0.0, 0.0, 1.0]] * 2
    for phase in ("r0_untrained", "r1_judge", "r1_generator", "r2_judge", "r2_generator"):
        f = report[phase]
        assert f["heldout/pairs"] == 4 and f["heldout/accuracy"] == 1.0 and f["heldout/judge_accuracy"] == 1.0
        assert f["heldout/rubric_valid"] == 1.0 and f["heldout/decided"] == 1.0 and f["judge/well_formed"] == 1.0
        # the judge answers the held-out prompt's checked criterion (sun) on its 4 rollouts as the check does
        assert (f["agreement/n"], f["agreement/overall"], f["agreement/kappa"]) == (4, 1.0, 1.0)
    assert report["r0_untrained"].get("train/rewards") is None
    before = load_file(model / "model.safetensors")
    for name in ("generator", "judge"):
        after = load_file(tmp_path / "models/rubricarm" / name / "model.safetensors")
        assert any(not before[k].equal(after[k]) for k in before), f"GRPO changed no weight of the {name}"
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


def test_greedy_generation_asks_each_distinct_chat_once(scripted):
    from focal.training.rubricarm import generate, load_model

    folder, asked = scripted
    a, b = ({"role": "user", "content": "Name a star."},), ({"role": "user", "content": "Name a dog."},)
    assert generate(*load_model(folder), [a, b, a], 8) == [RESPONSES[0], RESPONSES[1], RESPONSES[0]]
    assert len(asked) == 2


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
