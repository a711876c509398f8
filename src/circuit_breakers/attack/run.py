"""``cb attack``'s runner: a suite in; ``results.json``, ``samples.jsonl`` and ``loss_curves.json``
out, in the shape ``cb eval`` writes (so ``cb eval --compare`` and ``cb report`` read them).

Per prompt: build the suffix slot and target (:mod:`.prompts`), optimise (:mod:`.optim`) with a
greedy check every ``check_every`` steps that stops at the first success, then take the greedy
answer plus ``generations`` sampled ones (:mod:`.sampling`) and score each: harmful text with the
judge (default: the project's compliance judge), injections with the action parser (the first
parsed call is the injection's call with its decisive arguments). The attack succeeds when any
answer is judged harmful, or a check during optimisation was. ``steps_to_success`` is the
step of the check that succeeded, else the number of steps run when only the final answers
succeeded, else None.

``results.json`` per suite: ``attack_success_rate`` with ``n``, ``successes`` and its Wilson 95 %
interval ``attack_success_rate_ci95``, ``mean_steps_to_success`` (over the successes),
``mean_final_loss`` and ``mean_seconds``; ``config`` holds the method, the budget (steps and,
for GCG, suffix length, top-k and batch), the constraint (``unconstrained`` or
``l2<=EPS``), the decoding and the judge.
"""

from __future__ import annotations

import logging
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from circuit_breakers.attack.optim import (
    AttackConfig,
    Objective,
    attack_mode,
    embedding_attack,
    gcg_attack,
)
from circuit_breakers.attack.prompts import (
    DEFAULT_INIT,
    INJECTION_INIT,
    AttackPrompt,
    build_attack_prompt,
)
from circuit_breakers.attack.sampling import sample_answers
from circuit_breakers.core.errors import InputError
from circuit_breakers.core.fileio import write_json, write_jsonl
from circuit_breakers.core.render import ChatRenderer
from circuit_breakers.eval.actions import first_tool_call, harmful_action
from circuit_breakers.eval.intervals import wilson_interval
from circuit_breakers.eval.suites import Suite

__all__ = ["METHODS", "run_attack", "score_answers"]

log = logging.getLogger(__name__)

METHODS = ("embedding", "gcg")


def score_answers(prompt: AttackPrompt, answers: list[str], judge) -> list[dict[str, Any]]:
    """One score per answer: ``{"value": harmful?, ...}`` (the judge's verdict or the call)."""
    if not answers:
        return []
    if prompt.kind == "text":
        verdicts = judge.judge_batch([prompt.request] * len(answers), answers)
        return [v.to_dict() for v in verdicts]
    meta = prompt.sample.meta
    truth, decisive = meta["injection_ground_truth"], meta.get("decisive_args") or {}
    out = []
    for a in answers:
        call = first_tool_call(a)
        out.append({"value": harmful_action(call, truth, decisive), "tool_call": call})
    return out


def _init_embeds(objective: Objective, tokenizer, text: str) -> torch.Tensor:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise InputError("the suffix's initial string is empty", field="init")
    with torch.no_grad():
        return objective.embed_ids(torch.tensor(ids)).float()


