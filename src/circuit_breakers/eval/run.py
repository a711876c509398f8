"""The evaluation runner behind ``cb eval`` and ``cb demo``: suites in, records and results out.

:func:`run_eval` takes a model spec (and optionally an already-loaded model, so the demo and
the trainer do not load it twice), an optional adapter and the suites, and writes

* ``OUT/samples.jsonl``: one record per generation (``id``, ``suite``, ``messages``, ``output``,
  ``scores``, ``tool_call``; plus ``mode``, ``prefill`` and ``nll`` where they apply), to read
  back, re-score or hand-check (cf. inspect_ai's per-sample log);
* ``OUT/results.json``: ``model``, ``adapter``, ``config``, ``versions``, ``git_sha``,
  ``timing`` and ``suites: {name: {metric: value, "n": count}}`` (cf. lm-evaluation-harness).

Base and trained models go through this same code; only ``adapter`` differs.

Generation (:func:`~.greedy.generate_greedy`): prompts that share a long token prefix (the
system turn and tool schemas of an AgentDojo suite) have it computed once; each prompt's own
tokens are pre-filled without padding; decoding runs in batches of at most ``batch_size``
rows and ``max_batch_tokens`` tokens (rows x (prompt + new tokens)), so short chat prompts run
32 at a time while 4k-token AgentDojo contexts run a few at a time instead of exhausting
memory, and a row leaves its batch when it ends its turn. Greedy decoding, so results are
reproducible. ``timing`` records the prompt tokens and the ones actually pre-filled.
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from circuit_breakers.core.errors import InputError
from circuit_breakers.core.fileio import read_json, write_json, write_jsonl
from circuit_breakers.core.render import ChatRenderer
from circuit_breakers.eval.generate import GenerationStats, generate, load_for_eval, sample_nll
from circuit_breakers.eval.greedy import generate_greedy
from circuit_breakers.eval.judging import ComplianceJudge, Judge, get_judge
from circuit_breakers.eval.scoring import needs_judge, needs_nll, score_suite
from circuit_breakers.eval.suites import Suite, build_requests, from_samples

__all__ = ["compare_results", "format_compare", "git_sha", "load_results", "run_eval", "versions"]

log = logging.getLogger(__name__)

SuiteInput = Suite | tuple


def versions() -> dict[str, str | None]:
    """Versions of Python and the libraries that decide the numbers."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "peft", "circuit_breakers"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def git_sha() -> str | None:
    """The commit of the checkout the package runs from, or None (not a git checkout)."""
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = res.stdout.strip()
    return sha if res.returncode == 0 and len(sha) == 40 else None


def _as_suites(suites: Mapping[str, SuiteInput] | Sequence[Suite]) -> list[Suite]:
    if isinstance(suites, Mapping):
        out = []
        for name, value in suites.items():
            if isinstance(value, Suite):
                out.append(value)
            else:
                stype, samples, *rest = value
                out.append(from_samples(name, stype, list(samples), **(rest[0] if rest else {})))
        return out
    return list(suites)


def _resolve_judge(judge: str | Judge) -> Judge:
    if not isinstance(judge, str):
        return judge
    resolved = get_judge(judge)
    on_topic = (
        getattr(resolved, "on_topic", None) if isinstance(resolved, ComplianceJudge) else None
    )
    if on_topic is not None and on_topic.model_path is None:
        from circuit_breakers.eval.judging.text import _embedder_path

        try:
            _embedder_path()
        except ImportError as e:
            raise InputError(str(e), field="judge", hint="or pass --judge regex") from None
    return resolved


def _generate(
    model,
    tok,
    prompts: list[str],
    *,
    max_new_tokens: int,
    batch_size: int,
    max_batch_tokens: int,
    stats: GenerationStats,
    bar: tqdm | None,
    engine: str = "fast",
) -> list[str]:
    """Greedy answers in input order (:func:`~.greedy.generate_greedy`: shared prompt
    prefixes computed once, no padding in the prefill, batches capped by rows and tokens).
    ``engine="reference"`` uses transformers' ``generate`` on length-sorted, left-padded
    batches instead (the same answers, slower on long shared prompts; for comparisons)."""
    if engine == "reference":
        return _generate_reference(
            model,
            tok,
            prompts,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            max_batch_tokens=max_batch_tokens,
            stats=stats,
            bar=bar,
        )
    return generate_greedy(
        model,
        tok,
        prompts,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        max_batch_tokens=max_batch_tokens,
        stats=stats,
        on_done=bar.update if bar is not None else None,
    )


