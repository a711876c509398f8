"""The ``cb`` command line. Thin: parse, call the library, print.

Exit codes: 0 success; 2 bad usage or bad input (the message names file, line and field);
1 a failure while running.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback

from circuit_breakers.cli import attack, data, demo, report, sanity, slurm, train
from circuit_breakers.cli import eval as eval_verb
from circuit_breakers.core.errors import InputError

#: the verbs, in the order ``cb --help`` lists them; each module has ``register(subparsers)``
VERBS = (data, train, eval_verb, sanity, demo, report, attack, slurm)


# -- parser -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cb",
        description="Train circuit breakers (Representation Rerouting) into chat and tool-calling LLMs.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb in VERBS:  # each module registers its verb (light imports only)
        verb.register(sub)
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
