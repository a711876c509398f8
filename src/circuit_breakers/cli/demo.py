"""``cb demo``: the whole pipeline on the embedded model (:mod:`circuit_breakers.pipeline`)."""

from __future__ import annotations

import argparse
from typing import Any

from circuit_breakers.core.runs import STAGES


def options_from_args(args: argparse.Namespace):
    """The :class:`~circuit_breakers.pipeline.demo.DemoOptions` of the parsed flags."""
    from circuit_breakers.pipeline.demo import DemoOptions, parse_setting

    redo = tuple(s.strip() for s in (args.redo or "").split(",") if s.strip())
    return DemoOptions(
        output_dir=args.output_dir,
        model=args.model,
        seed=args.seed,
        data_seed=args.data_seed,
        recipe=args.recipe,
        data_dir=args.data_dir,
        preset=args.preset,
        train_config=args.train_config,
        train_set=dict(parse_setting(x) for x in args.train_set),
        eval_config=args.eval_config,
        eval_limit=args.eval_limit,
        max_new_tokens=args.max_new_tokens,
        judge=args.judge,
        dtype=args.dtype,
        device=args.device,
        sanity_max_new_tokens=args.sanity_max_new_tokens,
        redo=redo,
        until=args.until,
        progress=not args.no_progress,
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from circuit_breakers.pipeline.demo import run_demo
    from circuit_breakers.pipeline.summary import format_summary

    summary = run_demo(options_from_args(args))
    print()
    print(format_summary(summary))
    if args.strict and summary["targets_met"] < summary["targets_required"]:
        return 1
    return 0


def register(sub: Any) -> None:
    """Add ``cb demo`` to the ``cb`` sub-parsers."""
    p = sub.add_parser(
        "demo",
        help="the whole pipeline on the embedded model: data, base eval, train, sanity, "
        "trained eval, report",
        description="Build data (demo recipe), evaluate the base model, train (demo preset), run "
        "the sanity check, evaluate the trained model, write the report and summary.json. A "
        "rerun skips the stages that are complete for the same config.",
    )
    a = p.add_argument
    a("--output-dir", default="runs/demo", help="run folder (default runs/demo)")
    a("--model", default="default", help="model spec (default: embedded SmolLM2-135M-Instruct)")
    a("--seed", type=int, default=0, help="seed of the training and (unless --data-seed) the data")
    a("--data-seed", type=int, default=None, help="seed of the data build (default: --seed)")
    a("--recipe", default="demo", help="data recipe name or YAML (default demo)")
    a(
        "--data-dir",
        default=None,
        help="use this finished `cb data build` folder instead of building",
    )
    a("--preset", default="demo", help="training preset (default demo)")
    a("--train-config", default=None, help="training YAML layered over the preset")
    a(
        "--train-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one training setting (YAML value), e.g. max_steps=20; repeatable",
    )
    a(
        "--eval-config",
        default="demo",
        help="eval config name or YAML (default demo: per-suite limits)",
    )
    a(
        "--eval-limit",
        type=int,
        default=None,
        help="at most N prompts per suite (caps the config's)",
    )
    a(
        "--max-new-tokens",
        type=int,
        default=None,
        help="tokens per answer (default: the eval config's)",
    )
    a("--judge", default=None, help="judge spec (default: the eval config's)")
    a(
        "--dtype",
        default=None,
        choices=["float32", "bfloat16", "float16"],
        help="eval/sanity weights dtype (default: float32 on CPU, bfloat16 on GPU)",
    )
    a(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="where to train and evaluate",
    )
    a("--sanity-max-new-tokens", type=int, default=48, help="tokens per sanity answer (default 48)")
    a(
        "--redo",
        default=None,
        metavar="STAGE[,STAGE]",
        help=f"run these stages again ({', '.join(STAGES)}, all)",
    )
    a("--until", default=None, choices=STAGES, help="stop after this stage")
    a("--strict", action="store_true", help="exit 1 when a required target is missed")
    a("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)
