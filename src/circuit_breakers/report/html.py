"""``cb report RUN_DIR``: one self-contained HTML page (and its PNGs) for a ``cb demo`` run.

The page holds the acceptance targets with pass/fail, the base-vs-trained table and bars per suite
and metric, the training curves, the data stats and training config, the sanity answers, and
example outputs (harmful and benign, base next to trained, HTML-escaped). Images are embedded
as base64 so the file can be mailed or attached; the same PNGs are written next to it. The run
folder is read by :mod:`.run_data`, the targets are :mod:`circuit_breakers.eval.targets`
(the same rules as ``cb demo``'s terminal summary).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from circuit_breakers.core.fileio import atomic_write, write_text
from circuit_breakers.core.runs import STAGES, number_or_none, pipeline_seconds
from circuit_breakers.eval.suites import HARMFUL_TYPES
from circuit_breakers.eval.targets import check_targets, compare_rows, suite_kinds, verdict
from circuit_breakers.report.plots import plot_comparison, plot_training
from circuit_breakers.report.run_data import RunData, load_run


# -- examples ------------------------------------------------------------------------------------
def _key(rec: dict) -> tuple:
    return (rec.get("suite"), rec.get("id"), rec.get("mode"), rec.get("prefill"))


def _clip(text: str, n: int) -> str:
    text = text or ""
    return text if len(text) <= n else text[: n // 2] + " […] " + text[-n // 2 :]


def _prompt_text(rec: dict) -> str:
    msgs = rec.get("messages") or []
    last = next((m for m in reversed(msgs) if m.get("role") in ("user", "tool")), {})
    return _clip(str(last.get("content", "")), 700)


def _score_text(rec: dict) -> str:
    out = []
    for name, s in (rec.get("scores") or {}).items():
        if isinstance(s, dict) and "value" in s:
            v = s["value"]
            out.append(f"{name}={'yes' if v is True else 'no' if v is False else v}")
    return ", ".join(out)


def example_pairs(
    base: list[dict], trained: list[dict], kinds: dict[str, tuple[str, str]], per_suite: int = 3
) -> dict[str, list[dict]]:
    """The first ``per_suite`` records of each suite found in both evals, base next to trained,
    split into ``harmful`` (harmful and injection suites) and ``benign``."""
    tmap = {_key(r): r for r in trained}
    out: dict[str, list[dict]] = {"harmful": [], "benign": []}
    taken: dict[str, int] = {}
    for b in base:
        t = tmap.get(_key(b))
        suite = b.get("suite")
        if t is None or taken.get(suite, 0) >= per_suite:
            continue
        taken[suite] = taken.get(suite, 0) + 1
        stype = kinds.get(suite, ("unknown", ""))[0]
        group = "harmful" if stype in (*HARMFUL_TYPES, "agentic_injection") else "benign"
        out[group].append(
            {
                "suite": suite,
                "mode": b.get("mode"),
                "prompt": _prompt_text(b),
                "prefill": b.get("prefill") or "",
                "base": b,
                "trained": t,
            }
        )
    return out


# -- HTML ---------------------------------------------------------------------------------------
def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def _fmt(v: Any, nd: int = 3) -> str:
    v = number_or_none(v) if not isinstance(v, str) else v
    return "-" if v is None else (v if isinstance(v, str) else f"{v:.{nd}f}")


def _table(head: list[str], rows: list[list[str]], raw: bool = False) -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{c if raw else _e(c)}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _img(png: bytes | None, alt: str) -> str:
    if not png:
        return f"<p class=note>{_e(alt)}: no data.</p>"
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _output_cell(rec: dict, prefill: str) -> str:
    pre = f"<span class=prefill>{_e(prefill)}</span>" if prefill else ""
    call = rec.get("tool_call")
    call_html = (
        f"<div class=call>call: {_e(json.dumps(call, ensure_ascii=False))}</div>" if call else ""
    )
    return (
        f"<pre>{pre}{_e(_clip(rec.get('output', ''), 1000))}</pre>{call_html}"
        f"<div class=score>{_e(_score_text(rec))}</div>"
    )


def _stats_html(stats: dict | None) -> str:
    if not stats:
        return "<p class=note>No data stats (data/stats.json missing).</p>"
    train = (stats.get("counts") or {}).get("train") or {}
    by_cs = train.get("by_class_source") or {}
    rows = [
        [
            "harmful" if c == "harmful_flip" else "retain",
            c,
            str(n),
            ", ".join(f"{s} {k}" for s, k in sorted((by_cs.get(c) or {}).items())),
        ]
        for c, n in sorted(
            (train.get("by_class") or {}).items(), key=lambda kv: (kv[0] != "harmful_flip", kv[0])
        )
    ]
    parts = [_table(["split", "class", "count", "sources"], rows)]
    hold = (stats.get("counts") or {}).get("holdout") or {}
    ratio, leak, gen = (
        stats.get("ratio") or {},
        stats.get("leakage") or {},
        stats.get("generation") or {},
    )
    facts = [
        ["recipe", f"{stats.get('recipe')} (model {stats.get('model')}, seed {stats.get('seed')})"],
        ["training samples", str(train.get("total", "-"))],
        ["held-out suites", ", ".join(f"{k} {v.get('total')}" for k, v in hold.items())],
        [
            "Dr:Ds by count / weighted",
            f"{_fmt(ratio.get('count_ratio'), 2)} / {_fmt(ratio.get('effective_weighted_ratio'), 2)}",
        ],
        [
            "near-duplicates of held-out dropped",
            f"{leak.get('dropped_from_train', '-')} (after dropping: {leak.get('after_dropping', '-')})",
        ],
        [
            "generation",
            f"{gen.get('completions', '-')} completions, {_fmt(gen.get('tokens_per_s'), 1)} tokens/s",
        ],
        ["build time", f"{_fmt((stats.get('timings') or {}).get('total'), 1)} s"],
    ]
    parts.append(_table(["", ""], facts))
    return "".join(parts)


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;
vertical-align:top;font-size:13px}th{background:#f2f2f2}pre{white-space:pre-wrap;margin:0;
font-size:12px;max-width:520px}img{max-width:100%}.PASS{background:#d9f2d9}.FAIL{background:#f8d0d0}
.note{color:#a15c00}.prefill{color:#888;font-style:italic}.score,.call{color:#555;font-size:11px}"""


