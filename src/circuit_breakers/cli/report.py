"""``cb report RUN_DIR``: the HTML page of a ``cb demo`` run (:mod:`circuit_breakers.report`)."""

from __future__ import annotations

import argparse
from typing import Any


def cmd_report(args: argparse.Namespace) -> int:
    from circuit_breakers.report.html import write_run_report
    from circuit_breakers.report.run_data import load_run

    run = load_run(args.run_dir)
    page = write_run_report(run, args.output_dir)
    for n in run.notes:
        print(f"note: {n}")
    print(f"wrote {page}")
    return 0


def register(sub: Any) -> None:
    """Add ``cb report`` to the ``cb`` sub-parsers."""
    r = sub.add_parser(
        "report",
        help="HTML report (plots, tables, examples) of a cb demo run folder",
        description="Write RUN_DIR/report/report.html (self-contained, images embedded) and its "
        "PNGs from the stages of a cb demo run; missing stages are noted on the page.",
    )
    r.add_argument("run_dir", help="the --output-dir of cb demo")
    r.add_argument("--output-dir", default=None, help="where to write (default RUN_DIR/report)")
    r.set_defaults(func=cmd_report)
