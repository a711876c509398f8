"""Training presets: the packaged YAML files under ``configs/`` (``cb train --preset NAME``)
and a user's ``--config`` file, merged in that order with every key checked against
:class:`~.experimental.ExperimentalConfig` (the product config plus the research knobs)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from circuit_breakers.core.errors import InputError
from circuit_breakers.training.config import check_keys, yaml_with_lines
from circuit_breakers.training.experimental import ExperimentalConfig

PRESET_DIR = Path(__file__).resolve().parents[1] / "configs"


def preset_path(name: str) -> Path:
    path = PRESET_DIR / f"{name}.yaml"
    if not path.exists():
        names = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
        raise InputError(f"unknown preset {name!r} (presets: {', '.join(names)})", field="preset")
    return path


def load_layers(preset: str | None, config_file: str | None) -> dict:
    """Merge preset then user YAML (both checked for unknown keys)."""
    allowed = {f.name for f in fields(ExperimentalConfig) if f.init}
    merged: dict = {}
    for path in [
        preset_path(preset) if preset else None,
        Path(config_file) if config_file else None,
    ]:
        if path is None:
            continue
        data, lines = yaml_with_lines(path)
        check_keys(data, lines, str(path), allowed)
        merged.update(data)
    return merged
