"""An sbatch script that runs ``cb train`` on a Slurm cluster (``cb slurm render``).

One template (``slurm/train.sbatch.j2``, packaged as ``circuit_breakers/assets/slurm/``) covers
one node and many: ``srun`` starts one ``accelerate launch`` per node (``--ntasks-per-node=1``),
and each launcher starts one training process per GPU. The rendezvous comes from the Slurm
environment at run time:

* ``MASTER_ADDR``: the first host of ``scontrol show hostnames "$SLURM_JOB_NODELIST"``;
* ``MASTER_PORT``: derived from the job id (``20000 + SLURM_JOB_ID % 20000``), so two jobs that
  share a node do not collide; ``$MASTER_PORT`` in the environment wins;
* ``--machine_rank $SLURM_NODEID``, ``--num_machines $SLURM_NNODES``, and
  ``--num_processes`` = nodes x processes per node.

Preemption and time limits: the job is ``--requeue``-able and asks Slurm for ``SIGUSR1`` a few
minutes before its time limit (``--signal=B:USR1@S``); the batch shell traps it and runs
``scontrol requeue``. A preempted job (``PreemptMode=REQUEUE``) or one on a failed node is requeued
by Slurm itself. Every attempt runs ``cb train ... --resume true``, which continues from the
newest good checkpoint in ``RUN_DIR/checkpoints`` (the first attempt finds none and starts
fresh); ``--open-mode=append`` keeps every attempt in one log, ``RUN_DIR/logs/<job>-<id>.out``.
At most ``save_steps`` optimizer steps are lost per interruption.
"""

from __future__ import annotations

import argparse
import re
import shlex
from importlib import metadata
from pathlib import Path

from circuit_breakers.core.errors import InputError

#: Same folder as ``presets.PRESET_DIR``; not imported from there, because ``config`` pulls in
#: transformers and torch, and every ``cb`` verb builds this parser (a login node renders in
#: well under a second instead of ~20 s).
PRESET_DIR = Path(__file__).resolve().parents[1] / "configs"
TEMPLATE_DIR = Path(__file__).resolve().parents[1] / "assets" / "slurm"
TEMPLATE = "train.sbatch.j2"
ACCELERATE_DIR = PRESET_DIR / "accelerate"
_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$|^\d+-\d+$")
_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")


def accelerate_config_path(name: str) -> Path:
    """``ddp`` / ``fsdp`` / ``zero2`` / ``zero3`` (packaged) or a path to an accelerate YAML."""
    packaged = ACCELERATE_DIR / f"{name}.yaml"
    if packaged.exists():
        return packaged
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    names = ", ".join(sorted(p.stem for p in ACCELERATE_DIR.glob("*.yaml")))
    raise InputError(
        f"unknown accelerate config {name!r}",
        field="accelerate-config",
        hint=f"one of {names}, or a path to an accelerate YAML file",
    )


def job_name_of(args: argparse.Namespace) -> str:
    return args.job_name or f"cb-{args.preset or 'train'}"


def _check(args: argparse.Namespace) -> None:
    if args.nodes < 1:
        raise InputError("must be at least 1", field="nodes")
    if args.gpus_per_node < 0:
        raise InputError("must be 0 (CPU nodes) or more", field="gpus-per-node")
    if args.processes_per_node is not None and args.processes_per_node < 1:
        raise InputError("must be at least 1", field="processes-per-node")
    if args.gpus_per_node and args.processes_per_node not in (None, args.gpus_per_node):
        raise InputError(
            "on GPU nodes there is one process per GPU",
            field="processes-per-node",
            hint="leave --processes-per-node out, or use --gpus-per-node 0 for CPU nodes",
        )
    if not _TIME.match(args.time):
        raise InputError(
            f"not a Slurm time limit: {args.time!r}",
            field="time",
            hint="MM, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS",
        )
    if args.signal_seconds < 0:
        raise InputError("must be 0 (no requeue signal) or more seconds", field="signal-seconds")
    if args.cpus_per_task is not None and args.cpus_per_task < 1:
        raise InputError("must be at least 1", field="cpus-per-task")
    if args.job_name and not _NAME.match(args.job_name):
        raise InputError(
            f"job name {args.job_name!r} has characters Slurm or the shell may mangle",
            field="job-name",
            hint="letters, digits, '_', '.', '+', '-'",
        )
    for flag in ("--output_dir", "--resume"):
        if any(a == flag or a.startswith(flag + "=") for a in args.train_args):
            raise InputError(
                f"{flag} is set by the template (from --run-dir, and always --resume true)",
                field="train_args",
            )


