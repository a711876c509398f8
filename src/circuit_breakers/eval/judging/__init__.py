"""Judges: did an answer comply with the request? Built from a spec string by :func:`get_judge`.

* :mod:`.types`: :class:`Verdict`, the :class:`Judge` protocol (what the eval runner needs).
* :mod:`.text`: the offline default, refusal + coherence heuristics and an on-topic embedder.
* :mod:`.hf`: a local Hugging Face classifier (HarmBench-cls or LlamaGuard style).
* :mod:`.endpoint`: an OpenAI-compatible server grading with the StrongREJECT rubric.

Each backend depends on :mod:`.types` only; this module alone knows all of them.
"""

from __future__ import annotations

from circuit_breakers.core.errors import InputError
from circuit_breakers.eval.judging.endpoint import EndpointJudge, JudgeEndpointError
from circuit_breakers.eval.judging.hf import HFClassifierJudge
from circuit_breakers.eval.judging.text import ON_TOPIC_THRESHOLD, ComplianceJudge, OnTopicJudge
from circuit_breakers.eval.judging.types import Judge, Verdict, check_lengths

__all__ = [
    "ON_TOPIC_THRESHOLD",
    "ComplianceJudge",
    "EndpointJudge",
    "HFClassifierJudge",
    "Judge",
    "JudgeEndpointError",
    "OnTopicJudge",
    "Verdict",
    "check_lengths",
    "get_judge",
]


_SPEC_HINT = "use default | regex | hf:<model id or path> | endpoint:<url>#<model>"


def get_judge(spec: str) -> Judge:
    """Build a judge from its spec string (see the module docstring); unknown -> InputError."""
    spec = (spec or "").strip()
    if spec == "default":
        return ComplianceJudge(OnTopicJudge())
    if spec == "regex":
        return ComplianceJudge(None)
    kind, _, rest = spec.partition(":")
    if kind == "hf" and rest.strip():
        return HFClassifierJudge.from_spec(rest.strip())
    if kind == "endpoint":
        url, _, model = rest.rpartition("#")
        if not url.strip() or not model.strip():
            raise InputError(
                f"judge spec {spec!r} needs both a URL and a model", field="judge", hint=_SPEC_HINT
            )
        return EndpointJudge(url.strip(), model.strip())
    raise InputError(f"unknown judge {spec!r}", field="judge", hint=_SPEC_HINT)
