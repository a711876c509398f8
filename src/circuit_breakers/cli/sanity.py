"""``cb sanity``: the coherence gate (exit 1 when the answers collapsed)."""

from __future__ import annotations

import json

from circuit_breakers.cli.common import add_model_args
from circuit_breakers.core.errors import InputError


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


def register(sub) -> None:
    """Add ``cb sanity`` to the ``cb`` sub-parsers."""
    s = sub.add_parser(
        "sanity",
        help="coherence gate: fixed benign prompts, exit 1 if the model's answers collapsed",
    )
    add_model_args(s)
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
