"""``cb eval``: score a model (and adapter) on held-out suites, or compare two evals."""

from __future__ import annotations

import logging

from circuit_breakers.cli.common import add_model_args
from circuit_breakers.core.errors import InputError

log = logging.getLogger("circuit_breakers")


# -- cb eval -------------------------------------------------------------------------------------
def _eval_compare(args) -> int:
    from circuit_breakers.eval.run import compare_results, format_compare, load_results

    dirs = list(args.compare)
    if len(dirs) == 1:
        if not args.output_dir:
            raise InputError(
                "--compare OTHER_DIR needs --output-dir of a finished eval (or give two dirs)",
                field="compare",
            )
        dirs.append(args.output_dir)
    if len(dirs) != 2:
        raise InputError("--compare takes one or two result folders", field="compare")
    a, b = (load_results(d) for d in dirs)
    print(format_compare(compare_results(a, b), dirs[0], dirs[1]))
    return 0


def _eval_suites(args, registry: dict, limit: int | None) -> list:
    from pathlib import Path

    from circuit_breakers.eval.suites import load_suite_file, make_spec, resolve_suites

    if args.suite_file:
        if args.suites:
            raise InputError("give either --suites or --suite-file, not both", field="suite-file")
        if not args.suite_type:
            raise InputError("--suite-file needs --suite-type", field="suite-type")
        name = Path(args.suite_file).stem
        spec = make_spec(name, {"type": args.suite_type, "file": args.suite_file})
        return [load_suite_file(args.suite_file, spec, limit=limit)]
    if args.suite_type:
        raise InputError("--suite-type goes with --suite-file", field="suite-type")
    if not args.data_dir:
        raise InputError(
            "give --data-dir (the holdout folder of `cb data build`) or --suite-file",
            field="data-dir",
        )
    names = [n.strip() for n in args.suites.split(",") if n.strip()] if args.suites else None
    suites, missing = [], []
    for spec in resolve_suites(names, registry):
        path = Path(args.data_dir) / spec.file
        if not path.exists():
            if names:
                raise InputError(
                    f"suite file of {spec.name!r} not found",
                    file=str(path),
                    field=f"suites.{spec.name}",
                    hint="build it with `cb data build` or drop the suite from --suites",
                )
            missing.append(spec.name)
            continue
        suites.append(load_suite_file(path, spec, limit=limit))
    if not suites:
        raise InputError("no suite files found", file=args.data_dir, field="data-dir")
    if missing:
        log.warning("no file for suites %s in %s: skipped", ", ".join(missing), args.data_dir)
    return suites


def cmd_eval(args) -> int:
    if args.compare:
        return _eval_compare(args)
    from circuit_breakers.eval.run import run_eval
    from circuit_breakers.eval.suites import load_eval_config

    if not args.output_dir:
        raise InputError("--output-dir is required", field="output-dir")
    settings, registry = load_eval_config(args.config)

    def pick(name: str, default):
        value = getattr(args, name)
        return value if value is not None else settings.get(name, default)

    limit = pick("limit", None)
    for name in ("limit", "max_new_tokens", "batch_size", "max_batch_tokens"):
        value = pick(name, 1)
        if value is not None and value < 1:
            raise InputError("must be a positive integer", field=name.replace("_", "-"))
    suites = _eval_suites(args, registry, limit)
    results = run_eval(
        args.model,
        args.adapter,
        suites,
        args.output_dir,
        judge=pick("judge", "default"),
        max_new_tokens=pick("max_new_tokens", 64),
        batch_size=pick("batch_size", 32),
        max_batch_tokens=pick("max_batch_tokens", 16384),
        config={"data_dir": args.data_dir, "limit": limit, "eval_config": args.config},
        trust_remote_code=args.trust_remote_code,
        dtype=pick("dtype", None),
    )
    for name, metrics in results["suites"].items():
        shown = ", ".join(
            f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
            for k, v in metrics.items()
            if k != "n"
        )
        print(f"{name} (n={metrics['n']}): {shown}")
    t = results["timing"]
    print(
        f"{t['generations']} generations, {t['generated_tokens']} tokens in {t['seconds']:.1f} s "
        f"({t['tokens_per_s']:.0f} tokens/s); wrote {args.output_dir}/results.json and samples.jsonl"
    )
    return 0


def register(sub) -> None:
    """Add ``cb eval`` to the ``cb`` sub-parsers."""
    e = sub.add_parser(
        "eval",
        help="evaluate a model (and adapter) on the held-out suites; or compare two evals",
        description="Generate on the held-out suites, score them and write OUT/samples.jsonl and "
        "OUT/results.json. Settings come from --config (default: the packaged "
        "configs/eval/default.yaml), flags override them.",
    )
    add_model_args(e)
    e.add_argument(
        "--adapter", default=None, help="PEFT adapter folder (e.g. OUT/adapter of cb train)"
    )
    e.add_argument(
        "--data-dir",
        default=None,
        help="folder of suite files <suite>.jsonl (cb data build's holdout/)",
    )
    e.add_argument(
        "--suites",
        default=None,
        help="comma-separated suite names or types (default: every suite with a file)",
    )
    e.add_argument(
        "--suite-file",
        default=None,
        help="score this JSONL file of samples as one suite named after its stem",
    )
    e.add_argument(
        "--suite-type",
        default=None,
        help="type of --suite-file: harmful_text | harmful_prefill | harmful_jailbreak | agentic_injection | benign_tools | over_refusal | benign_text",
    )
    e.add_argument(
        "--config",
        default=None,
        help="eval YAML (settings and suites) or a packaged name (default, demo)",
    )
    e.add_argument("--limit", type=int, default=None, help="first N samples of each suite file")
    e.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="tokens to generate per answer (default 64)",
    )
    e.add_argument(
        "--batch-size", type=int, default=None, help="prompts per generation batch (default 32)"
    )
    e.add_argument(
        "--max-batch-tokens",
        type=int,
        default=None,
        help="cap on rows x (prompt + new) tokens per batch (default 16384)",
    )
    e.add_argument(
        "--judge",
        default=None,
        help="default | regex | hf:<model id or path> | endpoint:<url>#<model> (key in $CB_JUDGE_API_KEY)",
    )
    e.add_argument(
        "--dtype",
        default=None,
        choices=["float32", "bfloat16", "float16"],
        help="weights dtype (default: bfloat16 on GPU, float32 on CPU; bfloat16 halves CPU time "
        "on CPUs with avx512_bf16)",
    )
    e.add_argument("--output-dir", default=None, help="where samples.jsonl and results.json go")
    e.add_argument(
        "--compare",
        nargs="+",
        default=None,
        metavar="DIR",
        help="print a side-by-side table: OTHER_DIR vs --output-dir, or DIR_A DIR_B (delta = second - first)",
    )
    e.set_defaults(func=cmd_eval)
