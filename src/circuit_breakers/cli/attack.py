"""``cb attack``: adaptive attacks (embedding-space or GCG) on one suite file, base or trained.

Every setting is checked before the model loads, so a bad flag costs nothing; a bad value is
an :class:`~circuit_breakers.core.errors.InputError` naming the flag (exit code 2).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from circuit_breakers.core.errors import InputError

__all__ = ["DEFAULT_BUDGET", "register", "cmd_attack", "config_from_args"]

DEFAULT_BUDGET = {"embedding": 200, "gcg": 12}
DEFAULT_CHECK_EVERY = {"embedding": 25, "gcg": 4}
ATTACK_TYPES = ("harmful_text", "harmful_jailbreak", "agentic_injection")


def _positive(args: Any, name: str, *, zero_ok: bool = False, real: bool = False) -> None:
    value = getattr(args, name)
    if value is None:
        return
    bad = value < 0 if zero_ok else value <= 0
    if bad:
        what = "a non-negative" if zero_ok else "a positive"
        raise InputError(
            f"must be {what} {'number' if real else 'integer'}, got {value}",
            field=name.replace("_", "-"),
        )


def config_from_args(args: Any):
    """The :class:`~.optim.AttackConfig` of the parsed flags (validated)."""
    from circuit_breakers.attack.optim import AttackConfig
    from circuit_breakers.attack.run import METHODS

    if args.method not in METHODS:
        raise InputError(
            f"unknown attack method {args.method!r} (choose {' | '.join(METHODS)})",
            field="method",
        )
    for name in ("budget", "top_k", "batch", "suffix_len", "max_new_tokens", "limit"):
        _positive(args, name)
    for name in ("lr", "norm_bound", "temperature"):
        _positive(args, name, real=True)
    for name in ("generations", "check_every"):
        _positive(args, name, zero_ok=True)
    if args.stop_loss is not None and args.stop_loss < 0:
        raise InputError("must be >= 0", field="stop-loss")
    if args.target_template is not None and not args.target_template.strip():
        raise InputError(
            "the attack target is empty",
            field="target-template",
            hint="e.g. --target-template 'Sure, here is how to {request}'",
        )
    if args.norm_bound is not None and args.method != "embedding":
        raise InputError("--norm-bound applies to the embedding attack only", field="norm-bound")
    check = args.check_every
    return AttackConfig(
        method=args.method,
        steps=args.budget or DEFAULT_BUDGET[args.method],
        lr=args.lr,
        norm_bound=args.norm_bound,
        suffix_len=args.suffix_len,
        top_k=args.top_k,
        batch=args.batch,
        stop_loss=args.stop_loss,
        check_every=DEFAULT_CHECK_EVERY[args.method] if check is None else check,
        seed=args.seed,
    )


def suite_type_of(path: str) -> str:
    """``agentic_injection`` when the file's first row has an injection's ground truth."""
    from circuit_breakers.core.fileio import iter_jsonl

    for _, row in iter_jsonl(path):
        meta = row.get("meta") if isinstance(row.get("meta"), dict) else {}
        return "agentic_injection" if "injection_ground_truth" in meta else "harmful_text"
    raise InputError("file has no samples", file=path)


def load_suite(path: str, suite_type: str | None, limit: int | None):
    from circuit_breakers.eval.suites import load_suite_file, make_spec

    if not Path(path).exists():
        raise InputError("suite file not found", file=path, field="suite-file")
    stype = suite_type or suite_type_of(path)
    if stype not in ATTACK_TYPES:
        raise InputError(
            f"cannot attack a {stype} suite (types: {', '.join(ATTACK_TYPES)})",
            field="suite-type",
        )
    spec = make_spec(Path(path).stem, {"type": stype, "file": path})
    return load_suite_file(path, spec, limit=limit)


def cmd_attack(args: argparse.Namespace) -> int:
    from circuit_breakers.attack.run import run_attack

    config = config_from_args(args)
    if not args.output_dir:
        raise InputError("--output-dir is required", field="output-dir")
    suite = load_suite(args.suite_file, args.suite_type, args.limit)
    results = run_attack(
        args.model,
        args.adapter,
        suite,
        args.output_dir,
        config,
        judge=args.judge,
        generations=args.generations,
        temperature=args.temperature,
        max_new_tokens=args.max_new_tokens,
        target_template=args.target_template,
        init=args.init,
        dtype=args.dtype,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
        extra_config={"limit": args.limit},
    )
    for name, m in results["suites"].items():
        lo, hi = m["attack_success_rate_ci95"]
        print(
            f"{name} (n={m['n']}): attack_success_rate {m['attack_success_rate']:.3f} "
            f"[{lo:.3f}, {hi:.3f}], mean steps to success {m['mean_steps_to_success']}, "
            f"mean final loss {m['mean_final_loss']:.3f}"
        )
    t = results["timing"]
    print(
        f"{config.method} attack, budget {config.steps} steps, {t['attacks']} prompts in "
        f"{t['seconds']:.1f} s; wrote {args.output_dir}/results.json, samples.jsonl and "
        "loss_curves.json"
    )
    return 0


def register(sub: Any) -> None:
    """Register ``cb attack`` on the CLI's subparsers."""
    a = sub.add_parser(
        "attack",
        help="adaptive attack (embedding-space or GCG suffix) on a suite, base or trained",
        description="Optimise a suffix per prompt so the model starts the attacker's target "
        "answer, then judge greedy + sampled answers. Writes OUT/results.json, samples.jsonl "
        "(the shape cb eval writes) and loss_curves.json.",
    )
    a.add_argument("--model", default="default", help="model spec (default: embedded SmolLM2)")
    a.add_argument("--adapter", default=None, help="PEFT adapter folder (the trained model)")
    a.add_argument("--suite-file", required=True, help="JSONL suite file (cb data build holdout/)")
    a.add_argument(
        "--suite-type",
        default=None,
        help="harmful_text | harmful_jailbreak | agentic_injection (default: agentic_injection "
        "when the rows carry meta.injection_ground_truth, else harmful_text)",
    )
    a.add_argument("--method", default="embedding", help="embedding | gcg (default embedding)")
    a.add_argument(
        "--budget",
        type=int,
        default=None,
        help=f"optimisation steps per prompt (default {DEFAULT_BUDGET['embedding']} embedding, "
        f"{DEFAULT_BUDGET['gcg']} gcg)",
    )
    a.add_argument("--output-dir", default=None, help="where the result files go")
    a.add_argument("--limit", type=int, default=None, help="attack the first N samples")
    a.add_argument("--lr", type=float, default=1e-3, help="embedding: signed-gradient step")
    a.add_argument(
        "--norm-bound",
        type=float,
        default=None,
        help="embedding: L2 radius per suffix vector around its start (default: unconstrained)",
    )
    a.add_argument("--suffix-len", type=int, default=20, help="gcg: suffix tokens (default 20)")
    a.add_argument("--top-k", type=int, default=64, help="gcg: candidates per position (64)")
    a.add_argument("--batch", type=int, default=32, help="gcg: swaps scored per step (32)")
    a.add_argument(
        "--generations", type=int, default=10, help="sampled answers after the attack (10)"
    )
    a.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (0.7)")
    a.add_argument("--max-new-tokens", type=int, default=64, help="tokens per answer (64)")
    a.add_argument(
        "--check-every",
        type=int,
        default=None,
        help="judge the greedy answer every N steps and stop at the first success "
        f"(default {DEFAULT_CHECK_EVERY['embedding']} embedding, {DEFAULT_CHECK_EVERY['gcg']} "
        "gcg; 0 = only after the budget)",
    )
    a.add_argument(
        "--stop-loss", type=float, default=None, help="stop once the target loss is below this"
    )
    a.add_argument(
        "--target-template",
        default=None,
        help="text targets, e.g. 'Sure, here is how to {request}' (default: rules on the request)",
    )
    a.add_argument("--init", default=None, help="the suffix's initial string")
    a.add_argument("--judge", default="default", help="judge spec, as cb eval (default)")
    a.add_argument("--seed", type=int, default=0, help="seed (sampling, GCG swaps)")
    a.add_argument("--device", default=None, help="cpu | cuda (default: cuda if available)")
    a.add_argument(
        "--dtype", default=None, help="float32 | bfloat16 | float16 (default as cb eval)"
    )
    a.add_argument(
        "--trust-remote-code", action="store_true", help="allow the model's own Python code"
    )
    a.add_argument("--allow-pickle", action="store_true", help="allow pickled weights")
    a.set_defaults(func=cmd_attack)