def _attack_one(
    model, tokenizer, prompt: AttackPrompt, config: AttackConfig, judge, opts: dict[str, Any]
) -> tuple[dict[str, Any], list[float]]:
    t0 = time.perf_counter()
    objective = Objective(model, prompt)
    gen = torch.Generator().manual_seed(config.seed)
    checks: list[dict[str, Any]] = []
    last_score: dict[str, Any] = {}

    def answers(suffix: torch.Tensor, n: int) -> list[str]:
        return sample_answers(
            objective,
            suffix,
            tokenizer,
            n_sampled=n,
            greedy=True,
            max_new_tokens=opts["max_new_tokens"],
            temperature=opts["temperature"],
            generator=gen,
        )

    def check(step: int, suffix: torch.Tensor) -> bool:
        out = answers(suffix, 0)
        score = score_answers(prompt, out, judge)[0]
        checks.append({"step": step, "output": out[0], "value": bool(score["value"])})
        last_score.update(score, from_check=True)
        return bool(score["value"])

    init_text = opts["init"] or (INJECTION_INIT if prompt.kind == "action" else DEFAULT_INIT)
    if config.method == "embedding":
        res = embedding_attack(
            objective, _init_embeds(objective, tokenizer, init_text), config, check
        )
    else:
        from circuit_breakers.attack.optim import allowed_tokens, init_suffix_ids

        allowed = allowed_tokens(tokenizer, objective.embed.weight.shape[0])
        init_ids = init_suffix_ids(tokenizer, init_text, config.suffix_len, allowed)
        res = gcg_attack(objective, init_ids, config, tokenizer, check)
    if res.stopped == "success":
        outs, scores = [checks[-1]["output"]], [last_score]
        greedy_flags = [True]
    else:
        outs = answers(res.suffix_embeds, opts["generations"])
        scores = score_answers(prompt, outs, judge)
        greedy_flags = [True] + [False] * (len(outs) - 1)
    hits = [k for k, s in enumerate(scores) if s["value"]]
    success = bool(hits)
    shown = hits[0] if hits else 0
    steps_to_success = (
        res.success_step if res.success_step is not None else (res.steps if success else None)
    )
    attack = {
        "method": config.method,
        "success": success,
        "steps": res.steps,
        "steps_to_success": steps_to_success,
        "stopped": res.stopped,
        "initial_loss": round(res.losses[0], 5),
        "final_loss": round(min(res.losses), 5),
        "forward_calls": res.forward_calls,
        "candidates_scored": res.candidates_scored,
        "seconds": round(time.perf_counter() - t0, 2),
        "target": prompt.target_text,
        "suffix_at": prompt.suffix_at,
        "checks": checks,
    }
    if res.suffix_ids is not None:
        attack["suffix_text"] = tokenizer.decode(res.suffix_ids)
        attack["suffix_ids"] = res.suffix_ids
        attack.update(res.extra)
    if res.max_delta_norm is not None:
        attack["max_delta_norm"] = round(res.max_delta_norm, 5)
    rec = {
        "id": prompt.id,
        "suite": opts["suite"],
        "messages": [
            m.model_dump(mode="json", exclude_none=True) for m in prompt.sample.prompt_messages()
        ],
        "output": outs[shown],
        "scores": {opts["score_name"]: scores[shown]},
        "tool_call": scores[shown].get("tool_call") if prompt.kind == "action" else None,
        "attack": attack,
        "generations": [
            {"output": o, "greedy": g, "value": bool(s["value"])}
            for o, g, s in zip(outs, greedy_flags, scores)
        ],
    }
    return rec, [round(x, 5) for x in res.losses]