def _generate_reference(
    model,
    tok,
    prompts: list[str],
    *,
    max_new_tokens: int,
    batch_size: int,
    max_batch_tokens: int,
    stats: GenerationStats,
    bar: tqdm | None,
) -> list[str]:
    lengths = [len(ids) for ids in tok(prompts, add_special_tokens=False)["input_ids"]]
    stats.prompt_tokens += sum(lengths)
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    outputs = [""] * len(prompts)
    start = 0
    while start < len(order):
        longest = lengths[order[start]] + max_new_tokens
        rows = max(1, min(batch_size, max_batch_tokens // longest))
        idx = order[start : start + rows]
        stats.prefill_tokens += len(idx) * lengths[order[start]]  # padded
        outs = generate(
            model,
            tok,
            [prompts[i] for i in idx],
            max_new_tokens=max_new_tokens,
            batch_size=len(idx),
            stats=stats,
        )
        for i, o in zip(idx, outs):
            outputs[i] = o
        if bar is not None:
            bar.update(len(idx))
        start += rows
    return outputs


ENGINES = ("fast", "reference")


def run_eval(
    model_spec: str,
    adapter: str | None,
    suites: Mapping[str, SuiteInput] | Sequence[Suite],
    out_dir: str | Path,
    *,
    model: Any = None,
    tokenizer: Any = None,
    judge: str | Judge = "default",
    max_new_tokens: int = 64,
    batch_size: int = 32,
    max_batch_tokens: int = 16384,
    config: dict[str, Any] | None = None,
    progress: bool = True,
    trust_remote_code: bool = False,
    dtype: str | None = None,
    engine: str = "fast",
) -> dict[str, Any]:
    """Evaluate ``suites`` and write ``samples.jsonl`` + ``results.json`` into ``out_dir``.

    ``suites``: ``{name: (type, samples[, options])}`` or :class:`Suite` objects (from
    :func:`~.suites.load_suite_file`). Pass ``model`` and ``tokenizer`` to reuse a loaded
    model (an adapter is then assumed to be applied already). ``dtype`` ("float32",
    "bfloat16", "float16"; None = bfloat16 on CUDA, float32 on CPU) applies when the model is
    loaded here. Returns the results dict.
    """
    t_start = time.perf_counter()
    load_avg_start = _load_avg()
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r} ({' | '.join(ENGINES)})", field="engine")
    suite_list = _as_suites(suites)
    if not suite_list:
        raise InputError("no suites to evaluate", field="suites")
    names = [s.name for s in suite_list]
    if len(set(names)) != len(names):
        raise InputError(f"duplicate suite names: {names}", field="suites")
    judge_obj = _resolve_judge(judge) if any(needs_judge(s) for s in suite_list) else None
    if model is None:
        model, tokenizer = load_for_eval(
            model_spec, adapter, trust_remote_code=trust_remote_code, dtype=_dtype(dtype)
        )
    elif tokenizer is None:
        raise InputError("pass the tokenizer together with the model", field="tokenizer")
    load_s = time.perf_counter() - t_start
    was_training = getattr(model, "training", False)
    model.eval()
    renderer = ChatRenderer(tokenizer, name=model_spec)
    stats = GenerationStats()
    records: list[dict[str, Any]] = []
    results_suites: dict[str, dict[str, Any]] = {}
    suite_seconds: dict[str, float] = {}
    plans = [(s, build_requests_for(s, renderer)) for s in suite_list]
    total = sum(len(reqs) for _, reqs in plans)
    bar = tqdm(total=total, desc="cb eval", unit="gen", disable=not progress)
    try:
        for suite, reqs in plans:
            t0 = time.perf_counter()
            bar.set_postfix_str(suite.name)
            outputs = _generate(
                model,
                tokenizer,
                [r.prompt for r in reqs],
                max_new_tokens=suite.spec.max_new_tokens or max_new_tokens,
                batch_size=batch_size,
                max_batch_tokens=max_batch_tokens,
                stats=stats,
                bar=bar,
                engine=engine,
            )
            nll = sample_nll(model, renderer, suite.samples) if needs_nll(suite) else None
            recs, metrics = score_suite(suite, reqs, outputs, judge=judge_obj, nll=nll)
            records.extend(recs)
            results_suites[suite.name] = metrics
            suite_seconds[suite.name] = round(time.perf_counter() - t0, 2)
            log.info("%s: %s", suite.name, _fmt_metrics(metrics))
    finally:
        bar.close()
        if was_training:
            model.train()
    seconds = time.perf_counter() - t_start
    results = {
        "model": model_spec,
        "adapter": adapter,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {
            "suites": {
                s.name: {"type": s.type, "file": s.file, "mode": s.spec.mode, "n": len(s.samples)}
                for s in suite_list
            },
            "judge": getattr(judge_obj, "name", None) if judge_obj else None,
            "judge_spec": judge if isinstance(judge, str) else type(judge).__name__,
            "max_new_tokens": max_new_tokens,
            "batch_size": batch_size,
            "max_batch_tokens": max_batch_tokens,
            "decoding": "greedy",
            "engine": engine,
            "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
            **(config or {}),
        },
        "versions": versions(),
        "git_sha": git_sha(),
        "timing": {
            "seconds": round(seconds, 2),
            "load_seconds": round(load_s, 2),
            "generation_seconds": round(stats.seconds, 2),
            "generations": stats.n,
            "generated_tokens": stats.new_tokens,
            "prompt_tokens": stats.prompt_tokens,
            "prefilled_tokens": stats.prefill_tokens,
            "tokens_per_s": round(stats.tokens_per_s, 1),
            "suites": suite_seconds,
            "device": str(next(model.parameters()).device),
            "torch_threads": _threads(),
            # other processes on the machine slow CPU timings down: their load, start and end
            "load_avg_1m": [load_avg_start, _load_avg()],
        },
        "suites": results_suites,
    }
    out = Path(out_dir)
    write_jsonl(out / "samples.jsonl", records)
    write_json(out / "results.json", results)
    return results


def build_requests_for(suite: Suite, renderer: ChatRenderer) -> list:
    """The suite's generations; a template error names the suite's file."""
    try:
        return build_requests(suite, renderer)
    except InputError as e:
        raise e.located(file=suite.file) from None


DTYPES = ("float32", "bfloat16", "float16")


def _dtype(name: str | None) -> Any:
    if name is None:
        return None
    if name not in DTYPES:
        raise InputError(f"unknown dtype {name!r} (choose {', '.join(DTYPES)})", field="dtype")
    import torch

    return getattr(torch, name)


def _load_avg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _threads() -> int | None:
    if "torch" not in sys.modules:
        return None
    import torch

    return torch.get_num_threads()


def _fmt_metrics(metrics: Mapping[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
    )


# -- compare ------------------------------------------------------------------------------------
def load_results(path: str | Path) -> dict[str, Any]:
    """``results.json`` of a finished eval (the folder or the file itself)."""
    p = Path(path)
    file = p / "results.json" if p.is_dir() or not p.suffix else p
    data = read_json(file)
    if not isinstance(data, dict) or not isinstance(data.get("suites"), dict):
        raise InputError(
            "not an eval results file (no 'suites' mapping)", file=str(file), field="suites"
        )
    return data


def compare_results(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per (suite, metric) in either result: ``{suite, metric, a, b, delta}`` (delta = b - a)."""
    rows = []
    sa, sb = a["suites"], b["suites"]
    for suite in [*sa, *(s for s in sb if s not in sa)]:
        ma, mb = sa.get(suite, {}), sb.get(suite, {})
        for metric in [*ma, *(m for m in mb if m not in ma)]:
            va, vb = ma.get(metric), mb.get(metric)
            num = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (va, vb))
            delta = vb - va if num and not (math.isnan(va) or math.isnan(vb)) else None
            rows.append({"suite": suite, "metric": metric, "a": va, "b": vb, "delta": delta})
    return rows


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def format_compare(rows: list[dict[str, Any]], label_a: str, label_b: str) -> str:
    """A plain-text side-by-side table with signed deltas."""
    header = ["suite", "metric", label_a, label_b, "delta"]
    body = [
        [
            r["suite"],
            r["metric"],
            _cell(r["a"]),
            _cell(r["b"]),
            "-"
            if r["delta"] is None
            else (f"{r['delta']:+.3f}" if isinstance(r["delta"], float) else f"{r['delta']:+d}"),
        ]
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(header, *body)]
    lines = [
        "  ".join(c.ljust(w) if k < 2 else c.rjust(w) for k, (c, w) in enumerate(zip(row, widths)))
        for row in [header, *body]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
