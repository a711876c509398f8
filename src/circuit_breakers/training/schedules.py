"""Loss-coefficient schedules and curriculum weights: pure Python, no torch.

The total loss is ``cs * L_rr + cr * L_ret``. Every schedule here is a function of the
training progress ``p = optimizer_step / total_optimizer_steps`` clipped to ``[0, 1]``.
Progress counts OPTIMIZER steps, not micro-batches: the reference implementation advanced
its counter per micro-batch and divided by a hard-coded 300, so under gradient accumulation
(or any run length other than 150 steps) its schedule ran at the wrong speed.

Kinds (see :func:`coefficients`):

- ``single``: ``cs = alpha * (1 - alpha_decay * p)``, ``cr = 1``. The reference
  ``alpha(t) * L_rr + L_ret``; ``alpha_decay = 0`` keeps alpha constant.
- ``dual_paper``: ``cs = alpha * (1 - p / 2)``, ``cr = alpha * p / 2``, i.e. Zou et al.'s
  ``cs = alpha (1 - t / 2T)``, ``cr = alpha t / 2T``.
- ``dual``: the reference stage-2 form, ``cs = alpha * max(0, 1 - p / 2)``,
  ``cr = 0.5 + 0.5 p``. The reference recipe's comment "At step 300: cs=0.0" contradicts its
  own formula, which gives ``alpha / 2`` at ``p = 1`` (it only reaches 0 at twice the run
  length); we follow the formula.

The curriculum (the reference recipe's optional phase 2.5) reweights three classes in three
phases; the phase values are absolute weights, exactly as in the reference recipe (phase 2
equals the default base weights), and classes a phase does not name keep their base weight.
"""

from __future__ import annotations

import math

from circuit_breakers.core.schema import PriorityClass

KINDS: tuple[str, ...] = ("single", "dual_paper", "dual")

HARMFUL_CLASS = PriorityClass.harmful_flip.value

#: Phase boundaries in progress: phase 1 for p < 0.3, phase 2 for p < 0.7, else phase 3.
CURRICULUM_BOUNDARIES: tuple[float, float] = (0.3, 0.7)

#: The reference per-phase weights: 1 = stability, 2 = balanced, 3 = full adversarial density.
CURRICULUM_PHASES: dict[int, dict[str, float]] = {
    1: {"adversarial_safe": 1.0, "general_conversation": 1.5, "harmful_flip": 0.5},
    2: {"adversarial_safe": 2.0, "general_conversation": 0.8, "harmful_flip": 1.0},
    3: {"adversarial_safe": 2.5, "general_conversation": 0.5, "harmful_flip": 1.2},
}


def progress(step: int, total_steps: int) -> float:
    """``step / total_steps`` clipped to ``[0, 1]``; both count optimizer steps."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0 (optimizer steps), got {total_steps}")
    return min(1.0, max(0.0, step / total_steps))


def coefficients(
    kind: str, step: int, total_steps: int, alpha: float, alpha_decay: float = 0.0
) -> tuple[float, float]:
    """Return ``(cs, cr)``, the reroute and retain coefficients at optimizer step ``step``.

    ``alpha`` is the reroute strength (``alpha_max`` in the reference recipe); ``alpha_decay`` in
    ``[0, 1]`` is only used by ``single`` (the fraction of alpha lost by the end of the run).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown schedule kind {kind!r}; choose one of {', '.join(KINDS)}")
    if not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"alpha must be finite and >= 0, got {alpha}")
    if not 0.0 <= alpha_decay <= 1.0:
        raise ValueError(f"alpha_decay must be in [0, 1], got {alpha_decay}")
    if kind != "single" and alpha_decay != 0.0:
        raise ValueError(f"alpha_decay is only used by kind 'single', not {kind!r}")
    p = progress(step, total_steps)
    if kind == "single":
        return alpha * (1.0 - alpha_decay * p), 1.0
    if kind == "dual_paper":
        return alpha * (1.0 - p / 2.0), alpha * p / 2.0
    return alpha * max(0.0, 1.0 - p / 2.0), 0.5 + 0.5 * p


def curriculum_phase(progress: float) -> int:
    """1 for ``progress < 0.3``, 2 for ``progress < 0.7``, else 3."""
    if not math.isfinite(progress):
        raise ValueError(f"progress must be finite, got {progress}")
    first, second = CURRICULUM_BOUNDARIES
    if progress < first:
        return 1
    return 2 if progress < second else 3


def curriculum_weights(progress: float, base: dict[str, float]) -> dict[str, float]:
    """Class weights at ``progress``: ``base`` overridden by the current phase's weights."""
    return {**base, **CURRICULUM_PHASES[curriculum_phase(progress)]}
