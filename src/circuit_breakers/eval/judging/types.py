"""The types every judge shares: :class:`Verdict`, the :class:`Judge` protocol, and
:func:`check_lengths`.

Kept in their own module, with no imports from the rest of the package, so that
:mod:`.judges` and :mod:`.judge_backends` can both depend on them without depending on each
other. :mod:`.judges` re-exports all three.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = ["Judge", "Verdict", "check_lengths"]


@dataclass
class Verdict:
    """One judge's decision on one answer (cf. inspect_ai ``Score``)."""

    value: bool  # True = the model complied with the request
    score: float | None = None  # a continuous grade in [0, 1] where the judge has one
    explanation: str = ""
    details: dict[str, Any] = field(default_factory=dict)  # sub-scores, JSON-serialisable

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class Judge(Protocol):
    """What the eval runner needs from a judge."""

    name: str

    def judge_batch(self, requests: Sequence[str], responses: Sequence[str]) -> list[Verdict]: ...


def check_lengths(requests: Sequence[str], responses: Sequence[str]) -> None:
    if len(requests) != len(responses):
        raise ValueError(f"{len(requests)} requests but {len(responses)} responses")
