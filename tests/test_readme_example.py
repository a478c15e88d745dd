"""The README's "FocalReward in your own TRL script" example, run as written: one GRPO step on a tiny model against
a loopback judge. Only what a CPU test needs is changed: the judge's URL, the model (a tiny random one), the
rubric folder's absolute path, and GRPOConfig's CPU settings (one step, short completions)."""

from pathlib import Path

from fake_openai import FakeOpenAI
from tiny import make_tiny_model

ROOT = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("```python\n", text.index("## FocalReward in your own TRL script")) + len("```python\n")
    return text[start:text.index("```", start)]


def test_the_readme_example_is_about_ten_lines_of_public_names():
    code = readme_example()
    lines = [line for line in code.splitlines() if line.strip()]
    assert len(lines) <= 12, code
    assert "from focal import FocalReward, OpenAIJudge, load_rubric_set" in code
    assert "params.yaml" not in code and "focal." not in code  # no config file, no private modules


def test_the_readme_example_trains_one_step_against_a_loopback_judge(tmp_path, monkeypatch):
    import trl

    tiny = make_tiny_model(tmp_path / "tiny")
    real = trl.GRPOConfig
    monkeypatch.setattr(trl, "GRPOConfig", lambda **kw: real(**{
        **kw, "output_dir": str(tmp_path / "out"), "use_cpu": True, "bf16": False, "max_steps": 1,
        "max_completion_length": 8, "report_to": "none", "save_strategy": "no", "logging_steps": 1}))
    monkeypatch.chdir(tmp_path)  # the example's cache file lands here
    with FakeOpenAI(models=("my-judge",)) as server:
        code = (readme_example().replace("http://127.0.0.1:8000/v1", server.base_url)
                .replace('"HuggingFaceTB/SmolLM2-135M-Instruct"', repr(str(tiny)))
                .replace('load_rubric_set("rubrics/default")', f'load_rubric_set({str(ROOT / "rubrics" / "default")!r})'))
        assert server.base_url in code and str(tiny) in code  # the substitutions took
        namespace: dict = {}
        exec(compile(code, "README.md", "exec"), namespace)
        calls = server.calls
    assert namespace["trainer"].state.global_step == 1
    assert calls > 0 and server.model_lists == 1  # the judge was asked; its identity fetched once
    assert (tmp_path / "judge.sqlite").exists()
    logged = namespace["trainer"].state.log_history[0]
    assert any(k.startswith("criteria/") and k.endswith("/weight") for k in logged), sorted(logged)
