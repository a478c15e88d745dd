"""Rollouts: the transformers backend on a tiny model (schema, ids, resumption); the vLLM path on a fake server."""

import pandas as pd
import pytest

from fake_openai import FakeOpenAI
from focal.config import Rollouts
from focal.core.cache import Cache
from focal.rubrics.sets import Criterion, Item
from focal.serving.rollouts import COLUMNS, OpenAIBackend, Sampling, TransformersBackend, rollout_id, sample_rollouts
from tiny import make_tiny_model

ITEMS = [Item(f"p{i}", f"why is the sun {w}", (Criterion("c", "t"),)) for i, w in enumerate(["green", "good", "short"])]


class Counting:
    """Wraps a backend and counts the prompts it was asked to sample."""

    def __init__(self, inner):
        self.inner, self.prompts = inner, 0

    def sample(self, chats, sampling):
        self.prompts += len(chats)
        return self.inner.sample(chats, sampling)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return TransformersBackend(make_tiny_model(tmp_path_factory.mktemp("tiny")))


def test_transformers_backend_table_schema_and_ids(tiny):
    s = Sampling(n=3, max_tokens=8, seed=7)
    df = sample_rollouts(ITEMS, tiny, s, "tiny@1")
    assert list(df.columns) == COLUMNS and len(df) == 9
    assert df.rollout_id.is_unique
    row = df.iloc[4]
    assert row.rollout_id == rollout_id("tiny@1", row.prompt_id, 7, row.sample_index, row.completion)
    assert set(df.finish_reason) <= {"stop", "length"} and (df.completion_tokens <= 8).all()
    again = sample_rollouts(ITEMS, tiny, s, "tiny@1")
    pd.testing.assert_frame_equal(df, again)  # same seed, same samples


def test_resumption_samples_only_what_is_missing(tiny, tmp_path):
    s = Sampling(n=2, max_tokens=6, seed=1)
    cache = Cache(tmp_path / "r.sqlite")
    first = Counting(tiny)
    sample_rollouts(ITEMS[:2], first, s, "tiny@1", cache, chunk=1)  # a run that stopped after two prompts
    resumed = Counting(tiny)
    df = sample_rollouts(ITEMS, resumed, s, "tiny@1", cache, chunk=1)
    assert (first.prompts, resumed.prompts) == (2, 1)
    pd.testing.assert_frame_equal(df, sample_rollouts(ITEMS, tiny, s, "tiny@1"))
    assert Counting(tiny).prompts == 0 and cache.count() == 3


def test_openai_backend_asks_for_n_with_the_sampling_settings():
    with FakeOpenAI() as server:
        backend = OpenAIBackend(server.base_url, "policy", Rollouts(concurrency=2, backoff_s=0.01))
        out = backend.sample([it.chat() for it in ITEMS], Sampling(n=1, temperature=0.7, top_p=0.9, max_tokens=5, seed=3))
    assert len(out) == 3 and all(len(c) == 1 for c in out)
    body = server.requests[0]
    assert (body["n"], body["temperature"], body["top_p"], body["max_tokens"], body["seed"]) == (1, 0.7, 0.9, 5, 3)
    assert body["messages"][0]["role"] == "user"


def test_a_dead_or_failing_policy_endpoint_is_one_line_naming_url_and_param():
    """Before: a 120-line traceback. Now: a ValueError (the stage prints it as one `error:` line)."""
    from focal.serving.server import free_port

    dead = f"http://127.0.0.1:{free_port()}/v1"
    backend = OpenAIBackend(dead, "policy", Rollouts(max_retries=1, backoff_s=0.01), "serve.base_url")
    with pytest.raises(ValueError, match=f"serve.base_url {dead} refused the connection"):
        backend.sample([it.chat() for it in ITEMS], Sampling(n=2, max_tokens=4))
    with FakeOpenAI(always="500") as server:
        backend = OpenAIBackend(server.base_url, "policy", Rollouts(max_retries=1, backoff_s=0.01))
        with pytest.raises(ValueError, match=r"serve.base_url http://127.0.0.1:\d+/v1: sampling failed after 1 "
                                             r"retries \(server_error"):
            backend.sample([ITEMS[0].chat()], Sampling(n=2, max_tokens=4))
