"""``ExperimentalConfig``: :class:`~.config.CircuitBreakerConfig` plus the knobs kept for research.

These settings served sweeps (``benchmarks/sweeps/``, ``docs/experiments/``) and are not part of
the recommended recipe; they live here so the product config stays small. ``cb train``,
``cb demo`` and the YAML presets accept them (they parse this class), and the trainer reads
them through :func:`knob`, which gives the default when it is handed a plain
:class:`~.config.CircuitBreakerConfig`.

* ``retain_full_sequence``: retain loss on every token of the retain samples.
* ``lora_skip_massive_inputs``: keep the ``lora_A`` columns that read the massive dims at zero.
* ``alpha_decay``: a linear decay of ``cs`` in the ``single`` schedule.
* ``reroute_variant: cosine_normalized``: cosine after an RMS normalisation per dim.
* ``reroute_variant: angle`` / ``angle_no_massive``: the angle instead of the cosine, whose
  gradient does not vanish at the start (see :mod:`.losses`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

from circuit_breakers.training.config import CircuitBreakerConfig

ExperimentalRerouteVariant = Literal[
    "cosine", "cosine_no_massive", "cosine_normalized", "angle", "angle_no_massive"
]


@dataclass
class ExperimentalConfig(CircuitBreakerConfig):
    reroute_variant: ExperimentalRerouteVariant = field(
        default="cosine",
        metadata={
            "help": "cosine | cosine_no_massive | cosine_normalized | angle | angle_no_massive "
            "(the last three experimental; see "
            "training/losses.py)."
        },
    )
    retain_full_sequence: bool = field(
        default=False,
        metadata={
            "help": "Experimental. Retain loss on every token of the retain samples (system, "
            "request, tool outputs and assistant turns), as the reference implementation does; the "
            "harmful side keeps its assistant-span mask. False = assistant spans only (the default "
            "policy)."
        },
    )
    lora_skip_massive_inputs: bool = field(
        default=False,
        metadata={
            "help": "Experimental. Zero the lora_A columns that read the massive dims (the dims "
            "the *_no_massive losses leave out; detected on the first batch unless massive_dims is "
            "set) in the modules that read the normed residual stream (q/k/v/gate/up projections), "
            "and keep them zero. Such a dim is near-constant over tokens, so through it the adapter "
            "can add the same shift to every token, benign ones included. Saved adapters need "
            "nothing extra at load time (the zeros are in the weights)."
        },
    )
    alpha_decay: float = field(
        default=0.0,
        metadata={"help": "Experimental; single only: cs = alpha * (1 - alpha_decay * progress)."},
    )


#: the fields :class:`ExperimentalConfig` adds, with their defaults
EXPERIMENTAL_DEFAULTS: dict[str, Any] = {
    f.name: f.default
    for f in fields(ExperimentalConfig)
    if f.name not in {g.name for g in fields(CircuitBreakerConfig)}
}


def knob(cfg: CircuitBreakerConfig, name: str) -> Any:
    """An experimental setting of ``cfg``, or its default when ``cfg`` does not have it."""
    return getattr(cfg, name, EXPERIMENTAL_DEFAULTS[name])
