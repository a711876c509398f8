"""The ``cb`` command line. Thin: parse, call the library, print.

Exit codes: 0 success; 2 bad usage or bad input (the message names file, line and field);
1 a failure while running.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from collections import Counter

from circuit_breakers.core.errors import InputError

log = logging.getLogger("circuit_breakers")


def _add_model_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument(
        "--model",
        required=required,
        default=None if required else "default",
        help="Hugging Face id, local folder, .gguf file, or 'default' (embedded SmolLM2-135M-Instruct)",
    )
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow the model's own Python code to run (off by default)",
    )
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="allow pickled weights (.bin/.pt), which can run code when loaded (off by default)",
    )


# -- cb data validate ---------------------------------------------------------------------------
def cmd_data_validate(args) -> int:
    from circuit_breakers.core.schema import read_samples

    samples = read_samples(args.file)
    n_masked = None
    if args.model:
        from circuit_breakers.core.masks import build_features
        from circuit_breakers.core.models import load_tokenizer
        from circuit_breakers.core.render import ChatRenderer

        tok = load_tokenizer(args.model, trust_remote_code=args.trust_remote_code)
        renderer = ChatRenderer(tok, name=args.model)
        n_masked = 0
        for lineno, s in enumerate(samples, start=1):
            if not s.assistant_indices():
                continue  # prompt-only rows are evaluation prompts: nothing to mask
            try:
                build_features(s, renderer)
            except InputError as e:
                raise e.located(file=args.file, line=lineno) from None
            n_masked += 1
    by = Counter((s.split, s.priority_class.value) for s in samples)
    print(f"{args.file}: {len(samples)} valid samples")
    for (split, cls), n in sorted(by.items()):
        print(f"  {split:8s} {cls:22s} {n}")
    prompts = sum(1 for s in samples if not s.has_target)
    if prompts:
        print(f"  ({prompts} prompt-only samples: evaluation prompts or to be completed)")
    if n_masked is not None:
        print(f"  loss masks verified on {n_masked} samples with {args.model}")
    return 0


# -- cb data inspect ----------------------------------------------------------------------------
def _highlight(text: str, spans: list[tuple[int, int]], color: bool) -> str:
    start, end = ("\x1b[1;31m", "\x1b[0m") if color else ("⟦", "⟧")
    out, pos = [], 0
    for s, e in spans:
        out += [text[pos:s], start, text[s:e], end]
        pos = e
    out.append(text[pos:])
    return "".join(out)


def cmd_data_inspect(args) -> int:
    from circuit_breakers.core.masks import build_features, loss_text
    from circuit_breakers.core.models import load_tokenizer
    from circuit_breakers.core.render import ChatRenderer
    from circuit_breakers.core.schema import read_samples

    samples = read_samples(args.file)[: args.limit]
    tok = load_tokenizer(args.model, trust_remote_code=args.trust_remote_code)
    renderer = ChatRenderer(tok, name=args.model)
    color = sys.stdout.isatty() and not args.no_color
    for lineno, s in enumerate(samples, start=1):
        try:
            rendered = renderer.render(s)
            feats = build_features(
                s,
                renderer,
                max_prompt_tokens=args.max_prompt_tokens,
                max_completion_tokens=args.max_completion_tokens,
            )
        except InputError as e:
            raise e.located(file=args.file, line=lineno) from None
        if args.json:
            print(
                json.dumps(
                    {
                        "id": s.id,
                        "n_tokens": feats.n_tokens,
                        "n_loss_tokens": feats.n_loss_tokens,
                        "loss_text": loss_text(feats, tok),
                    },
                    ensure_ascii=False,
                )
            )
        else:
            print(
                f"=== {s.id}  [{s.split}/{s.priority_class.value}]  tokens={feats.n_tokens} "
                f"loss_tokens={feats.n_loss_tokens} truncated(prompt={feats.prompt_truncated}, "
                f"completion={feats.completion_truncated})"
            )
            print(_highlight(rendered.text, rendered.spans, color))
    return 0


# -- cb data build / sources / fetch -------------------------------------------------------------
def cmd_data_build(args) -> int:
    from circuit_breakers.data.build import build
    from circuit_breakers.data.build_stats import format_summary
    from circuit_breakers.data.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    result = build(
        recipe, args.output_dir, model=args.model, seed=args.seed, label_flips=args.label_flips
    )
    print(format_summary(result.stats, args.output_dir))
    return 0


def cmd_data_sources(args) -> int:
    from circuit_breakers.data.fetch import format_sources_table, list_sources

    print(format_sources_table(list_sources()))
    return 0


def cmd_data_fetch(args) -> int:
    from circuit_breakers.data.fetch import fetch, fetch_all

    if args.all == bool(args.name):
        raise InputError("give an artifact name or --all (not both)", field="name")
    paths = fetch_all() if args.all else {args.name: fetch(args.name)}
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


# -- cb train ------------------------------------------------------------------------------------
def cmd_train(args) -> int:
    from circuit_breakers.training.config import config_parser, load_layers
    from circuit_breakers.training.experimental import ExperimentalConfig
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
    parser.add_argument("--preset", default=None, help="preset name: stage1 | stage2 | demo")
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


# -- cb sanity -----------------------------------------------------------------------------------
def cmd_sanity(args) -> int:
    from circuit_breakers.eval.generate import load_for_eval
    from circuit_breakers.eval.sanity import format_report, sanity_check

    if not 0.0 <= args.min_pass_rate <= 1.0:
        raise InputError("must be between 0 and 1", field="min-pass-rate")
    dtype = getattr(__import__("torch"), args.dtype) if args.dtype else None
    model, tok = load_for_eval(
        args.model, args.adapter, trust_remote_code=args.trust_remote_code, dtype=dtype
    )
    ok, report = sanity_check(
        model, tok, max_new_tokens=args.max_new_tokens, min_pass_rate=args.min_pass_rate
    )
    if args.json:
        print(json.dumps({"ok": ok, "report": report}, ensure_ascii=False))
    else:
        print(format_report(report))
    if not ok:
        print("COLLAPSE: the model's answers are not coherent. Offending outputs:")
        for r in report:
            if not r["coherent"]:
                print(f"--- {r['prompt']}\n{r['output']!r}\n    issues: {'; '.join(r['issues'])}")
        return 1
    return 0


# -- parser -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cb",
        description="Train circuit breakers (Representation Rerouting) into chat and tool-calling LLMs.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="verb", metavar="VERB", required=True)

    data = sub.add_parser("data", help="build, validate and inspect sample files")
    dsub = data.add_subparsers(dest="data_verb", metavar="DATA_VERB", required=True)

    v = dsub.add_parser(
        "validate", help="check a JSONL file of samples (schema; with --model also the loss masks)"
    )
    v.add_argument("file")
    v.add_argument(
        "--model",
        default=None,
        help="also render every sample with this model's chat template and verify its loss mask",
    )
    v.add_argument(
        "--trust-remote-code", action="store_true", help="allow the model's own Python code to run"
    )
    v.set_defaults(func=cmd_data_validate)

    i = dsub.add_parser("inspect", help="show rendered samples with the loss span highlighted")
    i.add_argument("file")
    _add_model_args(i)
    i.add_argument("--limit", type=int, default=None, help="show the first N samples")
    i.add_argument(
        "--json",
        action="store_true",
        help='one JSON object per sample: {"id", "n_tokens", "n_loss_tokens", "loss_text"}',
    )
    i.add_argument(
        "--no-color", action="store_true", help="mark loss spans with ⟦ ⟧ instead of colour"
    )
    i.add_argument(
        "--max-prompt-tokens",
        type=int,
        default=None,
        help="cut the prompt from the left to N tokens",
    )
    i.add_argument(
        "--max-completion-tokens",
        type=int,
        default=None,
        help="cut the completion from the right to N tokens",
    )
    i.set_defaults(func=cmd_data_inspect)

    b = dsub.add_parser(
        "build",
        help="build train.jsonl, holdout/<suite>.jsonl and stats.json from a data recipe",
    )
    b.add_argument(
        "--recipe",
        default="demo",
        help="packaged recipe name (demo, full) or a recipe YAML file (default: demo)",
    )
    b.add_argument("--output-dir", required=True, help="folder for the outputs")
    b.add_argument(
        "--model",
        default=None,
        help="model that writes the completions and counts tokens (default: the recipe's)",
    )
    b.add_argument("--seed", type=int, default=None, help="override the recipe's seed")
    b.add_argument(
        "--label-flips",
        action="store_true",
        help="check with the model (forced call, greedy) whether it makes the injected call on "
        "each AgentDojo harmful trace: labels.is_flip_success, counted in stats.json",
    )
    b.set_defaults(func=cmd_data_build)

    src = dsub.add_parser(
        "sources", help="list the pinned data artifacts with licence, version and size"
    )
    src.set_defaults(func=cmd_data_sources)

    f = dsub.add_parser("fetch", help="download and verify pinned data artifacts into the cache")
    f.add_argument(
        "name", nargs="?", default=None, help="artifact or group name (see `cb data sources`)"
    )
    f.add_argument("--all", action="store_true", help="fetch every pinned artifact")
    f.set_defaults(func=cmd_data_fetch)

    t = sub.add_parser(
        "train",
        add_help=False,
        help="train a circuit breaker (cb train --help lists every setting)",
    )
    t.add_argument("rest", nargs=argparse.REMAINDER)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser(
        "eval",
        help="evaluate a model (and adapter) on the held-out suites; or compare two evals",
        description="Generate on the held-out suites, score them and write OUT/samples.jsonl and "
        "OUT/results.json. Settings come from --config (default: the packaged "
        "configs/eval/default.yaml), flags override them.",
    )
    _add_model_args(e)
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

    s = sub.add_parser(
        "sanity",
        help="coherence gate: fixed benign prompts, exit 1 if the model's answers collapsed",
    )
    _add_model_args(s)
    s.add_argument("--adapter", default=None, help="PEFT adapter folder")
    s.add_argument("--max-new-tokens", type=int, default=48, help="tokens per answer (default 48)")
    s.add_argument(
        "--min-pass-rate",
        type=float,
        default=0.8,
        help="share of coherent answers needed to pass (default 0.8)",
    )
    s.add_argument(
        "--dtype", default=None, choices=["float32", "bfloat16", "float16"], help="weights dtype"
    )
    s.add_argument("--json", action="store_true", help="print {ok, report} as JSON")
    s.set_defaults(func=cmd_sanity)

    from circuit_breakers import demo, report  # their parsers live with them (light imports only)

    demo.add_parser(sub)
    report.add_parser(sub)

    from circuit_breakers.attack import cli as attack_cli  # `cb attack`

    attack_cli.add_parser(sub)

    from circuit_breakers.training.slurm import add_slurm_parser  # `cb slurm render`

    add_slurm_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if getattr(args, "verb", None) == "train":  # cb train parses its own flags (HfArgumentParser)
        args.rest = unknown + args.rest
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from circuit_breakers.core.redact import install_log_redaction, redact_text

    install_log_redaction()
    if getattr(args, "allow_pickle", False):
        os.environ["CB_ALLOW_PICKLE"] = "1"  # read by models.load_model_and_tokenizer
    try:
        return int(args.func(args) or 0)
    except InputError as e:
        from circuit_breakers.core.hints import with_hint

        print(f"cb: error: {redact_text(with_hint(e).format())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cb: interrupted", file=sys.stderr)
        return 130
    except Exception:
        print(redact_text(traceback.format_exc()), file=sys.stderr, end="")
        print("cb: failed (see the traceback above)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
