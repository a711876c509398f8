"""The ``cb report`` section for ``cb attack`` folders: a table per attack and its loss curves.

An attack folder is any folder holding ``results.json`` and ``loss_curves.json``: the run folder
itself or one level below it (``RUN/attack_base_embedding/`` ...). Nothing found, nothing shown.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

__all__ = ["attack_dirs", "attack_section", "plot_curves"]


def attack_dirs(run_dir: str | Path) -> list[Path]:
    root = Path(run_dir)
    cands = [root, *sorted(p for p in root.iterdir() if p.is_dir())] if root.is_dir() else []
    return [
        p for p in cands if (p / "loss_curves.json").is_file() and (p / "results.json").is_file()
    ]


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def plot_curves(curves: dict[str, list[float]], title: str) -> bytes | None:
    """One line per prompt: target loss against optimisation step (PNG), or None without
    matplotlib or curves."""
    if not curves:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for values in curves.values():
        ax.plot(range(len(values)), values, alpha=0.5, linewidth=1)
    ax.set_xlabel("step")
    ax.set_ylabel("target loss")
    ax.set_yscale("log")
    ax.set_title(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def attack_section(run_dir: str | Path) -> str:
    """HTML for every attack folder in ``run_dir`` ("" when there is none)."""
    parts = []
    for d in attack_dirs(run_dir):
        res = _read(d / "results.json") or {}
        curves = (_read(d / "loss_curves.json") or {}).get("curves") or {}
        cfg = res.get("config", {})
        name = d.name if d != Path(run_dir) else "attack"
        rows = []
        for suite, m in (res.get("suites") or {}).items():
            ci = m.get("attack_success_rate_ci95") or [None, None]
            rows.append(
                "<tr>"
                + "".join(
                    f"<td>{html.escape(str(x))}</td>"
                    for x in (
                        suite,
                        m.get("n"),
                        m.get("attack_success_rate"),
                        f"[{ci[0]}, {ci[1]}]",
                        m.get("mean_steps_to_success"),
                        m.get("mean_final_loss"),
                    )
                )
                + "</tr>"
            )
        head = "".join(
            f"<th>{h}</th>"
            for h in ("suite", "n", "attack success", "95% CI", "steps to success", "final loss")
        )
        budget = html.escape(json.dumps(cfg.get("budget"), ensure_ascii=False))
        parts.append(
            f"<h3>{html.escape(name)}: {html.escape(str(cfg.get('attack')))} "
            f"({html.escape(str(cfg.get('constraint')))}), adapter "
            f"{html.escape(str(res.get('adapter')))}</h3><p>budget {budget}</p>"
            f"<table><tr>{head}</tr>{''.join(rows)}</table>"
        )
        png = plot_curves(curves, f"{name}: target loss per prompt")
        if png:
            data = base64.b64encode(png).decode()
            parts.append(f'<img alt="loss curves" src="data:image/png;base64,{data}">')
    return "<h2>Adaptive attacks</h2>" + "".join(parts) if parts else ""
