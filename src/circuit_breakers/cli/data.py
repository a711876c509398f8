"""``cb data validate | inspect | build | sources | fetch``."""

from __future__ import annotations

import json
import sys
from collections import Counter

from circuit_breakers.cli.common import add_model_args
from circuit_breakers.core.errors import InputError


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


def register(sub) -> None:
    """Add ``cb data`` to the ``cb`` sub-parsers."""
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
    add_model_args(i)
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
