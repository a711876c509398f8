"""``CircuitBreakerConfig``: the training settings, as ``transformers.TrainingArguments`` plus the
circuit-breaker fields. Every field has help text, which ``cb train --help`` prints.

Settings come in three layers, later ones winning: a preset (``--preset NAME``, YAML files in
``circuit_breakers/configs/``), a user YAML (``--config FILE``), then command-line flags.
Unknown YAML keys are errors that name the file, the line and the key.

Layer numbering: target layer ``l`` is the output of decoder block ``l - 1``
(``hidden_states[l]`` in Hugging Face's ``output_hidden_states`` convention, where index 0 is
the embeddings), captured with a forward hook *before* the final norm. LoRA layers are decoder
block indices (0-based). With ``truncate_layers`` the blocks after the highest target layer
are dropped, so LoRA may only sit on blocks ``0 .. max(target_layers) - 1``.
"""

from __future__ import annotations

import functools
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

from transformers import HfArgumentParser, TrainingArguments

from circuit_breakers.core.errors import InputError
from circuit_breakers.core.fileio import read_yaml
from circuit_breakers.core.schema import DEFAULT_CLASS_WEIGHTS

LossWeighting = Literal["single", "dual_paper", "dual"]
RerouteVariant = Literal["cosine", "cosine_no_massive"]
RetainVariant = Literal["l2", "l2_relative", "l2_no_massive", "l2_relative_no_massive"]
RetainSampling = Literal["uniform", "weighted"]


@dataclass
class CircuitBreakerConfig(TrainingArguments):
    # -- what to train ----------------------------------------------------------------------
    model: str = field(
        default="default",
        metadata={
            "help": "Hugging Face id, local folder, .gguf file, or 'default' (embedded SmolLM2-135M-Instruct)."
        },
    )
    train_file: str | None = field(
        default=None,
        metadata={
            "help": "JSONL of samples (split=harmful rows form Ds, split=retain rows form Dr)."
        },
    )
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Let the model's own Python code run (off unless asked for)."},
    )
    # -- where the losses look ---------------------------------------------------------------
    target_layers: list[int] = field(
        default_factory=lambda: [10, 20],
        metadata={
            "help": "Layers whose hidden states are rerouted/retained: layer l = output of decoder block l-1 (hidden_states[l])."
        },
    )
    truncate_layers: bool = field(
        default=True,
        metadata={
            "help": "Drop the decoder blocks after the highest target layer (they cannot affect the loss)."
        },
    )
    mask_prompt_tokens: bool = field(
        default=True,
        metadata={
            "help": "Loss only on the assistant span(s) (the default loss masking policy). False puts loss on every non-pad token, deliberately."
        },
    )
    prompt_tail_tokens: int = field(
        default=0,
        metadata={
            "help": "Also put the loss on the last N prompt tokens before the first assistant "
            "span (the end of the request, or of the tool result carrying an injection, and the "
            "assistant header), in both splits: rerouted on harmful samples, retained on the "
            "others. The reference implementation reroutes request and response; 0 = assistant "
            "spans only (the default policy)."
        },
    )
    max_prompt_tokens: int = field(
        default=512, metadata={"help": "Cut prompts from the left to this many tokens."}
    )
    max_completion_tokens: int = field(
        default=512, metadata={"help": "Cut completions from the right to this many tokens."}
    )
    # -- LoRA --------------------------------------------------------------------------------
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA alpha (scale = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
        metadata={"help": "Module names that get LoRA."},
    )
    lora_layers: list[int] | None = field(
        default=None,
        metadata={
            "help": "Decoder block indices (0-based) that get LoRA; default: every block below the highest target layer."
        },
    )
    lora_init_b_std: float = field(
        default=1e-3,
        metadata={
            "help": "Init lora_B ~ N(0, std) instead of 0. With B = 0 the rerouted state equals the frozen one, where cosine and L2 have zero gradient; in fp32 training never starts. 0 = PEFT default."
        },
    )
    # -- objective ---------------------------------------------------------------------------
    loss_weighting: LossWeighting = field(
        default="dual",
        metadata={
            "help": "Coefficient schedule: single (alpha(t)*L_rr + L_ret), dual_paper (cs=a(1-t/2T), cr=a*t/2T), dual (reference stage-2 form: cs=a*max(0,1-p/2), cr=0.5+0.5p)."
        },
    )
    alpha: float = field(
        default=10.0, metadata={"help": "alpha / alpha_max of the coefficient schedule."}
    )
    reroute_variant: RerouteVariant = field(
        default="cosine",
        metadata={"help": "cosine | cosine_no_massive (see training/losses.py)."},
    )
    retain_variant: RetainVariant = field(
        default="l2",
        metadata={
            "help": "l2 | l2_relative | l2_no_massive | l2_relative_no_massive (see training/losses.py)."
        },
    )
    massive_dims: list[int] | None = field(
        default=None,
        metadata={
            "help": "Hidden dims removed by the *_no_massive variants; default: detected once on the first batch."
        },
    )
    # -- mixture -----------------------------------------------------------------------------
    sample_weights: dict = field(
        default_factory=lambda: dict(DEFAULT_CLASS_WEIGHTS),
        metadata={
            "help": "Per priority-class loss weights (the default class-weight table, schema.DEFAULT_CLASS_WEIGHTS); a sample's own 'weight' overrides."
        },
    )
    retain_sampling: RetainSampling = field(
        default="uniform",
        metadata={
            "help": "uniform: every retain sample equally often, class weights scale the loss; weighted: stratified sampling in proportion to class weights, loss weights 1."
        },
    )
    curriculum: bool = field(
        default=False,
        metadata={
            "help": "Change class weights by phase (below 30%% of training: stability, below 70%%: balanced, then adversarial)."
        },
    )
    # -- checks and export -------------------------------------------------------------------
    merge: bool = field(
        default=False,
        metadata={
            "help": "Also write OUT/merged: the full model with the adapter merged, dropped layers restored (safetensors)."
        },
    )
    resume: bool = field(
        default=False, metadata={"help": "Continue from the last checkpoint in OUT/checkpoints."}
    )
    # -- speed (see benchmarks/NOTES.md) -----------------------------------------------------
    packing: bool = field(
        default=False,
        metadata={
            "help": "Run the harmful and retain rows of a micro-batch as one packed row with no padding (variable-length flash attention on CUDA). Same losses as padded batches."
        },
    )
    compile_layers: bool = field(
        default=False,
        metadata={
            "help": "torch.compile each decoder block's forward (regional compilation, dynamic shapes); the first steps pay the compile time."
        },
    )
    lora_fast_path: bool = field(
        default=False,
        metadata={
            "help": "LoRA layers add s*B(Ax) inside the base matmul (addmm) and skip PEFT's float32 copy of x under bf16 autocast. Same losses within bf16 rounding; fewer memory passes."
        },
    )

    def __post_init__(self) -> None:
        for name, allowed in choice_fields(type(self)).items():
            value = getattr(self, name)
            if value not in allowed:
                raise InputError(
                    f"unknown {name} {value!r} (choose {', '.join(allowed)})", field=name
                )
        if not self.target_layers or any(layer < 1 for layer in self.target_layers):
            raise InputError(
                "target_layers must be >= 1 (layer 0 is the embedding output, which LoRA cannot change)",
                field="target_layers",
            )
        if self.prompt_tail_tokens < 0:
            raise InputError("prompt_tail_tokens must be >= 0", field="prompt_tail_tokens")
        unknown = sorted(set(self.sample_weights) - set(DEFAULT_CLASS_WEIGHTS))
        if unknown:
            raise InputError(
                f"unknown priority class {unknown[0]!r} in sample_weights", field="sample_weights"
            )
        if self.bf16 and not self.use_cpu:
            import torch

            if not (torch.cuda.is_available() and torch.cuda.is_bf16_supported()):
                raise InputError(
                    "bf16 needs a GPU that supports it; none is available here",
                    field="bf16",
                    hint="pass --bf16 false (and --use_cpu true) to train on this machine",
                )
        self.target_layers = sorted(set(self.target_layers))
        self.remove_unused_columns = False
        super().__post_init__()

    # -- checks that need the model ----------------------------------------------------------
    def resolve_layers(self, num_layers: int) -> list[int]:
        """Validate target/LoRA layers against the model; return the LoRA block indices."""
        bad = [layer for layer in self.target_layers if layer > num_layers]
        if bad:
            raise InputError(
                f"target layer {bad[0]} does not exist: the model has {num_layers} decoder blocks, so target layers are 1..{num_layers}",
                field="target_layers",
            )
        top = max(self.target_layers)
        lora = list(range(top)) if self.lora_layers is None else sorted(set(self.lora_layers))
        limit = top if self.truncate_layers else num_layers
        beyond = [b for b in lora if not 0 <= b < limit]
        if beyond:
            why = (
                f"truncate_layers keeps blocks 0..{top - 1} (highest target layer {top})"
                if self.truncate_layers
                else f"the model has blocks 0..{num_layers - 1}"
            )
            raise InputError(
                f"LoRA layer {beyond[0]} is beyond the last kept block: {why}", field="lora_layers"
            )
        return lora

    def cb_dict(self) -> dict:
        """The circuit-breaker fields (not the TrainingArguments ones), for logs and reports."""
        base = {f.name for f in fields(TrainingArguments)}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in base}