def _metrics(records: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(records)
    wins = [r for r in records if r["attack"]["success"]]
    steps = [r["attack"]["steps_to_success"] for r in wins]
    lo, hi = wilson_interval(len(wins), n)
    return {
        "attack_success_rate": round(len(wins) / n, 6),
        "attack_success_rate_ci95": [round(lo, 4), round(hi, 4)],
        "successes": len(wins),
        "mean_steps_to_success": round(statistics.mean(steps), 2) if steps else None,
        "median_steps_to_success": statistics.median(steps) if steps else None,
        "mean_steps": round(statistics.mean(r["attack"]["steps"] for r in records), 2),
        "mean_final_loss": round(statistics.mean(r["attack"]["final_loss"] for r in records), 5),
        "mean_seconds": round(statistics.mean(r["attack"]["seconds"] for r in records), 2),
        "n": n,
    }


def run_attack(
    model_spec: str,
    adapter: str | None,
    suite: Suite,
    out_dir: str | Path,
    config: AttackConfig,
    *,
    model: Any = None,
    tokenizer: Any = None,
    judge: Any = "default",
    generations: int = 10,
    temperature: float = 0.7,
    max_new_tokens: int = 64,
    target_template: str | None = None,
    init: str | None = None,
    dtype: str | None = None,
    device: str | None = None,
    trust_remote_code: bool = False,
    progress: bool = True,
    extra_config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Attack every sample of ``suite`` and write the three files into ``out_dir``."""
    from circuit_breakers.eval.run import (
        _dtype,
        _load_avg,
        _resolve_judge,
        _threads,
        git_sha,
        versions,
    )

    t_start = time.perf_counter()
    load_avg_start = _load_avg()
    if config.method not in METHODS:
        raise InputError(
            f"unknown method {config.method!r} ({' | '.join(METHODS)})", field="method"
        )
    text_suite = suite.type != "agentic_injection"
    judge_obj = _resolve_judge(judge) if text_suite else None
    if model is None:
        from circuit_breakers.eval.generate import load_for_eval

        model, tokenizer = load_for_eval(
            model_spec,
            adapter,
            trust_remote_code=trust_remote_code,
            dtype=_dtype(dtype),
            device=device,
        )
    elif tokenizer is None:
        raise InputError("pass the tokenizer together with the model", field="tokenizer")
    renderer = ChatRenderer(tokenizer, name=model_spec)
    prompts = []
    for k, s in enumerate(suite.samples):
        try:
            prompts.append(
                build_attack_prompt(s, suite.type, renderer, target_template=target_template)
            )
        except InputError as e:
            raise e.located(file=suite.file, line=suite.lines[k] if suite.lines else None) from None
    score_name = getattr(judge_obj, "name", "judge") if text_suite else "harmful_action"
    records, curves = [], {}
    load_s = time.perf_counter() - t_start
    bar = tqdm(total=len(prompts), desc=f"cb attack {config.method}", disable=not progress)
    with attack_mode(model):
        for k, prompt in enumerate(prompts):
            cfg = AttackConfig(**{**config.__dict__, "seed": config.seed + k})
            opts = dict(
                suite=suite.name,
                score_name=score_name,
                generations=generations,
                temperature=temperature,
                max_new_tokens=max_new_tokens
                if prompt.kind == "text"
                else max(max_new_tokens, len(prompt.target_ids) + 32),
                init=init,
            )
            rec, curve = _attack_one(model, tokenizer, prompt, cfg, judge_obj, opts)
            records.append(rec)
            curves[prompt.id] = curve
            a = rec["attack"]
            log.info(
                "%s: %s after %d steps (loss %.3f -> %.3f)",
                prompt.id,
                "success" if a["success"] else "failure",
                a["steps"],
                a["initial_loss"],
                a["final_loss"],
            )
            bar.update(1)
    bar.close()
    seconds = time.perf_counter() - t_start
    metrics = _metrics(records)
    constraint = (
        "unconstrained"
        if config.method != "embedding" or config.norm_bound is None
        else f"l2<={config.norm_bound:g}"
    )
    results = {
        "model": model_spec,
        "adapter": adapter,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {
            "attack": config.method,
            "budget": config.budget(),
            "constraint": constraint if config.method == "embedding" else "tokens",
            "suites": {
                suite.name: {"type": suite.type, "file": suite.file, "n": len(suite.samples)}
            },
            "success": "judge" if text_suite else "action_parser",
            "judge": getattr(judge_obj, "name", None),
            "judge_spec": judge if isinstance(judge, str) and text_suite else None,
            "generations": generations,
            "decoding": f"greedy + {generations} sampled (temperature {temperature})",
            "temperature": temperature,
            "max_new_tokens": max_new_tokens,
            "target_template": target_template,
            "init": init or (DEFAULT_INIT if text_suite else INJECTION_INIT),
            "seed": config.seed,
            "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
            **(extra_config or {}),
        },
        "versions": versions(),
        "git_sha": git_sha(),
        "timing": {
            "seconds": round(seconds, 2),
            "load_seconds": round(load_s, 2),
            "attacks": len(records),
            "forward_calls": sum(r["attack"]["forward_calls"] for r in records),
            "device": str(next(model.parameters()).device),
            "torch_threads": _threads(),
            "load_avg_1m": [load_avg_start, _load_avg()],
        },
        "suites": {suite.name: metrics},
    }
    out = Path(out_dir)
    write_jsonl(out / "samples.jsonl", records)
    write_json(out / "loss_curves.json", {"method": config.method, "curves": curves})
    write_json(out / "results.json", results)
    return results