def render_html(run: RunData, images: dict[str, bytes | None]) -> str:
    kinds = suite_kinds(run.base, run.trained)
    sanity_ok = run.sanity.get("ok") if run.sanity else None
    targets = check_targets(
        run.base, run.trained, sanity_ok=sanity_ok, pipeline_seconds=pipeline_seconds(run.markers)
    )
    model = (run.base or run.trained or {}).get("model") or (run.stats or {}).get("model")
    s = [
        f"<!doctype html><html><head><meta charset=utf-8><title>cb report: {_e(run.run_dir.name)}</title>",
        f"<style>{CSS}</style></head><body><h1>Circuit breakers: {_e(run.run_dir)}</h1>",
        f"<p>model {_e(model)}</p>",
    ]
    if run.notes:
        s.append(
            "<h2>Missing or incomplete</h2><ul>"
            + "".join(f"<li class=note>{_e(n)}</li>" for n in run.notes)
            + "</ul>"
        )
    stage_rows = [
        [
            st,
            (run.markers.get(st) or {}).get("status", "not run"),
            _fmt((run.markers.get(st) or {}).get("seconds"), 1),
            (run.markers.get(st) or {}).get("hash", ""),
        ]
        for st in STAGES[:-1]
    ]
    s.append("<h2>Stages</h2>" + _table(["stage", "status", "seconds", "config hash"], stage_rows))
    trows = [
        [
            _e(t["target"]),
            _e(t["suite"]),
            _e(t["metric"]),
            _fmt(t["base"]),
            _fmt(t["trained"]),
            _fmt(t["limit"]),
            f"<span class={verdict(t['pass'])}>{verdict(t['pass'], t['required'])}</span>",
        ]
        for t in targets
    ]
    s.append(
        "<h2>Targets</h2>"
        + _table(["target", "suite", "metric", "base", "trained", "limit", ""], trows, raw=True)
    )
    rows = compare_rows(run.base, run.trained)
    s.append("<h2>Base vs trained</h2>" + _img(images.get("comparison"), "base vs trained"))
    s.append(
        _table(
            ["suite", "metric", "base", "trained", "delta"],
            [
                [
                    r["suite"],
                    r["metric"],
                    _fmt(r["base"]),
                    _fmt(r["trained"]),
                    "-" if r["delta"] is None else f"{r['delta']:+.3f}",
                ]
                for r in rows
            ],
        )
    )
    s.append("<h2>Training</h2>" + _img(images.get("training_curves"), "training curves"))
    ts = run.train_summary or {}
    if ts:
        s.append(
            f"<p>{_e(ts.get('steps'))} steps in {_fmt(ts.get('seconds'), 1)} s "
            f"({_fmt(ts.get('seconds_per_step'), 2)} s/step); alerts {_e(json.dumps(ts.get('alerts')))}</p>"
        )
    s.append("<h3>Training config</h3>")
    cfg = run.train_config or ts.get("config")
    s.append(
        f"<pre>{_e(json.dumps(cfg, indent=1, ensure_ascii=False, default=str))}</pre>"
        if cfg
        else "<p class=note>No training config found.</p>"
    )
    s.append("<h2>Data</h2>" + _stats_html(run.stats))
    if run.sanity:
        s.append(f"<h2>Sanity: {'ok' if run.sanity.get('ok') else 'COLLAPSE'}</h2>")
        s.append(
            _table(
                ["", "kind", "prompt", "answer"],
                [
                    [
                        "ok" if r.get("coherent") else "FAIL",
                        r.get("kind", ""),
                        r.get("prompt", ""),
                        _clip(r.get("output", ""), 300),
                    ]
                    for r in run.sanity.get("report", [])
                ],
            )
        )
    pairs = example_pairs(run.base_samples, run.trained_samples, kinds)
    for group in ("harmful", "benign"):
        s.append(f"<h2>Examples: {group}</h2>")
        if not pairs[group]:
            s.append("<p class=note>No examples (both evals are needed).</p>")
            continue
        s.append(
            _table(
                ["suite", "prompt (last turn)", "base", "trained"],
                [
                    [
                        _e(p["suite"] + (f" [{p['mode']}]" if p["mode"] else "")),
                        f"<pre>{_e(p['prompt'])}</pre>",
                        _output_cell(p["base"], p["prefill"]),
                        _output_cell(p["trained"], p["prefill"]),
                    ]
                    for p in pairs[group]
                ],
                raw=True,
            )
        )
    from circuit_breakers.attack.report import attack_section  # cb attack folders in the run folder

    s.append(attack_section(run.run_dir))
    s.append("</body></html>")
    return "\n".join(s)


def write_report(run_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write ``report.html`` and its PNGs (default ``RUN_DIR/report/``); return the HTML path."""
    return write_run_report(load_run(run_dir), out_dir)


def write_run_report(run: RunData, out_dir: str | Path | None = None) -> Path:
    """:func:`write_report` for a run already read with :func:`load_run`."""
    out = Path(out_dir) if out_dir else run.run_dir / "report"
    images = {
        "training_curves": plot_training(run.metrics),
        "comparison": plot_comparison(compare_rows(run.base, run.trained)),
    }
    for name, png in images.items():
        path = out / f"{name}.png"
        if png:
            with atomic_write(path, "wb") as fh:
                fh.write(png)
        else:
            path.unlink(missing_ok=True)
    page = out / "report.html"
    write_text(page, render_html(run, images))
    return page