@functools.cache
def choice_fields(cls: type) -> dict[str, tuple[str, ...]]:
    """``{field: allowed values}`` for the ``Literal[...]`` fields of a config class (its own
    fields, not the ``TrainingArguments`` ones)."""
    base = {f.name for f in fields(TrainingArguments)}
    hints = typing.get_type_hints(cls)
    return {
        f.name: typing.get_args(hints[f.name])
        for f in fields(cls)
        if f.name not in base and typing.get_origin(hints[f.name]) is Literal
    }


def config_parser(cls: type, **kwargs) -> HfArgumentParser:
    """An ``HfArgumentParser`` for ``cls`` whose choice flags are checked by the config itself.

    ``HfArgumentParser`` turns a ``Literal`` field into argparse ``choices``, which would end
    ``cb train`` with argparse's own message; here the choices stay in the help and a bad value
    reaches ``__post_init__``, which names the field (exit 2), as a bad YAML value does."""
    parser = HfArgumentParser(cls, **kwargs)
    for action in parser._actions:
        if action.dest in choice_fields(cls) and action.choices:
            action.metavar = "{" + ",".join(map(str, action.choices)) + "}"
            action.choices = None
    return parser


def yaml_with_lines(path: str | Path) -> tuple[dict, dict[str, int]]:
    """Load a YAML mapping and the line of each top-level key (for error messages)."""
    data, node = read_yaml(path)
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise InputError("a config file must be a mapping of key: value", file=str(path))
    return data, {k.value: k.start_mark.line + 1 for k, _ in node.value}


def check_keys(data: dict, lines: dict[str, int], path: str, allowed: set[str]) -> None:
    for key in data:
        if key not in allowed:
            raise InputError(
                "unknown config key",
                file=path,
                line=lines.get(key),
                field=key,
                hint="see `cb train --help` for the keys",
            )
