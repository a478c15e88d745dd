"""A judge's spec: everything that says which judge answers and how, built once per stage and passed whole.

    spec = JudgeSpec.from_params(params, template)      # the judge.* section's judge, paths.judge_cache
    spec.for_audit(params.audit)                        # the audit's judge (audit.source endpoint)
    spec.for_member(params.ensemble.members[0], 0)      # an ensemble member
    with open_judge(spec) as judge: ...                 # focal/judging/judge.py: endpoint, identity, cache

A spec holds the endpoint (`cfg.base_url`, or the local vLLM server: `serve` with `local_model`), the model, the
mode, the decoding and bounds (`cfg`, judge.*-shaped), the template, the cache path, and `source`: the params knob
that set the endpoint, which every message about it names (judge.base_url, audit.base_url,
ensemble.members[1].base_url). It is frozen and holds its own copy of the sections it was built from, so
changing params afterwards changes no spec; another judge is another spec (for_audit, for_member), never a
section edited in place. Its mode is checked when it is built: an unknown judge.mode fails before any work.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from focal.config import Judge as JudgeConfig
from focal.config import Serve
from focal.judging.modes import get_mode
from focal.serving.endpoints import judge_identity


@dataclass(frozen=True)
class JudgeSpec:
    """Which judge answers and how (see the module docstring); open it with focal.judging.judge.open_judge."""

    cfg: JudgeConfig  # the judge.* section, this judge's own copy: base_url, model, api_key_env, mode, decoding, bounds
    template: str | None = None  # the judge template (the stage's paths.judge_template); None: Focal's default
    cache_path: str = ""  # the verdict cache (paths.judge_cache); "": no cache
    local_model: str = ""  # what the local vLLM server serves when cfg.base_url is empty (paths.judge_model)
    serve: Serve | None = None  # the local server's settings (the serve.* section), this spec's own copy
    source: str = "judge.base_url"  # the params knob that set the endpoint (base_url, model, api_key_env beside it)

    def __post_init__(self):
        get_mode(self.cfg.mode)  # an unknown judge.mode lists the valid ones, before any work
        object.__setattr__(self, "cfg", dataclasses.replace(self.cfg))
        if self.serve is not None:
            object.__setattr__(self, "serve", dataclasses.replace(self.serve))

    @classmethod
    def from_params(cls, params, template: str | None, cache: bool = True) -> "JudgeSpec":
        """The configured judge (judge.*, serve.*, paths.judge_model) with `template`; cache=False: no cache (the
        benchmarks that time calls)."""
        p = params.paths
        return cls(params.judge, template, p.judge_cache if cache else "", p.judge_model, params.serve)

    def for_audit(self, audit) -> "JudgeSpec":
        """The audit's judge (audit.source 'endpoint'): audit.base_url, audit.model and audit.api_key_env, with this
        judge's mode, decoding, bounds, template and cache (its own identity, so its own cache keys)."""
        return self._at(audit.base_url, audit.model, audit.api_key_env, "audit.base_url")

    def for_member(self, member: dict, i: int) -> "JudgeSpec":
        """Ensemble member `i` (ensemble.members[i]: its base_url, model and API key, default judge.api_key_env),
        with this judge's mode, decoding, bounds, template and cache."""
        return self._at(member["base_url"], member["model"], member.get("api_key_env") or self.cfg.api_key_env,
                        f"ensemble.members[{i}].base_url")

    def _at(self, base_url: str, model: str, api_key_env: str, source: str) -> "JudgeSpec":
        cfg = dataclasses.replace(self.cfg, base_url=base_url, model=model, api_key_env=api_key_env)
        return dataclasses.replace(self, cfg=cfg, source=source)

    def identity(self) -> str:
        """What answers as this judge (focal.serving.endpoints.judge_identity): fetched (GET /models at a remote
        endpoint, bounded by judge.timeout_s), so call it once per stage; open_judge takes it."""
        return judge_identity(self.cfg, self.local_model, self.source)
