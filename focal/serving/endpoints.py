"""The one owner of model endpoints: a ready judge or policy endpoint, and the identity of what answers.

    with judge_endpoint(cfg, serve, base_model, identity) as ep:   # judge.base_url, or the local vLLM server
        ...                                       # (only focal.judging.judge.open_judge calls it: the one way to a judge)
    with policy_endpoint(params.serve, client, "models/trained", name="trained") as ep:
        OpenAIBackend(ep.base_url, ep.model, client)     # client: the rollouts or evaluate section

An `Endpoint` is where to send requests (`base_url`, the `model` name to ask for)
and `identity`: what produces the answers, for cache keys and rollout ids.
- A server this module starts serves a folder: identity = the weights'
  fingerprint (focal.serving.weights.fingerprint), so two folders never share a key and
  the same weights under another path do.
- A remote endpoint (`judge.base_url`, `serve.base_url`): identity = its URL, the
  model name asked for, and the id and root that its `/v1/models` reports for that
  name (vLLM reports the served folder as `root`); that GET is bounded as a whole by
  the caller's `timeout_s` (judge.timeout_s for the judges, rollouts.timeout_s for a
  policy, rubricgen.timeout_s). A name the endpoint does not
  serve is an error that says how to serve it.
- Replicas of the judge (`judge.base_url: "http://a/v1,http://b/v1"`): every
  replica must report the same id and root for the model; identity = those, without
  the URLs (`remote-pool:name|id|root`), so adding or moving a replica keeps the
  cache. Replicas that disagree are refused, naming each URL and what it reports:
  one cache key for answers of two different models would poison the cache.

Stages, the reward, the CLI and the benchmarks all get endpoints here (a judge's
through focal.judging.judge.open_judge); nothing else decides "use this URL or start a server".
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

NO_ENDPOINT = "http://127.0.0.1:9/v1"  # never called: where nothing needs a model (checks, cache hits)


@dataclass(frozen=True)
class Endpoint:
    """An OpenAI-compatible endpoint: where (base_url), which model name to ask for, and what answers (identity)."""

    base_url: str
    model: str
    identity: str
    param: str = "serve.base_url"  # the params key a user fixes when this endpoint fails

    @property
    def base_urls(self) -> list[str]:
        """The replicas: base_url holds one URL or several separated by commas (judge.base_url)."""
        return split_urls(self.base_url)


def split_urls(text: str) -> list[str]:
    """'http://a/v1, http://b/v1' -> ['http://a/v1', 'http://b/v1'] (empty parts dropped)."""
    return [u.strip() for u in text.split(",") if u.strip()]


def served_models(base_url: str, api_key_env: str = "", timeout_s: float = 10.0, param: str = "endpoint") -> list[dict]:
    """The `data` list of GET <base_url>/models, bounded as a whole by timeout_s (a deadline, not a read timeout);
    ValueError naming the URL if it cannot be had in time."""
    from focal.serving.client import DeadlineExceeded, get_json, scrub

    try:
        listing = get_json(base_url.rstrip("/") + "/models", api_key_env, timeout_s)
        if not isinstance(listing, dict):
            raise ValueError(f"not a JSON object: {str(listing)[:80]!r}")
        return list(listing.get("data") or [])
    except (DeadlineExceeded, httpx.HTTPError, OSError, ValueError) as e:
        reason = scrub(str(e) or type(e).__name__, api_key_env)
        raise ValueError(f"{param} {base_url}: cannot list its models (GET /models: {reason}); check that the "
                         f"server is up, the URL ends in /v1 and the API key in ${api_key_env or '-'} is right") from None


def remote_identity(base_url: str, model: str, api_key_env: str, param: str, timeout_s: float = 10.0) -> str:
    """url|name|id|root of `model` at a remote endpoint; ValueError if the endpoint does not serve that name."""
    models = served_models(base_url, api_key_env, timeout_s, param)
    found = next((m for m in models if m.get("id") == model), None)
    if found is None:
        names = ", ".join(str(m.get("id")) for m in models) or "none"
        raise ValueError(f"{param} {base_url} serves no model named {model!r} (it serves: {names}); serve it under "
                         f"that name (vLLM: --served-model-name {model}, or --lora-modules {model}=<adapter>)")
    return f"remote:{base_url.rstrip('/')}|{model}|{found.get('id')}|{found.get('root', '')}"


def pool_identity(base_urls: list[str], model: str, api_key_env: str, param: str, timeout_s: float = 10.0) -> str:
    """remote_identity for one URL; for replicas, `remote-pool:name|id|root` that every replica reports alike,
    else a ValueError naming each replica and what it serves as `model`."""
    if len(base_urls) == 1:
        return remote_identity(base_urls[0], model, api_key_env, param, timeout_s)
    served = {u: remote_identity(u, model, api_key_env, param, timeout_s).split("|", 1)[1] for u in base_urls}
    if len(set(served.values())) > 1:
        listing = "; ".join(f"{u} serves {what!r}" for u, what in served.items())
        raise ValueError(f"{param}: the replicas do not serve the same model as {model!r} ({listing}); every replica "
                         "must serve the same weights under the same name (the judge cache is keyed by it): "
                         "remove the odd ones from " + param)
    return "remote-pool:" + next(iter(served.values()))


def local_identity(model_dir) -> str:
    from focal.serving.weights import fingerprint

    return f"weights:{fingerprint(model_dir)}"


def judge_identity(cfg, judge_model, param: str = "judge.base_url") -> str:
    """What answers as a judge (cfg: a judge.*-shaped section): the remote model at cfg.base_url (every replica
    alike), else the weights of judge_model (paths.judge_model: the base model, or rubricarm's trained judge).
    Fetched once per run: open_judge takes it."""
    if cfg.base_url:
        return pool_identity(split_urls(cfg.base_url), cfg.model, cfg.api_key_env, param, cfg.timeout_s)
    return local_identity(judge_model)


def model_folder(folder: str, param: str) -> str:
    """`folder` when it holds a model (config.json), else a ValueError saying how to get one there."""
    if not (Path(folder) / "config.json").is_file():
        raise ValueError(f"{param} is {folder}, which holds no model (no config.json): build it first (`dvc repro "
                         f"model`; rubricarm's models need rubricarm.enabled: true and `dvc repro rubricarm`), or set "
                         f"{param} to a model folder")
    return folder


@contextmanager
def judge_endpoint(cfg, serve, judge_model, identity: str, needed: bool = True, param: str = "judge.base_url"):
    """A judge's endpoint: cfg.base_url (remote), else the local vLLM server (`serve`) with judge_model
    (paths.judge_model). Called by focal.judging.judge.open_judge only (the one way to a judge).

    The local judge is paths.judge_model (the base model by default, or rubricarm's trained judge), whatever
    policy is being trained or evaluated. With needed=False (everything is a check or cached) no server is
    started and the endpoint is never called; its identity is still the judge's."""
    if cfg.base_url or not needed:
        yield Endpoint(cfg.base_url or NO_ENDPOINT, cfg.model, identity, param)
        return
    from focal.serving.server import serving

    with serving(serve, model_folder(judge_model, "paths.judge_model")) as url:
        yield Endpoint(url, serve.served_model_name, identity, "the local judge server (serve.*, logs in serve.log_dir)")


@contextmanager
def rubric_endpoint(params):
    """The rubric-generation model: rubricgen.base_url (remote), else the local vLLM server with paths.rubric_model
    (the base model, or rubricarm's trained generator)."""
    g = params.rubricgen
    if g.base_url:
        yield Endpoint(g.base_url, g.model, remote_identity(g.base_url, g.model, g.api_key_env, "rubricgen.base_url",
                                                            g.timeout_s), "rubricgen.base_url")
        return
    from focal.serving.server import serving

    folder = model_folder(params.paths.rubric_model, "paths.rubric_model")
    with serving(params.serve, folder) as url:
        yield Endpoint(url, params.serve.served_model_name, local_identity(folder),
                       "the local model server (serve.*, logs in serve.log_dir)")


@contextmanager
def policy_endpoint(serve, client, policy_dir: str, name: str | None = None):
    """A policy's endpoint: with serve.base_url, the model called `name` there (default serve.served_model_name;
    every policy must be served under its own name; client: the stage's client section, rollouts.* or evaluate.*,
    for the API key and the deadline), else a local vLLM server (`serve`) for policy_dir."""
    s = serve
    if s.base_url:
        name = name or s.served_model_name
        yield Endpoint(s.base_url, name, remote_identity(s.base_url, name, client.api_key_env, "serve.base_url",
                                                         client.timeout_s),
                       "serve.base_url")
        return
    from focal.serving.server import serving

    with serving(s, policy_dir) as url:
        yield Endpoint(url, s.served_model_name, local_identity(policy_dir),
                       "the local model server (serve.*, logs in serve.log_dir)")
