"""``cb demo``'s terminal summary: the table of ``summary.json`` as text."""

from __future__ import annotations

from typing import Any

from circuit_breakers.eval.targets import verdict
from circuit_breakers.pipeline.stages import fmt_seconds


def _cell(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def format_summary(summary: dict) -> str:
    """Per suite and metric base vs trained (and the target where there is one), then the
    sanity and time targets, the eval limits and the stage times."""
    targets = {(t["suite"], t["metric"]): t for t in summary["targets"]}
    head = ["suite", "metric", "base", "trained", "delta", "target", ""]
    body = []
    for r in summary["comparison"]:
        t = targets.get((r["suite"], r["metric"]))
        body.append(
            [
                r["suite"],
                r["metric"],
                _cell(r["base"]),
                _cell(r["trained"]),
                "-" if r["delta"] is None else f"{r['delta']:+.3f}",
                t["target"] if t else "",
                verdict(t["pass"], t["required"]) if t else "",
            ]
        )
    for t in summary["targets"]:
        if t["suite"] in ("sanity", "time"):
            s = summary.get("sanity") or {}
            value = (
                f"{s.get('coherent')}/{s.get('total')} coherent"
                + (f", facts {s['facts_right']}/{s['facts_asked']}" if s.get("facts_asked") else "")
                if t["suite"] == "sanity" and s
                else fmt_seconds(t["trained"])
                if t["suite"] == "time"
                else "-"
            )
            body.append([t["suite"], t["metric"], "", value, "", t["target"], verdict(t["pass"])])
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = [
        "  ".join(
            c.ljust(w) if k in (0, 1, 5, 6) else c.rjust(w)
            for k, (c, w) in enumerate(zip(row, widths))
        ).rstrip()
        for row in [head, *body]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    ev = summary["eval"]
    ns = ", ".join(f"{k} {v}" for k, v in ev["per_suite_n"].items())
    lines += [
        "",
        f"targets met: {summary['targets_met']}/{summary['targets_required']}",
        f"eval: config {ev['eval_config']}, limit {ev['limit'] or 'per suite'}, "
        f"max_new_tokens {ev['max_new_tokens']}, judge {ev['judge']}, dtype {ev['dtype']}"
        + (f"; n per suite: {ns}" if ns else ""),
        "stages: "
        + ", ".join(
            f"{s} {fmt_seconds(v['seconds'])}" + (" (skipped)" if v["status"] == "skipped" else "")
            for s, v in summary["stages"].items()
            if v["seconds"] is not None
        ),
        f"this run {fmt_seconds(summary['seconds']['this_run'])}; whole pipeline "
        f"{fmt_seconds(summary['seconds']['pipeline'])}; {summary['run_dir']}/summary.json"
        + (f"; report {summary['report']}" if summary.get("report") else ""),
    ]
    return "\n".join(lines)
