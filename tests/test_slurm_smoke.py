"""The real-Slurm smoke test (issue 8): ``scripts/slurm_smoke.sh`` end to end.

It starts munged, a single-node slurmctld and slurmd on localhost, submits the script of
``cb slurm render --preset stage2`` for a tiny CPU run (2 gloo processes through srun +
accelerate), makes the job requeue itself with SIGUSR1 half way, and checks that the job ends
COMPLETED, that the second attempt resumed from a checkpoint, and that the adapter loads.

~3 minutes on 2 busy cores, so it is marked ``slow`` (``make test`` leaves it out; run it with
``pytest -m slow tests/test_slurm_smoke.py``), and it runs only where Debian's ``slurm-wlm`` and
``munge`` are installed and we are root (the script writes munge's key and runs the daemons).
On a clean machine it is skipped: install them with ``apt-get install slurm-wlm munge``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not all(shutil.which(b) for b in ("slurmctld", "slurmd", "munged", "sbatch")),
        reason="needs Debian's slurm-wlm and munge (apt-get install slurm-wlm munge)",
    ),
    pytest.mark.skipif(os.geteuid() != 0, reason="the smoke test runs the Slurm daemons as root"),
]


def test_slurm_job_completes_after_a_requeue_and_its_adapter_loads(tmp_path):
    log = tmp_path / "smoke.log"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "slurm_smoke.sh"), "--log", str(log)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    text = log.read_text() if log.exists() else proc.stdout
    assert proc.returncode == 0, text[-4000:]
    assert "SLURM SMOKE: PASSED" in text
    for check in (
        "PASS job state COMPLETED",
        "PASS requeued by the USR1 trap and restarted",
        "PASS second attempt resumed from",
        "PASS adapter loads with PEFT",
    ):
        assert check in text, text[-4000:]
