"""focal/training/grpo.py reaches into TRL's private API: the installed TRL is the one it was written for, and a TRL that
differs is caught before training, with a message naming the knob to turn off.

- the four GRPOTrainer methods FocalGRPOTrainer overrides take exactly the parameters focal/training/grpo.py passes, the
  attributes it reads exist, and the installed TRL is the version pyproject.toml pins;
- stand-ins for a TRL upgrade (a method renamed, a parameter added, an attribute renamed) fail the check, and
  building the trainer fails with a ValueError naming train.sampling_logps / train.trunk_cache; with both knobs
  off the trainer is TRL's own GRPOTrainer, which builds;
- benchmarks/grpo_step.py's timed methods are checked the same way.
What the reuses rely on TRL to do (the sampled log-probs equal TRL's pass, TRL's rule for when it computes them,
the trunk travelling with its rows through TRL's shuffle and split) is tests/test_grpo.py, whose assertions
name the knob too.
"""

import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from trl import GRPOTrainer

import focal.training.grpo
from focal.config import Train
from focal.rewards.reward import FocalReward
from focal.rubrics.sets import Check, Criterion, Item
from focal.training.grpo import KNOBS, TESTED_TRL, TRL_API, FocalGRPOTrainer, api_changes, check_trl
from focal.training.trainer import build_trainer
from tiny import make_tiny_model

ROOT = Path(__file__).parents[1]
SHORT = Criterion("short", "At most 5 words.", 1.0, "essential", check=Check("max_words", {"n": 5}), key="short")
ITEMS = [Item("p0", "why is the sun green", (SHORT,))]


def stand_in(**changed):
    """A stand-in for a future GRPOTrainer: TRL's methods as they are, with `changed` (name -> function, or None
    to remove the method) on top."""
    methods = {name: getattr(GRPOTrainer, name) for name in TRL_API}
    methods.update(changed)
    return type("GRPOTrainer", (), {k: v for k, v in methods.items() if v is not None})


def test_the_installed_trl_is_the_one_grpo_py_was_written_for():
    check_trl(api_changes(GRPOTrainer, TRL_API))  # raises, naming the knobs, if not
    train = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["train"]
    pin = next(Requirement(r) for r in train if Requirement(r).name == "trl")
    assert str(pin) == str(Requirement(TESTED_TRL)), "pyproject.toml's trl pin and focal/training/grpo.py's TESTED_TRL differ"
    assert pin.specifier.contains(version("trl")), f"trl {version('trl')} is installed; the pin is {pin}"


def test_a_renamed_method_fails_naming_the_knob():
    renamed = stand_in(_compute_loss=None, compute_loss_v2=GRPOTrainer._compute_loss)
    assert api_changes(renamed, TRL_API) == ["GRPOTrainer._compute_loss is gone"]
    with pytest.raises(ValueError, match=r"_compute_loss is gone\. train\.trunk_cache relies on it: set "
                                         r"train\.trunk_cache: false in params\.yaml"):
        check_trl(api_changes(renamed, TRL_API), ["train.trunk_cache"])


def test_a_changed_signature_fails_naming_both_knobs():
    def generate(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False, tools=None):
        pass

    changed = stand_in(_generate_single_turn=generate)
    [change] = api_changes(changed, TRL_API)
    assert change.startswith("GRPOTrainer._generate_single_turn takes (self, prompt_ids, images, multimodal_fields, "
                             "num_generations, has_tool_images=False, tools=None), not (")
    with pytest.raises(ValueError) as e:
        check_trl([change])
    assert "set train.sampling_logps: false and train.trunk_cache: false in params.yaml" in str(e.value)
    assert f"or install {TESTED_TRL}" in str(e.value)


def test_building_checks_trl_and_both_knobs_off_is_trls_own_trainer(tmp_path, monkeypatch):
    folder = str(make_tiny_model(tmp_path / "tiny"))
    reward = FocalReward({it.id: it for it in ITEMS}, aggregator="static")

    def build(**knobs):
        cfg = Train(max_steps=1, prompts_per_step=1, num_generations=2, max_completion_length=4, **knobs)
        return build_trainer(folder, ITEMS, reward, cfg, str(tmp_path / "out"), seed=0)

    assert type(build()) is FocalGRPOTrainer  # the defaults: both reuses on
    monkeypatch.setattr(focal.training.grpo, "TRL_ATTRIBUTES", (*focal.training.grpo.TRL_ATTRIBUTES, "rollout_fn"))  # renamed by TRL
    with pytest.raises(ValueError, match="a GRPOTrainer has no rollout_fn. train.sampling_logps relies on it"):
        build(trunk_cache=False)
    monkeypatch.delattr(GRPOTrainer, "_compute_loss")  # a TRL without the method
    with pytest.raises(ValueError, match="_compute_loss is gone. train.sampling_logps and train.trunk_cache rely"):
        build()
    trainer = build(sampling_logps=False, trunk_cache=False)
    assert type(trainer) is GRPOTrainer  # the knobs off: TRL as it is, whatever its private methods


def test_the_step_benchmark_checks_what_it_times():
    from benchmarks.grpo_step import timed_methods

    assert [name for _, name, _, _ in timed_methods()] == ["_generate", "_calculate_rewards",
                                                            "_get_per_token_logps_and_entropies", "backward"]
    gone = type("GRPOTrainer", (), {"_get_per_token_logps_and_entropies": GRPOTrainer._get_per_token_logps_and_entropies,
                                    "_calculate_rewards": GRPOTrainer._calculate_rewards,
                                    "generate_v2": GRPOTrainer._generate})
    with pytest.raises(RuntimeError, match="differ here: GRPOTrainer._generate is gone; update timed_methods"):
        timed_methods(trainer_cls=gone)


def test_the_knob_names_are_params_keys():
    for knob in KNOBS:
        section, key = knob.split(".")
        assert section == "train" and key in Train.__dataclass_fields__
