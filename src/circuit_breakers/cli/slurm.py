"""``cb slurm render``: write an sbatch script for ``cb train`` (:mod:`circuit_breakers.training.slurm`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from circuit_breakers.core.fileio import atomic_write
from circuit_breakers.training.slurm import PRESET_DIR, job_name_of, render


def cmd_slurm_render(args: argparse.Namespace) -> int:
    text = render(args)
    run_dir = (Path(args.workdir or ".") / args.run_dir).resolve()
    # Slurm does not create the folder of --output: a job whose log folder is missing fails
    # before its first line runs, with nothing to read. So make it now (the script's own
    # `mkdir -p` runs too late for the first attempt).
    try:
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(
            f"cb: warning: could not create {run_dir / 'logs'} ({e.strerror}); create it on the "
            "cluster before sbatch, or the job fails without a log",
            file=sys.stderr,
        )
    if args.output == "-":
        print(text, end="")
        return 0
    out = Path(args.output) if args.output else run_dir / f"{job_name_of(args)}.sbatch"
    with atomic_write(out) as fh:
        fh.write(text)
    out.chmod(0o755)
    print(f"wrote {out}: {args.nodes} node(s); submit with: sbatch {out}")
    return 0


def register(sub) -> None:
    """Add ``cb slurm render`` to the ``cb`` sub-parsers."""
    s = sub.add_parser("slurm", help="write sbatch scripts for Slurm clusters")
    ssub = s.add_subparsers(dest="slurm_verb", metavar="SLURM_VERB", required=True)
    r = ssub.add_parser(
        "render",
        help="write an sbatch script that runs cb train (one or many nodes, requeue + resume)",
        description="Write an sbatch script: srun starts `accelerate launch` on every node, with "
        "the rendezvous taken from the Slurm environment; the job requeues itself before its "
        "time limit and every attempt runs `cb train ... --resume true`. Flags after `--` go to "
        "cb train, e.g. `-- --max_steps 500 --save_steps 25`.",
    )
    presets = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
    r.add_argument("--preset", default=None, help=f"cb train preset ({presets})")
    r.add_argument("--config", default=None, help="cb train YAML config (made absolute)")
    r.add_argument("--train-file", default=None, help="training JSONL (made absolute)")
    r.add_argument(
        "--run-dir",
        default="runs/slurm",
        help="cb train's --output_dir: adapter, checkpoints, metrics; logs go to RUN_DIR/logs "
        "(default runs/slurm, made absolute)",
    )
    r.add_argument("--nodes", type=int, default=1, help="number of nodes (default 1)")
    r.add_argument(
        "--gpus-per-node",
        type=int,
        default=8,
        help="GPUs per node, one training process each (default 8; 0 = CPU nodes)",
    )
    r.add_argument(
        "--processes-per-node",
        type=int,
        default=None,
        help="CPU nodes only: training processes per node (gloo; default 1)",
    )
    r.add_argument(
        "--accelerate-config",
        default="ddp",
        help="ddp | fsdp | zero2 | zero3 (configs/accelerate/) or a YAML path; used when the job "
        "has more than one process (default ddp)",
    )
    r.add_argument("--partition", default=None, help="Slurm partition")
    r.add_argument("--account", default=None, help="Slurm account")
    r.add_argument("--qos", default=None, help="Slurm QOS")
    r.add_argument("--time", default="24:00:00", help="time limit (default 24:00:00)")
    r.add_argument(
        "--cpus-per-task",
        type=int,
        default=None,
        help="CPUs for each node's launcher task (default 8 per GPU, or 1 per CPU process)",
    )
    r.add_argument("--mem", default=None, help="memory per node, e.g. 200G (default: Slurm's)")
    r.add_argument("--job-name", default=None, help="job name (default cb-<preset>)")
    r.add_argument(
        "--signal-seconds",
        type=int,
        default=300,
        help="ask for SIGUSR1 this many seconds before the time limit and requeue then "
        "(default 300; 0 = no self-requeue)",
    )
    r.add_argument(
        "--setup",
        action="append",
        default=[],
        help="shell line run before training, e.g. 'source .venv/bin/activate' (repeatable)",
    )
    r.add_argument("--python", default="python3", help="Python on the nodes (default python3)")
    r.add_argument(
        "--workdir",
        default=None,
        help="the job's working directory; relative paths are resolved against it "
        "(default: the current directory)",
    )
    r.add_argument(
        "--output",
        default=None,
        help="where to write the script (default RUN_DIR/<job-name>.sbatch; '-' = stdout)",
    )
    r.add_argument("train_args", nargs="*", help="after `--`: flags passed on to cb train")
    r.set_defaults(func=cmd_slurm_render)
