"""Collect a GPU efficacy run on a machine without a GPU, after the device call ran out of time
between the last stage and the results file.

    python scripts/collect_gpu_run.py "NVIDIA H100 80GB HBM3" ARGS...   # ARGS: efficacy.py's own

Every stage of every seed must already be complete under --output-dir (its stage.json hashes
include ``device: cuda``, so pass ``--device cuda``); this only re-reads them, writes the
report and the results file. CUDA is reported as present with the run's card name, and nothing
else is faked: a stage that is not complete would start on CUDA and fail at once.
"""

import runpy
import sys
from pathlib import Path

import torch

if len(sys.argv) < 3 or "--device" not in sys.argv:
    sys.exit(__doc__)
card = sys.argv[1]
torch.cuda.is_available = lambda: True
torch.cuda.get_device_name = lambda *a: card
script = Path(__file__).resolve().parent.parent / "benchmarks" / "efficacy.py"
sys.argv = ["benchmarks/efficacy.py", *sys.argv[2:]]
runpy.run_path(str(script), run_name="__main__")