def render(args: argparse.Namespace) -> str:
    """The sbatch script text for parsed ``cb slurm render`` arguments."""
    import jinja2

    _check(args)
    preset = args.preset or None
    if preset and not (PRESET_DIR / f"{preset}.yaml").exists():
        names = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
        raise InputError(f"unknown preset {preset!r} (presets: {names})", field="preset")
    workdir = Path(args.workdir or ".").resolve()
    run_dir = (workdir / args.run_dir).resolve()
    for name, path in (("workdir", workdir), ("run-dir", run_dir)):
        if re.search(r"\s|%", str(path)):  # #SBATCH lines are not shell-quoted
            raise InputError(
                f"{path} has whitespace or '%', which #SBATCH --chdir/--output cannot take",
                field=name,
            )
    config = args.config
    if config:
        config_file = (workdir / config).resolve()
        if not config_file.exists():
            raise InputError("config file not found", file=str(config_file), field="config")
        config = str(config_file)
    train_file = str((workdir / args.train_file).resolve()) if args.train_file else None
    gpus = args.gpus_per_node
    procs = gpus if gpus else (args.processes_per_node or 1)
    acc_config = accelerate_config_path(args.accelerate_config).resolve()
    job_name = job_name_of(args)
    train = ["--output_dir", str(run_dir), "--resume", "true"]
    if preset:
        train = ["--preset", preset, *train]
    if config:
        train += ["--config", config]
    if train_file:
        train += ["--train_file", train_file]
    train += list(args.train_args)
    try:
        version = metadata.version("circuit_breakers")
    except metadata.PackageNotFoundError:  # running from a source tree
        version = "source"
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["q"] = lambda v: shlex.quote(str(v))
    return env.get_template(TEMPLATE).render(
        command=_command(args),
        version=version,
        job_name=job_name,
        nodes=args.nodes,
        gpus_per_node=gpus,
        procs_per_node=procs,
        cpus_per_task=args.cpus_per_task or (8 * gpus if gpus else procs),
        mem=args.mem,
        time=args.time,
        partition=args.partition,
        account=args.account,
        qos=args.qos,
        signal_seconds=args.signal_seconds,
        workdir=str(workdir),
        run_dir=str(run_dir),
        accelerate_config=str(acc_config),
        python=args.python,
        setup=list(args.setup),
        train_args=" ".join(shlex.quote(a) for a in train),
        cpu=not gpus,
    )


def _command(args: argparse.Namespace) -> str:
    """The settings as a ``cb slurm render`` command line (for the script's header)."""
    parts = ["cb", "slurm", "render"]
    for flag, value in (
        ("--preset", args.preset),
        ("--config", args.config),
        ("--train-file", args.train_file),
        ("--run-dir", args.run_dir),
        ("--nodes", args.nodes),
        ("--gpus-per-node", args.gpus_per_node),
        ("--processes-per-node", args.processes_per_node),
        ("--accelerate-config", args.accelerate_config),
        ("--partition", args.partition),
        ("--account", args.account),
        ("--qos", args.qos),
        ("--time", args.time),
        ("--cpus-per-task", args.cpus_per_task),
        ("--mem", args.mem),
        ("--job-name", args.job_name),
        ("--signal-seconds", args.signal_seconds),
    ):
        if value is not None:
            parts += [flag, str(value)]
    if args.train_args:
        parts += ["--", *args.train_args]
    return " ".join(shlex.quote(p) for p in parts)
