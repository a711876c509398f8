"""Circuit-breaker training throughput at Llama-3.1-8B shape: a plain reference-style step and
``CircuitBreakerTrainer`` (several settings), in one process, on the same synthetic batches.

    python benchmarks/gpu_throughput.py                 # GPU: random-init Llama-3.1-8B shape, bf16
    python benchmarks/gpu_throughput.py --tiny          # CPU smoke run of the same code paths

What runs (see benchmarks/NOTES.md for the reasoning and the numbers):

* model: random init from the Llama-3.1-8B config (no weights needed: throughput does not depend
  on their values), with the blocks after the highest target layer dropped the way the reference
  code drops them (it keeps ``max(target_layers) + 1`` blocks, 0..20);
* batches: 8 harmful (request 16-256 + response 16-256 tokens, loss on the response) and 8 retain
  rows (64-1024 tokens, loss after a request of 16..len/2), lengths uniform, right-padded;
* (a) baseline, written out plainly here: one PEFT model (LoRA r16 on blocks 0-20, all 7
  projections), the frozen pass under ``disable_adapter`` + ``no_grad``,
  ``output_hidden_states=True``, gradient checkpointing, padded batches, SDPA, AdamW;
* (b) ``CircuitBreakerTrainer`` through ``Trainer.train()`` with each setting in ``--variants``;
* the loss check: on the first batch, with identical LoRA weights, (b)'s ``loss_rr``/``loss_ret``
  and LoRA gradients against (a)'s (bf16, so "equal" means within bf16 rounding).

Throughput is real (non-pad) tokens per second over the timed steps (wall clock, CUDA synced at
both ends). MFU counts 6 x N_L FLOPs per real token, N_L = the parameters of blocks 0-20 (the
issue's definition: 27.5 GFLOP/token at 8B shape), against the issue's ~800 TFLOP/s achievable
bf16 rate (``mfu_800``) and against the H100 SXM's 989 TFLOP/s dense datasheet peak
(``mfu_989``).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from shapes import LLAMA31_8B  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

from circuit_breakers.core.fileio import write_json, write_text  # noqa: E402
from circuit_breakers.core.masks import Features  # noqa: E402
from circuit_breakers.training.collator import (  # noqa: E402
    CLASSES,
    PairCollator,
    PairedDataset,
    Row,
    TrainData,
)
from circuit_breakers.training.config import CircuitBreakerConfig  # noqa: E402
from circuit_breakers.training.run import prepare_model  # noqa: E402
from circuit_breakers.training.schedules import coefficients  # noqa: E402
from circuit_breakers.training.trainer import CircuitBreakerTrainer  # noqa: E402

TINY = dict(
    vocab_size=1000,
    hidden_size=64,
    intermediate_size=128,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    tie_word_embeddings=False,
)
PROJ = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ACHIEVABLE = 800e12  # the large-bf16-matmul figure for an H100
PEAK_H100 = 989e12  # H100 SXM dense bf16 datasheet peak

#: name -> our trainer's settings (on top of the common ones in ``our_config``)
VARIANTS = {
    "trainer_plain": dict(packing=False, gradient_checkpointing=True, optim="adamw_torch"),
    "packing": dict(packing=True, gradient_checkpointing=True, optim="adamw_torch"),
    "packing_nogc": dict(packing=True, gradient_checkpointing=False, optim="adamw_torch"),
    "packing_gc_compile": dict(
        packing=True, gradient_checkpointing=True, compile_layers=True, optim="adamw_torch"
    ),
    "packing_nogc_compile": dict(
        packing=True, gradient_checkpointing=False, compile_layers=True, optim="adamw_torch"
    ),
    "packing_nogc_fast": dict(
        packing=True, gradient_checkpointing=False, lora_fast_path=True, optim="adamw_torch_fused"
    ),
    "best": dict(
        packing=True,
        gradient_checkpointing=False,
        lora_fast_path=True,
        compile_layers=True,
        optim="adamw_torch_fused",
    ),
}
VARIANTS["best_repeat"] = VARIANTS["best"]  # the same setting again: run-to-run spread
#: after the warm-up steps, Dynamo checks only the guards that tell its cached graphs apart
#: (``torch.compiler.set_stance(skip_guard_eval_unsafe=True)``): an experiment on CPU overhead
VARIANTS["best_skip_guards"] = VARIANTS["best"]
GPU_VARIANTS = "trainer_plain,packing,packing_nogc,packing_nogc_fast,best"
TINY_VARIANTS = "trainer_plain,packing,packing_nogc,packing_nogc_fast"  # no compile: < 1 min


# -- data ------------------------------------------------------------------------------------
def synthetic_rows(gen, n, kind, scale, vocab):
    """Rows with the issue's length distribution (divided by ``scale`` for --tiny)."""
    rows = []
    lo_tok = 1000 if vocab > 2000 else 3
    for _ in range(n):
        if kind == "harmful":
            req = int(torch.randint(16 // scale, 256 // scale + 1, (1,), generator=gen))
            resp = int(torch.randint(16 // scale, 256 // scale + 1, (1,), generator=gen))
        else:
            total = int(torch.randint(64 // scale, 1024 // scale + 1, (1,), generator=gen))
            req = int(torch.randint(16 // scale, total // 2 + 1, (1,), generator=gen))
            resp = total - req
        ids = torch.randint(lo_tok, vocab, (req + resp,), generator=gen).tolist()
        rows.append(Row(Features(ids, [0] * req + [1] * resp), CLASSES.index("borderline"), 1.0))
    return rows


# -- baseline (a) ----------------------------------------------------------------------------
def plain_reroute(h, h0, mask):
    m = mask.bool()
    x, x0 = h[:, m].float(), h0[:, m].float()
    cos = (x * x0).sum(-1) / (x.norm(dim=-1).clamp_min(1e-8) * x0.norm(dim=-1).clamp_min(1e-8))
    return torch.relu(cos).mean()


def plain_retain(h, h0, mask):
    m = mask.bool()
    return (h[:, m].float() - h0[:, m].float()).norm(dim=-1).mean()


def baseline_loss(model, batch, layers, cs, cr):
    """The reference-style loss: frozen pass under disable_adapter, hidden states of all layers."""

    def states(ids, att):
        hs = model(input_ids=ids, attention_mask=att, output_hidden_states=True).hidden_states
        return torch.stack([hs[layer] for layer in layers])

    with model.disable_adapter():
        model.eval()
        with torch.no_grad():
            h0 = states(batch["h_input_ids"], batch["h_attention_mask"])
            r0 = states(batch["r_input_ids"], batch["r_attention_mask"])
        model.train()
    h = states(batch["h_input_ids"], batch["h_attention_mask"])
    r = states(batch["r_input_ids"], batch["r_attention_mask"])
    l_rr = plain_reroute(h, h0, batch["h_loss_mask"])
    l_ret = plain_retain(r, r0, batch["r_loss_mask"])
    return cs * l_rr + cr * l_ret, l_rr.detach(), l_ret.detach()


def to_device(batch, device):
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def lora_params(model):
    return {n: p for n, p in model.named_parameters() if "lora_" in n}


def lora_grads(model, keep):
    return {
        n: p.grad.detach().float().cpu().clone() for n, p in lora_params(model).items() if n in keep
    }


def grad_agreement(g, ref, prefix="grad"):
    """Relative error and cosine of all LoRA gradients (concatenated), in float64: a float32
    dot product over ~20 M entries is itself off by ~1e-3."""
    keys = sorted(ref)
    a = torch.cat([g[k].flatten() for k in keys]).double()
    b = torch.cat([ref[k].flatten() for k in keys]).double()
    return {
        f"{prefix}_rel_err": float((a - b).norm() / b.norm()),
        f"{prefix}_cosine": float((a @ b) / (a.norm() * b.norm())),
        "n_lora_tensors": len(keys),
    }


# -- helpers ---------------------------------------------------------------------------------
class Clock:
    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def now(self):
        self.sync()
        return time.perf_counter()

    def reset_peak(self):
        if self.cuda:
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak(self):
        if not self.cuda:
            return None, None
        g = 2**30
        return torch.cuda.max_memory_allocated() / g, torch.cuda.max_memory_reserved() / g


def layer_params(cfg) -> int:
    h, i = cfg.hidden_size, cfg.intermediate_size
    hd = h // cfg.num_attention_heads
    attn = h * hd * (2 * cfg.num_attention_heads + 2 * cfg.num_key_value_heads)
    return attn + 3 * h * i + 2 * h


def matmul_tflops(device) -> float | None:
    if device.type != "cuda":
        return None
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return 10 * 2 * 8192**3 / (start.elapsed_time(end) / 1e3) / 1e12


def attention_check(device) -> dict | None:
    """Packed attention (the kernel ``packing`` uses here) against fp32 per-sequence SDPA:
    output and q/k/v gradients, GQA 32/8 heads, four sequences."""
    from circuit_breakers.training import packing

    lens, hq, hkv, d = [100, 300, 57, 1024], 32, 8, 128
    n = sum(lens)
    gen = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(1, h, n, d, generator=gen).to(device, torch.bfloat16).requires_grad_()
        for h in (hq, hkv, hkv)
    )
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32, device=device)
    kw = {
        "cu_seq_lens_q": cu,
        "cu_seq_lens_k": cu,
        "max_length_q": max(lens),
        "max_length_k": max(lens),
    }
    out, _ = packing.varlen_attention(None, q, k, v, None, scaling=d**-0.5, **kw)
    grad = torch.randn(out.shape, generator=gen).to(device, out.dtype)
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), grad)
    q32, k32, v32 = (t.detach().float().requires_grad_() for t in (q, k, v))
    refs = []
    for s, e in zip(cu[:-1].tolist(), cu[1:].tolist()):
        refs.append(
            torch.nn.functional.scaled_dot_product_attention(
                q32[:, :, s:e],
                k32[:, :, s:e].repeat_interleave(hq // hkv, 1),
                v32[:, :, s:e].repeat_interleave(hq // hkv, 1),
                is_causal=True,
            )
        )
    ref = torch.cat(refs, 2).transpose(1, 2)  # [1, n, hq, d], like the packed output
    rq, rk, rv = torch.autograd.grad(ref, (q32, k32, v32), grad.float())

    def rel(a, b):
        return ((a.float() - b).norm() / b.norm()).item()

    return {
        "backend": packing.attention_backend(torch.bfloat16, device),
        "out_rel_err": rel(out, ref),
        "dq_rel_err": rel(dq, rq),
        "dk_rel_err": rel(dk, rk),
        "dv_rel_err": rel(dv, rv),
    }


def profile_table(prof, rows=18) -> tuple[str, dict]:
    """Top kernels by self device time, and device time by kernel family."""
    table = ""
    for key in ("self_device_time_total", "self_cuda_time_total"):
        try:
            table = prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=70)
            break
        except Exception:  # noqa: BLE001 - the key's name changed across torch versions
            continue
    fams: dict[str, float] = {}
    for e in prof.events():
        if str(getattr(e, "device_type", "")).endswith("CUDA") is False:
            continue
        t = getattr(e, "device_time", None) or getattr(e, "cuda_time", 0.0) or 0.0
        n = e.name.lower()
        if "flash" in n or "fmha" in n or "attention" in n:
            fam = "attention"
        elif any(s in n for s in ("gemm", "nvjet", "cutlass", "xmma", "sm90_", "splitk")):
            fam = "matmul"
        elif "triton" in n:
            fam = "triton (compiled fusions)"
        elif "memcpy" in n or "memset" in n or "copy" in n:
            fam = "copies"
        elif "elementwise" in n or "vectorized" in n or "reduce" in n:
            fam = "eager elementwise/reductions"
        else:
            fam = "other"
        fams[fam] = fams.get(fam, 0.0) + t / 1e3  # us -> ms
    return table, dict(sorted(fams.items(), key=lambda kv: -kv[1]))


def profiled(fn, device, steps=2, cpu_table_path=None):
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    clock = Clock(device)
    with profile(activities=acts) as prof:
        t0 = clock.now()
        for _ in range(steps):
            fn()
        wall = clock.now() - t0
    table, fams = profile_table(prof)
    if cpu_table_path is not None:
        write_text(
            cpu_table_path,
            prof.key_averages().table(
                sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=70
            ),
        )
    fams["device_busy_ms"] = sum(fams.values())
    return table, {
        "wall_ms_per_step": 1e3 * wall / steps,
        **{k: v / steps for k, v in fams.items()},
    }


# -- main ------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny model on the CPU (smoke test)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps (3; --tiny: 1)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per run (6; --tiny: 3)")
    ap.add_argument("--batch", type=int, default=8, help="harmful rows (= retain rows) per step")
    ap.add_argument(
        "--variants",
        default=None,
        help=f"comma-separated names from {', '.join(VARIANTS)} "
        f"(default: {GPU_VARIANTS}; --tiny: {TINY_VARIANTS})",
    )
    ap.add_argument(
        "--profile-variant", default="best", help="which of ours --profile profiles (2 steps)"
    )
    ap.add_argument("--b-std", type=float, default=0.02, help="lora_B init std (loss check)")
    ap.add_argument("--profile", action="store_true", help="torch profiler on baseline and best")
    ap.add_argument("--out", default=None, help="JSON path (default: results/ for GPU runs)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.variants is None:
        args.variants = TINY_VARIANTS if args.tiny else GPU_VARIANTS
    if args.warmup is None:
        args.warmup = 1 if args.tiny else 3
    if args.steps is None:
        args.steps = 3 if args.tiny else 6

    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    spec = TINY if args.tiny else LLAMA31_8B
    targets = [2, 4] if args.tiny else [10, 20]
    scale = 8 if args.tiny else 1
    top = max(targets)
    out_dir = Path(os.environ.get("OUT", tempfile.mkdtemp(prefix="cb-bench-")))
    out_json = args.out or (
        None if args.tiny else str(Path(__file__).parent / "results" / "gpu_throughput.json")
    )
    work_dir = Path(tempfile.mkdtemp(prefix="cb-bench-trainer-"))  # Trainer output, not kept
    clock = Clock(device)
    if args.tiny:
        torch.set_num_threads(1)  # small matrices: extra threads only contend (2 shared cores)
    torch.manual_seed(args.seed)

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig, TrainerCallback

    env = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "transformers": __import__("transformers").__version__,
        "peft": __import__("peft").__version__,
        "matmul_8192_tflops": matmul_tflops(device),
    }
    print("env:", env, flush=True)
    if device.type == "cuda":
        try:
            env["attention_check"] = attention_check(device)
        except Exception as e:  # noqa: BLE001 - report and go on: the baseline does not need it
            env["attention_check"] = {"error": f"{type(e).__name__}: {e}"}
        print("packed attention vs fp32 SDPA:", env["attention_check"], flush=True)

    # model: blocks 0..top kept (the reference's truncation), random init
    mcfg = LlamaConfig(**{**spec, "num_hidden_layers": top + 1})
    mcfg._attn_implementation = "sdpa"
    t0 = time.perf_counter()
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(mcfg, dtype=dtype)
    n_l = layer_params(mcfg) * (top + 1)
    flop_per_token = 6 * n_l
    print(
        f"model built in {time.perf_counter() - t0:.1f}s; N_L(blocks 0..{top}) = {n_l / 1e9:.3f}B, "
        f"6*N_L = {flop_per_token / 1e9:.2f} GFLOP/token",
        flush=True,
    )

    # data: the same batches for every run
    n_batches = args.warmup + args.steps
    gen = torch.Generator().manual_seed(args.seed)
    nb = args.batch
    harmful = synthetic_rows(gen, nb * n_batches, "harmful", scale, spec["vocab_size"])
    retain = synthetic_rows(gen, nb * n_batches, "retain", scale, spec["vocab_size"])
    collate = PairCollator(pad_token_id=0)
    batches = [
        collate(
            [
                {"h": h, "r": r}
                for h, r in zip(harmful[i * nb : (i + 1) * nb], retain[i * nb : (i + 1) * nb])
            ]
        )
        for i in range(n_batches)
    ]
    real = [int(b["h_attention_mask"].sum() + b["r_attention_mask"].sum()) for b in batches]
    padded = [b["h_input_ids"].numel() + b["r_input_ids"].numel() for b in batches]
    print(
        f"batches: {nb}+{nb} rows, real tokens/step mean {sum(real) / len(real):.0f}, "
        f"padded {sum(padded) / len(padded):.0f} ({sum(real) / sum(padded):.0%} real)",
        flush=True,
    )

    total_steps = n_batches
    cs, cr = coefficients("dual", 0, total_steps, 10.0)
    results: dict = {
        "env": env,
        "setup": {
            "model": "random-init Llama-3.1-8B shape" if not args.tiny else "tiny llama (CPU)",
            "blocks_built": top + 1,
            "target_layers": targets,
            "batch": f"{nb} harmful + {nb} retain",
            "lengths": "Ds request U(16,256) + response U(16,256); Dr U(64,1024)"
            + (" (divided by 8)" if args.tiny else ""),
            "lora": "r16 alpha16 dropout0, q/k/v/o/gate/up/down",
            "dtype": str(dtype),
            "warmup_steps": args.warmup,
            "timed_steps": args.steps,
            "real_tokens_per_step_mean": sum(real) / len(real),
            "padded_tokens_per_step_mean": sum(padded) / len(padded),
            "flop_per_token_6NL": flop_per_token,
            "mfu_reference_tflops": ACHIEVABLE / 1e12,
            "coefficients_step0": [cs, cr],
        },
        "runs": {},
    }

    def save():
        write_json(out_dir / "gpu_throughput.json", results)
        if out_json:
            write_json(out_json, results)

    def record(name, step_times, tokens, wall, extra=None):
        alloc, reserved = clock.peak()
        tps = tokens / wall
        row = {
            "tokens_per_s": tps,
            "step_s_median": sorted(step_times)[len(step_times) // 2] if step_times else None,
            "mfu_800": tps * flop_per_token / ACHIEVABLE,
            "mfu_989": tps * flop_per_token / PEAK_H100,
            "peak_alloc_gib": alloc,
            "peak_reserved_gib": reserved,
            **(extra or {}),
        }
        results["runs"][name] = row
        save()
        print(
            f"[{name}] {tps:,.0f} tok/s, step {row['step_s_median']}, "
            f"MFU(800) {row['mfu_800']:.1%}, peak {alloc}",
            flush=True,
        )
        return row

    # ---- (a) baseline -----------------------------------------------------------------------
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    lcfg = LoraConfig(
        r=16,
        lora_alpha=16,
        lora_dropout=0.0,
        target_modules=PROJ,
        layers_to_transform=list(range(top + 1)),
        task_type="CAUSAL_LM",
    )
    peft = get_peft_model(model, lcfg)
    g = torch.Generator().manual_seed(args.seed + 1)
    with torch.no_grad():
        for n, p in lora_params(peft).items():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * args.b_std)
    init_lora = {n: p.detach().cpu().clone() for n, p in lora_params(peft).items()}
    ours_keys = {n for n in init_lora if int(n.split(".layers.")[1].split(".")[0]) < top}

    b0 = to_device(batches[0], device)
    peft.train()
    loss, l_rr, l_ret = baseline_loss(peft, b0, targets, cs, cr)
    loss.backward()
    ref = {"loss": loss.item(), "loss_rr": l_rr.item(), "loss_ret": l_ret.item()}
    ref_grads = lora_grads(peft, ours_keys)
    peft.zero_grad(set_to_none=True)
    results["loss_check"] = {"baseline": ref}
    print("baseline losses on batch 0:", ref, flush=True)

    opt = torch.optim.AdamW([p for p in peft.parameters() if p.requires_grad], lr=1e-4)
    clock.reset_peak()
    times, tokens, t_first = [], 0, None
    for i, batch in enumerate(batches):
        t = clock.now()
        if i == args.warmup:
            t_first = t
        b = to_device(batch, device)
        loss, _, _ = baseline_loss(peft, b, targets, cs, cr)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in peft.parameters() if p.requires_grad], 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= args.warmup:
            times.append(clock.now() - t)
            tokens += real[i]
    record("baseline", times, tokens, clock.now() - t_first)
    if args.profile:
        b = to_device(batches[-1], device)

        def base_step(peft=peft, b=b, opt=opt):
            loss, _, _ = baseline_loss(peft, b, targets, cs, cr)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        table, fams = profiled(base_step, device, steps=1)
        write_text(out_dir / "profile_baseline.txt", table)
        results["runs"]["baseline"]["profile_ms"] = fams
        print("baseline profile (ms/step):", fams, flush=True)

    # ---- (b) our trainer ----------------------------------------------------------------------
    del opt, loss, b0
    base = peft.unload()
    base.gradient_checkpointing_disable()
    del peft
    clock.reset_peak()

    class SequentialTrainer(CircuitBreakerTrainer):
        def _get_train_sampler(self, train_dataset=None):
            return torch.utils.data.SequentialSampler(train_dataset or self.train_dataset)

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.begin, self.end = [], []

        def on_step_begin(self, a, state, control, **kw):
            self.begin.append(clock.now())

        def on_step_end(self, a, state, control, **kw):
            self.end.append(clock.now())

    class SkipGuards(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            if state.global_step == args.warmup:
                torch.compiler.set_stance("default", skip_guard_eval_unsafe=True)

        def on_train_end(self, a, state, control, **kw):
            torch.compiler.set_stance("default")

    data = PairedDataset(TrainData(harmful, retain))
    ours_model = None
    first_grads = None  # our first setting's LoRA gradients on batch 0 (bf16 vs bf16)
    for name in [v for v in args.variants.split(",") if v]:
        trainer = None
        try:
            settings = VARIANTS[name]
            cfg = CircuitBreakerConfig(
                output_dir=str(work_dir / name),
                model="random-llama",
                target_layers=targets,
                lora_r=16,
                lora_alpha=16,
                lora_dropout=0.0,
                lora_init_b_std=args.b_std,
                loss_weighting="dual",
                alpha=10.0,
                learning_rate=1e-4,
                lr_scheduler_type="constant",
                max_steps=total_steps,
                per_device_train_batch_size=nb,
                max_grad_norm=1.0,
                logging_steps=10**6,
                save_strategy="no",
                report_to="none",
                disable_tqdm=True,
                bf16=device.type == "cuda",
                use_cpu=device.type == "cpu",
                seed=args.seed,
                **settings,
            )
            if ours_model is None:
                ours_model, _, info = prepare_model(cfg, base, tokenizer=None)
                results["setup"]["ours_blocks"] = info["num_layers"] - info["dropped_layers"]
                del base
            m = ours_model
            if cfg.gradient_checkpointing:
                m.enable_input_require_grads()
            else:
                m.gradient_checkpointing_disable()
                if hasattr(m.get_base_model(), "_require_grads_hook"):
                    m.disable_input_require_grads()
            with torch.no_grad():
                params = lora_params(m)
                assert set(params) == ours_keys, (
                    "LoRA layout differs from the baseline's blocks 0..top-1"
                )
                for n, p in params.items():
                    p.copy_(init_lora[n])
            timer = StepTimer()
            trainer = SequentialTrainer(
                model=m,
                args=cfg,
                train_dataset=data,
                data_collator=collate,
                callbacks=[timer] + ([SkipGuards()] if name.endswith("skip_guards") else []),
                class_weights={"borderline": 1.0},
            )
            # loss check on batch 0 (identical LoRA weights); also the first compile for compile_layers
            t_check = time.perf_counter()
            trainer.state.max_steps, trainer.state.global_step = total_steps, 0
            m.train()
            if cfg.gradient_checkpointing:
                m.gradient_checkpointing_enable(
                    gradient_checkpointing_kwargs=cfg.gradient_checkpointing_kwargs
                )
            # bf16 training runs the forward under autocast (accelerate wraps model.forward in it
            # once train() prepares the model): do the same here
            amp = (
                torch.autocast(device.type, dtype=torch.bfloat16)
                if cfg.bf16
                else contextlib.nullcontext()
            )
            with trainer.speed_context(m):  # as in training_step: the backward may recompute
                with trainer.compute_loss_context_manager(), amp:
                    loss = trainer.compute_loss(m, to_device(batches[0], device))
                loss.backward()
            diagnostics = trainer.pop_diagnostics()  # also restarts the token count
            got = {
                "loss": loss.item(),
                "loss_rr": diagnostics["loss_rr"][-1],
                "loss_ret": diagnostics["loss_ret"][-1],
            }
            check = {
                k: {"ours": got[k], "rel_err": abs(got[k] - ref[k]) / abs(ref[k])} for k in got
            }
            grads = lora_grads(m, ours_keys)
            check.update(grad_agreement(grads, ref_grads))
            if first_grads is None:
                first_grads, first_name = grads, name
            else:
                check.update(grad_agreement(grads, first_grads, prefix=f"vs_{first_name}_grad"))
            del grads
            check["first_call_s"] = time.perf_counter() - t_check
            m.zero_grad(set_to_none=True)
            results["loss_check"][name] = check
            print(f"[{name}] loss check:", check, flush=True)
            del loss

            clock.reset_peak()
            t_train = time.perf_counter()
            out = trainer.train()
            train_s = time.perf_counter() - t_train
            steps = len(timer.end)
            assert steps == total_steps and trainer.tokens_since_log == sum(real), (
                steps,
                trainer.tokens_since_log,
                sum(real),
            )
            step_times = [e - b for b, e in zip(timer.begin, timer.end)][args.warmup :]
            wall = timer.end[-1] - timer.begin[args.warmup]
            extra = {
                "settings": settings,
                "train_call_s": train_s,
                "train_loss_mean_all_steps": out.training_loss,
            }
            if settings.get("compile_layers"):
                from torch._dynamo.utils import counters

                extra["dynamo"] = {
                    k: dict(v) for k, v in counters.items() if k in ("stats", "graph_break")
                }
            record(name, step_times, sum(real[args.warmup :]), wall, extra)
            if args.profile and name == args.profile_variant:
                b = to_device(batches[-1], device)

                def our_step(trainer=trainer, m=m, b=b):
                    trainer.training_step(m, b)
                    trainer.optimizer.step()
                    trainer.optimizer.zero_grad(set_to_none=True)

                table, fams = profiled(
                    our_step, device, steps=2, cpu_table_path=out_dir / f"profile_{name}_cpu.txt"
                )
                write_text(out_dir / f"profile_{name}.txt", table)
                results["runs"][name]["profile_ms"] = fams
                print(f"{name} profile (ms/step):", fams, flush=True)
            trainer.capture.remove()
            trainer = None
            clock.reset_peak()
        except Exception as e:  # noqa: BLE001 - record, free, go on with the next setting
            import traceback

            traceback.print_exc()
            results["runs"][name] = {"error": f"{type(e).__name__}: {str(e)[:400]}"}
            save()
            if trainer is not None:
                trainer.capture.remove()
                trainer = None
            gc.collect()
            clock.reset_peak()

    # ---- summary --------------------------------------------------------------------------------
    base_tps = results["runs"]["baseline"]["tokens_per_s"]
    limit = ACHIEVABLE / flop_per_token
    lines = [
        f"{'run':<22}{'tok/s':>10}{'x base':>8}{'MFU800':>8}{'MFU989':>8}{'peak GiB':>10}"
        f"{'d loss_rr':>11}{'d loss_ret':>11}{'d grad':>9}{'d grad 1st':>11}"
    ]
    for name, r in results["runs"].items():
        if "error" in r:
            lines.append(f"{name:<22}failed: {r['error'][:120]}")
            continue
        r["speedup"] = r["tokens_per_s"] / base_tps
        c = results["loss_check"].get(name, {}) if name != "baseline" else {}
        peak = r["peak_alloc_gib"]
        lines.append(
            f"{name:<22}{r['tokens_per_s']:>10,.0f}{r['speedup']:>8.2f}{r['mfu_800']:>8.1%}"
            f"{r['mfu_989']:>8.1%}{(f'{peak:.1f}' if peak is not None else '-'):>10}"
            f"{c.get('loss_rr', {}).get('rel_err', math.nan):>11.2e}"
            f"{c.get('loss_ret', {}).get('rel_err', math.nan):>11.2e}"
            f"{c.get('grad_rel_err', math.nan):>9.1e}"
            f"{next((v for k, v in c.items() if k.endswith('_grad_rel_err')), math.nan):>11.1e}"
        )
    lines.append(
        f"limit at 800 TFLOP/s: {limit:,.0f} tok/s; baseline losses {ref}; "
        "d = relative difference to the baseline on batch 0 (losses; all LoRA gradients); "
        "d grad 1st = to our first setting's gradients (both bf16 autocast)"
    )
    results["limit_tokens_per_s_800"] = limit
    save()
    table = "\n".join(lines)
    write_text(out_dir / "table.txt", table + "\n")
    print(table, flush=True)


if __name__ == "__main__":
    main()
