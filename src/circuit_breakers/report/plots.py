"""The report's PNGs: training curves and base-vs-trained bars (matplotlib, headless)."""

from __future__ import annotations

import io
import math

from circuit_breakers.core.runs import number_or_none

CURVES = (  # (title, metric keys) of the training-curve panels
    ("loss_rr", ("train/loss_rr",)),
    ("loss_ret", ("train/loss_ret",)),
    ("rr/cos_sim_mean", ("rr/cos_sim_mean",)),
    ("cs / cr", ("train/cs", "train/cr")),
    ("grad norm (before clipping)", ("train/grad_norm",)),
    ("ret/l2_mean", ("ret/l2_mean",)),
)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def plot_training(metrics: list[dict]) -> bytes | None:
    """Training curves, one panel per :data:`CURVES` entry with data; None without data."""
    panels = [(t, [k for k in keys if any(k in r for r in metrics)]) for t, keys in CURVES]
    panels = [(t, keys) for t, keys in panels if keys]
    if not panels:
        return None
    plt = _pyplot()
    cols = 3
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, (title, keys) in zip(axes.flat, panels):
        for key in keys:
            pts = [
                (r.get("step", i), r[key])
                for i, r in enumerate(metrics)
                if number_or_none(r.get(key)) is not None
            ]
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                marker="." if len(pts) < 30 else None,
                label=key,
            )
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    return _png(fig)


def plot_comparison(rows: list[dict]) -> bytes | None:
    """Base vs trained bars: one panel per metric, one bar pair per suite."""
    by_metric: dict[str, list[dict]] = {}
    for r in rows:
        by_metric.setdefault(r["metric"], []).append(r)
    if not by_metric:
        return None
    plt = _pyplot()
    cols = 3
    n = len(by_metric)
    fig, axes = plt.subplots(
        math.ceil(n / cols), cols, figsize=(4.6 * cols, 3.2 * math.ceil(n / cols)), squeeze=False
    )
    for ax, (metric, rs) in zip(axes.flat, by_metric.items()):
        x = range(len(rs))
        for side, key, color in ((-0.2, "base", "#8c8c8c"), (0.2, "trained", "#d62728")):
            vals = [r[key] if r[key] is not None else 0.0 for r in rs]
            bars = ax.bar([i + side for i in x], vals, width=0.4, label=key, color=color)
            labels = ["-" if r[key] is None else f"{r[key]:.2f}" for r in rs]
            ax.bar_label(bars, labels=labels, fontsize=7, padding=1)
        ax.set_xticks(list(x))
        ax.set_xticklabels([r["suite"] for r in rs], rotation=25, ha="right", fontsize=8)
        ax.set_title(metric, fontsize=10)
        if not metric.endswith("_nll"):
            ax.set_ylim(0, 1.15)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    return _png(fig)
