"""``cb slurm render`` (issue 8): the sbatch script it writes, run under a fake Slurm.

The rendered script is executed by bash with stand-ins for ``srun`` (runs the launcher once per
node, with that node's ``SLURM_NODEID``), ``scontrol`` (host list, requeue) and the Python on the
nodes (records its command line), so the multi-node rendezvous and the requeue trap are checked
as behaviour, without a cluster. The real-Slurm run is ``tests/test_slurm_smoke.py``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from circuit_breakers.cli import main

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")

FAKE_SRUN = r"""#!/bin/bash
# srun stand-in: one task per node, sequentially; node i gets SLURM_NODEID=i.
echo "srun $*" >> "$FAKE_LOG/srun.txt"
nodes=1
for a in "$@"; do case "$a" in --nodes=*) nodes=${a#--nodes=} ;; esac; done
cmd=()
for a in "$@"; do case "$a" in --*) ;; *) cmd+=("$a") ;; esac; done
sleep "${FAKE_SRUN_SLEEP:-0}"
rc=0
for ((i = 0; i < nodes; i++)); do
  SLURM_NODEID=$i SLURM_PROCID=$i "${cmd[@]}" || rc=$?
done
exit $rc
"""

FAKE_SCONTROL = r"""#!/bin/bash
echo "scontrol $*" >> "$FAKE_LOG/scontrol.txt"
if [ "$1 $2" = "show hostnames" ]; then printf 'gpu-a17\ngpu-a18\n'; fi
"""

# The Python on the nodes: records its argv (one line per node) and exits with $FAKE_RC.
FAKE_PYTHON = r"""#!/bin/bash
printf '%s\n' "$*" > "$FAKE_LOG/python-node$SLURM_NODEID.txt"
exit "${FAKE_RC:-0}"
"""


@pytest.fixture
def fake_slurm(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (
        ("srun", FAKE_SRUN),
        ("scontrol", FAKE_SCONTROL),
        ("fakepython", FAKE_PYTHON),
    ):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "fake-log"
    log.mkdir()
    return bin_dir, log


def render(tmp_path: Path, *flags: str, train: tuple[str, ...] = ()) -> tuple[Path, str]:
    out = tmp_path / "job.sbatch"
    argv = ["slurm", "render", "--workdir", str(tmp_path), "--output", str(out), *flags]
    argv += ["--", *train] if train else []
    assert main(argv) == 0
    return out, out.read_text()


def sbatch_options(text: str) -> dict[str, str]:
    opts = {}
    for line in text.splitlines():
        m = re.match(r"#SBATCH --([\w-]+)(?:=(.*))?$", line)
        if m:
            opts[m[1]] = m[2] if m[2] is not None else ""
    return opts


def run_script(script: Path, fake, *, nodes: int, gpus: int | None = None, **env: str):
    bin_dir, log = fake
    full_env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_LOG": str(log),
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NODELIST": "gpu-a[17-18]",
        "SLURM_NNODES": str(nodes),
        "SLURM_CPUS_PER_TASK": "16",
        **({"SLURM_GPUS_ON_NODE": str(gpus)} if gpus is not None else {}),
        **env,
    }
    full_env.pop("MASTER_PORT", None)
    return subprocess.Popen(
        ["bash", str(script)],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def node_argv(log: Path, node: int) -> list[str]:
    return shlex.split((log / f"python-node{node}.txt").read_text())


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_multi_node_script_passes_the_slurm_rendezvous_to_accelerate(tmp_path, fake_slurm):
    script, text = render(
        tmp_path,
        "--preset",
        "stage2",
        "--nodes",
        "2",
        "--gpus-per-node",
        "4",
        "--accelerate-config",
        "fsdp",
        "--python",
        str(fake_slurm[0] / "fakepython"),
        "--run-dir",
        "runs/big",
        train=("--max_steps", "150", "--save_steps", "25"),
    )
    subprocess.run(["bash", "-n", str(script)], check=True)
    opts = sbatch_options(text)
    run_dir = tmp_path / "runs" / "big"
    assert opts["nodes"] == "2" and opts["ntasks-per-node"] == "1"
    assert opts["gpus-per-node"] == "4"
    assert "requeue" in opts and opts["signal"] == "B:USR1@300"
    assert opts["output"] == f"{run_dir}/logs/%x-%j.out" and opts["open-mode"] == "append"
    assert (run_dir / "logs").is_dir()  # Slurm will not create it

    proc = run_script(script, fake_slurm, nodes=2, gpus=4)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    log = fake_slurm[1]
    srun = (log / "srun.txt").read_text()
    assert "--nodes=2" in srun and "--ntasks-per-node=1" in srun
    for node in (0, 1):
        argv = node_argv(log, node)
        assert argv[:2] == ["-m", "accelerate.commands.launch"]
        assert flag(argv, "--machine_rank") == str(node)
        assert flag(argv, "--num_machines") == "2"
        assert flag(argv, "--num_processes") == "8"  # 2 nodes x 4 GPUs
        assert flag(argv, "--main_process_ip") == "gpu-a17"  # first host of the allocation
        assert flag(argv, "--main_process_port") == str(20000 + 4242 % 20000)
        assert flag(argv, "--config_file").endswith("configs/accelerate/fsdp.yaml")
        train = argv[argv.index("circuit_breakers.cli") + 1 :]
        assert train[0] == "train"
        assert flag(train, "--preset") == "stage2"
        assert flag(train, "--output_dir") == str(run_dir)
        assert flag(train, "--resume") == "true"
        assert flag(train, "--max_steps") == "150"
    assert "4242 attempt 1" in out and "gpu-a17:24242, 2 node(s), 8 process(es)" in out


def test_gpu_count_follows_an_sbatch_override(tmp_path, fake_slurm):
    script, _ = render(
        tmp_path,
        "--nodes",
        "1",
        "--gpus-per-node",
        "8",
        "--python",
        str(fake_slurm[0] / "fakepython"),
    )
    proc = run_script(script, fake_slurm, nodes=1, gpus=2)  # sbatch --gpus-per-node=2 job.sbatch
    proc.communicate(timeout=30)
    assert flag(node_argv(fake_slurm[1], 0), "--num_processes") == "2"


def test_single_process_runs_cb_train_without_accelerate(tmp_path, fake_slurm):
    (tmp_path / "train.jsonl").write_text("")
    script, _ = render(
        tmp_path,
        "--gpus-per-node",
        "0",
        "--train-file",
        "train.jsonl",
        "--python",
        str(fake_slurm[0] / "fakepython"),
    )
    proc = run_script(script, fake_slurm, nodes=1)
    proc.communicate(timeout=30)
    argv = node_argv(fake_slurm[1], 0)
    assert argv[:3] == ["-m", "circuit_breakers.cli", "train"]
    assert flag(argv, "--train_file") == str(tmp_path / "train.jsonl")
    assert flag(argv, "--resume") == "true"


def test_usr1_requeues_and_waits_for_the_training_to_end(tmp_path, fake_slurm):
    script, _ = render(
        tmp_path, "--gpus-per-node", "0", "--python", str(fake_slurm[0] / "fakepython")
    )
    proc = run_script(script, fake_slurm, nodes=1, FAKE_SRUN_SLEEP="2", FAKE_RC="3")
    log = fake_slurm[1]
    deadline = time.monotonic() + 20
    while not (log / "srun.txt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)  # what Slurm sends --signal-seconds before the time limit
    out, _ = proc.communicate(timeout=30)
    assert "scontrol requeue 4242" in (log / "scontrol.txt").read_text()
    assert "SIGUSR1" in out and "requeueing job 4242" in out
    # the batch shell kept waiting for srun and passes on its exit status
    assert (log / "python-node0.txt").exists()
    assert "training exited with status 3" in out and proc.returncode == 3


def test_default_output_goes_to_the_run_dir_under_workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    argv = ["slurm", "render", "--workdir", str(work), "--run-dir", "r", "--job-name", "j1"]
    assert main(argv) == 0
    script = work / "r" / "j1.sbatch"
    assert script.exists() and os.access(script, os.X_OK)
    assert sbatch_options(script.read_text())["chdir"] == str(work)


@pytest.mark.parametrize(
    "flags, field",
    [
        (["--time", "soon"], "time"),
        (["--nodes", "0"], "nodes"),
        (["--gpus-per-node", "8", "--processes-per-node", "2"], "processes-per-node"),
        (["--accelerate-config", "zero9"], "accelerate-config"),
        (["--job-name", "a b"], "job-name"),
        (["--preset", "stage9"], "preset"),
        (["--", "--output_dir", "x"], "train_args"),
        (["--", "--resume=false"], "train_args"),
    ],
)
def test_bad_settings_exit_2_naming_the_field(tmp_path, capsys, flags, field):
    argv = ["slurm", "render", "--workdir", str(tmp_path), "--output", "-", *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("cb: error:") and f"field '{field}'" in err
