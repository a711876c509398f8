"""Data-parallel scaling of ``cb train``: 1 GPU, then N GPUs (default 2), in one command.

A random-init model of Llama-3.1-8B's shape (from a config: no weights, no download) goes
through the real training path (``prepare_model``: truncation to the stage2 target layer 15, LoRA
r=16 on blocks 0-14; ``CircuitBreakerTrainer`` with the stage2 settings, bf16, gradient
checkpointing) on synthetic batches: each pair is a harmful sample (request 16-256 + response
16-256 tokens, loss on the response) and a retain sample (64-1024 tokens, loss on the second
half). Both runs use the same seed, data order and **global batch** (per-device batch 4;
gradient accumulation 4 on 1 GPU, 2 on 2 GPUs), so their losses must agree step for step; LoRA
dropout is 0 (per-rank dropout masks would differ).

    python benchmarks/scaling.py                 # GPUs: 1 GPU, then 2 (accelerate + ddp.yaml)
    python benchmarks/scaling.py --tiny          # CPU check: tiny model, 2 gloo processes

Prints tokens/s for each run, the scaling efficiency tokens/s(N) / (N x tokens/s(1)), and the
loss parity over the first 10 steps; writes ``benchmarks/results/scaling.json``. Tokens are the
real (non-padding) tokens of both parts of each pair; throughput is measured from the end of the
warm-up steps to the end of the run, logging and data loading included.

Each run is a separate process tree: the 1-process run is a plain ``python`` child, the
N-process run is ``python -m accelerate.commands.launch --config_file configs/accelerate/ddp.yaml
--num_processes N`` of this same file with ``--worker``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "scaling.json"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from shapes import LLAMA31_8B  # noqa: E402

#: Same architecture, tiny: 16 blocks so that the stage2 layers (target 15, LoRA 0-14) exist.
TINY = dict(
    LLAMA31_8B,
    vocab_size=512,
    hidden_size=64,
    intermediate_size=128,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=2048,
    num_hidden_layers=16,
)

#: Token-length ranges (inclusive) of the synthetic samples: real size, and --tiny.
LENGTHS = {
    "full": {"request": (16, 256), "response": (16, 256), "retain": (64, 1024)},
    "tiny": {"request": (4, 16), "response": (4, 16), "retain": (8, 48)},
}


# -- worker (one training run; under accelerate launch for N > 1) ------------------------------
def synthetic_data(n_pairs: int, vocab: int, lengths: dict, seed: int):
    """``n_pairs`` harmful + ``n_pairs`` retain rows of random tokens with response-only masks."""
    from circuit_breakers.core.masks import Features
    from circuit_breakers.training.collator import CLASSES, Row, TrainData

    rng = random.Random(seed)
    retain_classes = [c for c in CLASSES if c != "harmful_flip"]
    harmful, retain = [], []
    for i in range(n_pairs):
        q, a = rng.randint(*lengths["request"]), rng.randint(*lengths["response"])
        ids = [rng.randrange(3, vocab) for _ in range(q + a)]
        harmful.append(
            Row(Features(ids, [0] * q + [1] * a), CLASSES.index("harmful_flip"), math.nan)
        )
        n = rng.randint(*lengths["retain"])
        ids = [rng.randrange(3, vocab) for _ in range(n)]
        cls = CLASSES.index(retain_classes[i % len(retain_classes)])
        retain.append(Row(Features(ids, [0] * (n // 2) + [1] * (n - n // 2)), cls, math.nan))
    return TrainData(harmful, retain, {})


def worker(args: argparse.Namespace) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, TrainerCallback

    from circuit_breakers.core.schema import DEFAULT_CLASS_WEIGHTS
    from circuit_breakers.training.collator import PairCollator, PairedDataset
    from circuit_breakers.training.config import CircuitBreakerConfig
    from circuit_breakers.training.run import prepare_model
    from circuit_breakers.training.trainer import CircuitBreakerTrainer

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    gpu = torch.cuda.is_available() and not args.tiny
    per_device = args.per_device_batch
    if args.global_batch % (per_device * world):
        raise SystemExit(
            f"global batch {args.global_batch} is not a multiple of {per_device} x {world}"
        )
    accum = args.global_batch // (per_device * world)

    shape = TINY if args.tiny else LLAMA31_8B
    dtype = torch.bfloat16 if gpu else torch.float32
    device = torch.device("cuda", local) if gpu else torch.device("cpu")
    if gpu:
        torch.cuda.set_device(device)
    torch.manual_seed(args.seed)  # same random weights on every rank and in both runs
    t0 = time.perf_counter()
    with device:
        model = AutoModelForCausalLM.from_config(
            AutoConfig.for_model("llama", **shape), dtype=dtype
        )
    init_s = time.perf_counter() - t0

    out = tempfile.mkdtemp(prefix="cb-scaling-")
    cfg = CircuitBreakerConfig(
        output_dir=out,
        model="random-init Llama-3.1-8B shape" if not args.tiny else "random-init tiny Llama",
        target_layers=[15],
        lora_layers=list(range(15)),
        lora_r=16,
        lora_alpha=32,
        lora_dropout=0.0,
        alpha=0.5,
        loss_weighting="dual",
        max_grad_norm=0.5,
        learning_rate=3e-5 if not args.tiny else 1e-3,
        max_steps=args.steps,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accum,
        bf16=gpu,
        use_cpu=not gpu,
        gradient_checkpointing=not args.no_checkpointing,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=args.seed,
        data_seed=args.seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
        **({"packing": True} if args.packing else {}),
    )
    peft_model, _, info = prepare_model(cfg, model, None)
    if gpu:
        peft_model.to(device)
    lengths = LENGTHS["tiny" if args.tiny else "full"]
    data = synthetic_data(args.steps * args.global_batch, shape["vocab_size"], lengths, args.seed)
    class_weights = {**DEFAULT_CLASS_WEIGHTS}
    tokens = [0] * (args.steps + 1)
    padded = [0] * (args.steps + 1)

    class BenchTrainer(CircuitBreakerTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            s = min(self.state.global_step, args.steps)
            tokens[s] += int(inputs["h_attention_mask"].sum() + inputs["r_attention_mask"].sum())
            padded[s] += inputs["h_input_ids"].numel() + inputs["r_input_ids"].numel()
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    class Clock(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []
            self.logs: list[dict] = []

        def _now(self) -> float:
            if gpu:
                torch.cuda.synchronize()
            return time.perf_counter()

        def on_train_begin(self, *a, **k):
            self.start = self._now()

        def on_step_end(self, *a, **k):
            self.ends.append(self._now())

        def on_log(self, a, state, control, logs=None, **k):
            if logs and "loss" in logs:
                self.logs.append({"step": state.global_step, **logs})

    clock = Clock()
    trainer = BenchTrainer(
        model=peft_model,
        args=cfg,
        train_dataset=PairedDataset(data),
        data_collator=PairCollator(0),
        callbacks=[clock],
        class_weights=class_weights,
    )
    if gpu:
        torch.cuda.reset_peak_memory_stats(device)
    trainer.train()
    # Token counts are per rank: sum them over ranks (per step).
    counts = torch.tensor([tokens, padded], dtype=torch.float64, device=device)
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(counts)
    tokens_g, padded_g = (row[: args.steps] for row in counts.tolist())
    warm = min(args.warmup, args.steps - 1)
    ends = [clock.start, *clock.ends]
    step_s = [b - a for a, b in zip(ends, ends[1:])]
    timed_s = ends[-1] - ends[warm]
    timed_tokens = sum(tokens_g[warm:])
    result = {
        "world_size": world,
        "per_device_batch": per_device,
        "gradient_accumulation_steps": accum,
        "global_batch": args.global_batch,
        "steps": args.steps,
        "warmup_steps": warm,
        "timed_seconds": timed_s,
        "tokens_per_s": timed_tokens / timed_s,
        "padded_tokens_per_s": sum(padded_g[warm:]) / timed_s,
        "seconds_per_step": timed_s / (args.steps - warm),
        "step_seconds": step_s,
        "tokens_per_step": tokens_g,
        "losses": [r["loss"] for r in clock.logs],
        "loss_rr": [r.get("loss_rr") for r in clock.logs],
        "loss_ret": [r.get("loss_ret") for r in clock.logs],
        "grad_norm": [r.get("grad_norm") for r in clock.logs],
        "model_init_seconds": init_s,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if gpu else None,
        "precision": "bf16" if gpu else "fp32",
        "device": torch.cuda.get_device_name(device) if gpu else platform.processor() or "cpu",
        "model_info": info,
    }
    if rank == 0:
        Path(args.result).write_text(json.dumps(result, indent=2))
    trainer.capture.remove()


# -- orchestrator ----------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], env: dict, label: str) -> None:
    print(f"[scaling] {label}: {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"[scaling] {label} failed with exit code {proc.returncode}")
    print(f"[scaling] {label} finished in {time.perf_counter() - t0:.0f} s", flush=True)


def parity(a: list[float], b: list[float], n: int) -> dict:
    pairs = list(zip(a[:n], b[:n]))
    abs_d = [abs(x - y) for x, y in pairs]
    rel_d = [abs(x - y) / max(abs(x), 1e-12) for x, y in pairs]
    return {
        "steps": len(pairs),
        "loss_1": [x for x, _ in pairs],
        "loss_n": [y for _, y in pairs],
        "abs_diff": abs_d,
        "rel_diff": rel_d,
        "max_abs_diff": max(abs_d),
        "max_rel_diff": max(rel_d),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="tiny model on CPU (gloo), for a check")
    p.add_argument("--nproc", type=int, default=2, help="processes (GPUs) of the second run")
    p.add_argument("--steps", type=int, default=20, help="optimizer steps per run (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="steps left out of the timing")
    p.add_argument("--parity-steps", type=int, default=10, help="steps compared (default 10)")
    p.add_argument("--global-batch", type=int, default=16, help="pairs per optimizer step")
    p.add_argument("--per-device-batch", type=int, default=4, help="pairs per micro-batch")
    p.add_argument("--accelerate-config", default="ddp", help="configs/accelerate/NAME.yaml")
    p.add_argument("--no-checkpointing", action="store_true", help="no gradient checkpointing")
    p.add_argument("--packing", action="store_true", help="cb train --packing")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--rtol",
        type=float,
        default=None,
        help="loss parity tolerance (relative; default 2e-2 in bf16, 1e-4 in fp32)",
    )
    p.add_argument("--out", default=str(RESULTS), help="result JSON")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.tiny:
        env.setdefault("OMP_NUM_THREADS", "1")
    common = [
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--global-batch",
        str(args.global_batch),
        "--per-device-batch",
        str(args.per_device_batch),
        "--seed",
        str(args.seed),
    ]
    common += ["--tiny"] * args.tiny + ["--no-checkpointing"] * args.no_checkpointing
    common += ["--packing"] * args.packing
    script = str(Path(__file__).resolve())
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cb-scaling-") as tmp:
        r1, rn = Path(tmp) / "r1.json", Path(tmp) / "rn.json"
        env1 = dict(env, CUDA_VISIBLE_DEVICES=env.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0])
        _run([sys.executable, script, "--worker", "--result", str(r1), *common], env1, "1 process")
        config = ROOT / "configs" / "accelerate" / f"{args.accelerate_config}.yaml"
        launch = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(config),
            "--num_processes",
            str(args.nproc),
            "--num_machines",
            "1",
            "--main_process_port",
            str(_free_port()),
            script,
            "--worker",
            "--result",
            str(rn),
            *common,
        ]
        _run(launch, env, f"{args.nproc} processes")
        one, many = json.loads(r1.read_text()), json.loads(rn.read_text())
    bf16 = one["precision"] == "bf16"
    rtol = args.rtol if args.rtol is not None else (2e-2 if bf16 else 1e-4)
    par = parity(one["losses"], many["losses"], args.parity_steps)
    par["rtol"] = rtol
    par["ok"] = par["max_rel_diff"] <= rtol
    efficiency = many["tokens_per_s"] / (args.nproc * one["tokens_per_s"])
    result = {
        "benchmark": "data-parallel scaling of cb train (stage2 settings)",
        "model": "tiny Llama (random init)" if args.tiny else "Llama-3.1-8B shape (random init)",
        "precision": "bf16" if bf16 else "fp32",
        "accelerate_config": args.accelerate_config,
        "nproc": args.nproc,
        "global_batch": args.global_batch,
        "steps": args.steps,
        "scaling_efficiency": efficiency,
        "target_efficiency": 0.9,
        "loss_parity": par,
        "runs": {"1": one, str(args.nproc): many},
        "wall_seconds": time.perf_counter() - t_start,
        "versions": _versions(),
        "command": " ".join(
            ["python", "benchmarks/scaling.py", *(argv if argv is not None else sys.argv[1:])]
        ),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT / "src"))
    from circuit_breakers.core.fileio import write_json

    write_json(out, result)
    _print(result, args)
    return 0


def _versions() -> dict:
    import importlib.metadata as md

    v = {"python": platform.python_version()}
    for name in ("torch", "transformers", "peft", "accelerate"):
        try:
            v[name] = md.version(name)
        except md.PackageNotFoundError:
            v[name] = None
    return v


def _print(r: dict, args) -> None:
    one, many = r["runs"]["1"], r["runs"][str(args.nproc)]
    print(
        f"\n{r['model']}, {r['precision']}, global batch {r['global_batch']} pairs, "
        f"{r['steps']} steps ({one['warmup_steps']} warm-up), device {one['device']}"
    )
    print(
        f"{'procs':>5} {'accum':>5} {'s/step':>8} {'tokens/s':>10} {'padded tok/s':>13} {'peak GiB':>9}"
    )
    for run in (one, many):
        mem = f"{run['peak_memory_gib']:.1f}" if run["peak_memory_gib"] else "-"
        print(
            f"{run['world_size']:>5} {run['gradient_accumulation_steps']:>5} {run['seconds_per_step']:>8.3f} "
            f"{run['tokens_per_s']:>10.0f} {run['padded_tokens_per_s']:>13.0f} {mem:>9}"
        )
    print(
        f"scaling efficiency tokens/s({args.nproc}) / ({args.nproc} x tokens/s(1)) = "
        f"{r['scaling_efficiency']:.3f} (target >= {r['target_efficiency']})"
    )
    par = r["loss_parity"]
    print(
        f"loss parity, first {par['steps']} steps: max |diff| {par['max_abs_diff']:.3g}, "
        f"max rel {par['max_rel_diff']:.3g} (rtol {par['rtol']:g}): {'OK' if par['ok'] else 'MISMATCH'}"
    )
    print(
        f"{'step':>4} {'loss 1 proc':>14} {'loss ' + str(args.nproc) + ' procs':>14} {'rel diff':>10}"
    )
    for i, (a, b, d) in enumerate(zip(par["loss_1"], par["loss_n"], par["rel_diff"]), start=1):
        print(f"{i:>4} {a:>14.6f} {b:>14.6f} {d:>10.2e}")
    print(f"wrote {args.out} ({r['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
