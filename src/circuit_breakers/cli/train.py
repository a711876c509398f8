"""``cb train``: settings from a preset, a YAML file and flags (the config's own parser)."""

from __future__ import annotations

import argparse


# -- cb train ------------------------------------------------------------------------------------
def cmd_train(args) -> int:
    from circuit_breakers.training.config import config_parser
    from circuit_breakers.training.experimental import ExperimentalConfig
    from circuit_breakers.training.presets import load_layers
    from circuit_breakers.training.run import run_training

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default=None)
    pre.add_argument("--config", default=None)
    known, rest = pre.parse_known_args(args.rest)
    parser = config_parser(
        ExperimentalConfig,
        prog="cb train",
        description="Train a circuit breaker. Settings: --preset NAME (stage1, stage2, demo), "
        "then --config FILE.yaml, then these flags, later ones winning.",
    )
    parser.add_argument(
        "--preset", default=None, help="preset name: stage1 | stage2 | demo | qwen | qwen_cpu"
    )
    parser.add_argument(
        "--config", default=None, help="YAML file of settings (unknown keys are errors)"
    )
    parser.add_argument(
        "--allow_pickle",
        "--allow-pickle",
        action="store_true",
        help="allow pickled model weights (.bin/.pt), which can run code when loaded",
    )
    parser.set_defaults(output_dir="runs/train", **load_layers(known.preset, known.config))
    cfg, extra = parser.parse_args_into_dataclasses(rest, look_for_args_file=False)[:2]
    summary = run_training(cfg, allow_pickle=extra.allow_pickle or None)
    from circuit_breakers.training.distributed import is_main_process

    if not is_main_process(cfg):  # one line per run, not one per rank
        return 0
    print(
        f"trained {summary['steps']} steps in {summary['seconds']:.1f} s "
        f"({summary['seconds_per_step']:.2f} s/step); adapter: {summary['adapter']}"
    )
    return 0


def register(sub) -> None:
    """Add ``cb train`` to the ``cb`` sub-parsers."""
    t = sub.add_parser(
        "train",
        add_help=False,
        help="train a circuit breaker (cb train --help lists every setting)",
    )
    t.add_argument("rest", nargs=argparse.REMAINDER)
    t.set_defaults(func=cmd_train)
