"""circuit_breakers: train circuit breakers (Representation Rerouting) into chat and tool-calling LLMs.

The public API, imported on first use (so ``import circuit_breakers.core.schema`` or ``cb --help``
does not load torch and transformers)::

    from circuit_breakers import CircuitBreakerConfig, CircuitBreakerTrainer, Sample
    from circuit_breakers import load_model_and_tokenizer
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "CircuitBreakerConfig": "circuit_breakers.training.config",
    "CircuitBreakerTrainer": "circuit_breakers.training.trainer",
    "Sample": "circuit_breakers.core.schema",
    "load_model_and_tokenizer": "circuit_breakers.core.models",
}
__all__ = [
    "CircuitBreakerConfig",
    "CircuitBreakerTrainer",
    "Sample",
    "__version__",
    "load_model_and_tokenizer",
]

if TYPE_CHECKING:
    from circuit_breakers.core.models import load_model_and_tokenizer
    from circuit_breakers.core.schema import Sample
    from circuit_breakers.training.config import CircuitBreakerConfig
    from circuit_breakers.training.trainer import CircuitBreakerTrainer


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'circuit_breakers' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
