"""Multi-process training on CPU (issue 8): gloo process groups stand in for NCCL.

* ``reduce_metrics`` averages per-rank diagnostics and sums token counts (2 forked processes).
* LoRA + ``disable_adapter()`` under FSDP2 (``fully_shard``, what ``configs/accelerate/fsdp.yaml``
  selects): the frozen target-layer states equal an unsharded base model's, before and after an
  optimizer step, and the step changes only LoRA weights (2 forked processes, gloo). accelerate
  itself only turns FSDP on for GPUs (on CPU it silently falls back to DDP), so this runs
  ``fully_shard`` directly, with the trainer's own ``LayerCapture``.
* ``cb train`` under ``accelerate launch --config_file configs/accelerate/ddp.yaml
  --num_processes 2`` against one process at the same global batch (``slow``: ~80 s on 2 busy
  cores). Run ``python tests/test_distributed.py`` for the same comparison as a printed report.

The forked workers inherit the imports of this process, so each test costs milliseconds of
compute instead of seconds of imports.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from circuit_breakers.training.distributed import reduce_metrics

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
sys.path.insert(0, str(TESTS))

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo"
)


def _in_group(rank: int, world: int, init_file: str, fn, queue) -> None:
    try:
        torch.set_num_threads(1)
        dist.init_process_group(
            "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
        )
        try:
            queue.put((rank, fn(rank, world)))
        finally:
            dist.destroy_process_group()
    except BaseException:
        queue.put((rank, RuntimeError(traceback.format_exc())))


def run_ranks(fn, world: int = 2, timeout: float = 120) -> list:
    """``fn(rank, world)`` in ``world`` forked processes of one gloo group; results by rank."""
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "rendezvous")
        procs = [
            ctx.Process(target=_in_group, args=(r, world, init_file, fn, queue))
            for r in range(world)
        ]
        for p in procs:
            p.start()
        results = {}
        deadline = time.monotonic() + timeout
        while len(results) < world and time.monotonic() < deadline:
            try:
                rank, value = queue.get(timeout=1)
                results[rank] = value
            except Exception:
                if all(p.exitcode is not None for p in procs) and queue.empty():
                    break
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
    for rank in range(world):
        assert rank in results, f"rank {rank} gave no result"
        if isinstance(results[rank], Exception):
            raise results[rank]
    return [results[r] for r in range(world)]


# -- metrics over ranks ----------------------------------------------------------------------
def _reduce(rank: int, world: int):
    means = {"train/loss_rr": 0.5 + rank, "rr/cos_sim_mean": -0.25 * rank, "a/b": 3.0}
    return reduce_metrics(means, tokens=1000 + 7 * rank)


def test_reduce_metrics_averages_means_and_sums_tokens_over_ranks():
    out = run_ranks(_reduce)
    for means, tokens in out:
        assert means == pytest.approx({"train/loss_rr": 1.0, "rr/cos_sim_mean": -0.125, "a/b": 3.0})
        assert tokens == 2007
    # one process: unchanged, no collective
    assert reduce_metrics({"x": 2.0}, 5) == ({"x": 2.0}, 5)


# -- LoRA + disable_adapter under FSDP2 ------------------------------------------------------
def _fsdp_lora(rank: int, world: int) -> dict:
    from peft import LoraConfig, get_peft_model
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from circuit_breakers.training.trainer import LayerCapture, decoder_layers

    from kit import tiny_model

    ref = tiny_model("chatml", layers=3, hidden=32, seed=0)
    base = tiny_model("chatml", layers=3, hidden=32, seed=0)  # same weights as ref
    torch.manual_seed(1)  # same LoRA init on every rank
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"])
    lora.layers_to_transform = [0, 1]
    lora.init_lora_weights = False  # B != 0: the adapter changes the states from the start
    model = get_peft_model(base, lora)
    frozen_before = {
        n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad
    }
    lora_before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    mesh = init_device_mesh("cpu", (world,))
    for block in decoder_layers(model):
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    capture, ref_capture = LayerCapture(model, [2]), LayerCapture(ref, [2])
    ids = torch.randint(3, 100, (2, 9), generator=torch.Generator().manual_seed(rank))

    def states():
        with torch.no_grad():
            want = ref_capture.run(ref, ids, None)
            with model.disable_adapter():
                frozen = capture.run(model, ids, None)
            adapted = capture.run(model, ids, None)
        return want, frozen, adapted

    want, frozen, adapted = states()
    out = {
        "frozen_vs_base": float((frozen - want).abs().max()),
        "adapted_vs_base": float((adapted - want).abs().max()),
    }
    # one optimizer step on the LoRA weights (a rerouting-like loss: push away from the frozen)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    h = capture.run(model, ids, None)
    torch.nn.functional.cosine_similarity(h, frozen, dim=-1).relu().mean().backward()
    opt.step()
    want, frozen_after, adapted_after = states()
    out["frozen_vs_base_after_step"] = float((frozen_after - want).abs().max())
    out["adapted_moved"] = float((adapted_after - adapted).abs().max())

    def full(p):
        return p.full_tensor() if hasattr(p, "full_tensor") else p

    params = {n.replace("_fsdp_wrapped_module.", ""): p for n, p in model.named_parameters()}
    out["frozen_changed"] = sorted(
        n
        for n, p in params.items()
        if not p.requires_grad and not torch.equal(full(p), frozen_before[n])
    )
    out["lora_changed"] = sum(
        not torch.equal(full(p), lora_before[n]) for n, p in params.items() if p.requires_grad
    )
    out["n_lora"] = len(lora_before)
    out["block_type"] = type(decoder_layers(model)[0]).__name__
    return out


def test_disable_adapter_gives_the_base_model_states_under_fsdp2():
    # warm the imports and the tokenizer cache here, once, for both forked ranks
    import peft  # noqa: F401
    import torch.distributed.fsdp  # noqa: F401

    from kit import tiny_model

    tiny_model("chatml", layers=1, hidden=8)
    for rank, r in enumerate(run_ranks(_fsdp_lora)):
        assert r["block_type"].startswith("FSDP"), r  # the blocks really are sharded
        assert r["frozen_vs_base"] < 1e-6, (rank, r)
        assert r["adapted_vs_base"] > 1e-3, (rank, r)  # the adapter is on outside the context
        assert r["frozen_vs_base_after_step"] < 1e-6, (rank, r)
        assert r["adapted_moved"] > 0, (rank, r)
        assert r["frozen_changed"] == [], (rank, r)
        assert r["lora_changed"] == r["n_lora"] > 0, (rank, r)


# -- cb train: 2 processes (accelerate + ddp.yaml) vs 1 at the same global batch -----------
#: Keys that must agree between the runs (tokens_per_s is wall-clock; epoch is equal anyway).
COMPARED = (
    "train/loss",
    "train/loss_rr",
    "train/loss_ret",
    "train/cs",
    "train/cr",
    "rr/cos_sim_mean",
    "ret/l2_mean",
    "train/grad_norm",
    "mask/harmful_frac",
    "mask/retain_frac",
    "lr",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_inputs(folder: Path) -> tuple[Path, Path]:
    """A tiny random model folder (real SmolLM2 tokenizer) and a 12-sample training file."""
    from kit import base_tokenizer, tiny_model

    model = folder / "model"
    tiny_model("chatml", layers=3, hidden=32).save_pretrained(model)
    base_tokenizer().save_pretrained(model)
    rows = [
        {
            "user_prompt": f"how do I do harmful thing {i}?",
            "harmful_completion": f"Step {i}: get the tools, then act.",
        }
        for i in range(4)
    ] + [
        {
            "user_prompt": f"what is {i} plus one?",
            "benign_completion": f"{i} plus one is {i + 1}.",
            "priority_class": "general_conversation" if i % 2 else "borderline",
        }
        for i in range(8)
    ]
    train = folder / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return model, train


def train_flags(model: Path, train: Path, out: Path, steps: int = 6) -> list[str]:
    return [
        "train",
        *("--model", str(model), "--train_file", str(train), "--output_dir", str(out)),
        *("--target_layers", "2", "3", "--lora_r", "4", "--lora_dropout", "0", "--alpha", "5"),
        *("--max_steps", str(steps), "--save_steps", "3", "--logging_steps", "1"),
        *("--per_device_train_batch_size", "1", "--learning_rate", "1e-2", "--seed", "0"),
        *("--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true"),
    ]


def run_pair(folder: Path, steps: int = 6) -> dict:
    """cb train with 1 process (accumulation 2) and 2 processes (DDP, gloo): global batch 2."""
    model, train = write_inputs(folder)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    one, two = folder / "one", folder / "two"
    cb = [sys.executable, "-m", "circuit_breakers.cli"]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
    launch += [str(REPO / "configs" / "accelerate" / "ddp.yaml"), "--num_processes", "2"]
    launch += ["--num_machines", "1", "--main_process_port", str(_free_port())]
    runs = {
        "one": [*cb, *train_flags(model, train, one, steps), "--gradient_accumulation_steps", "2"],
        "two": [*launch, "-m", "circuit_breakers.cli", *train_flags(model, train, two, steps)],
    }
    seconds, stdout_two = {}, ""
    for name, cmd in runs.items():
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        seconds[name] = time.perf_counter() - t0
        assert proc.returncode == 0, f"{name}: {proc.stderr[-3000:]}"
        if name == "two":
            stdout_two = proc.stdout
    return {"one": one, "two": two, "seconds": seconds, "stdout_two": stdout_two, "steps": steps}


def compare(pair: dict) -> dict:
    from safetensors.torch import load_file

    from circuit_breakers.training.schedules import coefficients

    rows = {
        k: [json.loads(x) for x in (pair[k] / "metrics.jsonl").read_text().splitlines()]
        for k in ("one", "two")
    }
    diffs = {
        key: max(abs(a[key] - b[key]) for a, b in zip(rows["one"], rows["two"])) for key in COMPARED
    }
    cfg = json.loads((pair["two"] / "adapter" / "cb_config.json").read_text())
    schedule = [
        coefficients(
            cfg["loss_weighting"], r["step"] - 1, pair["steps"], cfg["alpha"], cfg["alpha_decay"]
        )
        for r in rows["two"]
    ]
    weights = [load_file(pair[k] / "adapter" / "adapter_model.safetensors") for k in ("one", "two")]
    adapter_diff = max(float((weights[0][n] - weights[1][n]).abs().max()) for n in weights[0])
    return {
        "rows": rows,
        "diffs": diffs,
        "schedule": schedule,
        "adapter_max_abs_diff": adapter_diff,
        "files": {k: sorted(p.name for p in pair[k].iterdir()) for k in ("one", "two")},
        "checkpoints": {
            k: sorted(p.name for p in (pair[k] / "checkpoints").iterdir()) for k in ("one", "two")
        },
    }


@pytest.mark.slow
def test_cb_train_on_two_processes_matches_one_at_the_same_global_batch(tmp_path):
    pair = run_pair(tmp_path)
    c = compare(pair)
    one, two = c["rows"]["one"], c["rows"]["two"]
    # rank 0 alone writes: one metrics line per optimizer step, one set of outputs
    assert [r["step"] for r in two] == list(range(1, pair["steps"] + 1)) == [r["step"] for r in one]
    assert c["files"]["two"] == c["files"]["one"]
    assert {"DONE", "adapter", "metrics.jsonl", "train_summary.json"} <= set(c["files"]["two"])
    assert c["checkpoints"]["two"] == ["checkpoint-3", "checkpoint-6"] == c["checkpoints"]["one"]
    # loss parity and metrics gathered over ranks: every diagnostic equals the 1-process mean
    # over the same 2 samples (a rank-0-only value would differ)
    for key, d in c["diffs"].items():
        assert d < 1e-5, (key, d)
    # schedule from optimizer steps: 1 process with accumulation 2 and 2 processes both follow
    # coefficients(step) of the global step
    for row, (cs, cr) in zip(two, c["schedule"]):
        assert row["train/cs"] == pytest.approx(cs) and row["train/cr"] == pytest.approx(cr)
    assert c["adapter_max_abs_diff"] < 1e-5


if __name__ == "__main__":  # the same comparison, printed
    with tempfile.TemporaryDirectory(prefix="cb-ddp-cpu-") as tmp:
        pair = run_pair(Path(tmp))
        c = compare(pair)
    s = pair["seconds"]
    print(
        f"cb train, tiny model, global batch 2: 1 process (accumulation 2) {s['one']:.0f} s, "
        f"2 processes (accelerate + ddp.yaml, gloo) {s['two']:.0f} s"
    )
    print(
        f"{'step':>4} {'loss 1 proc':>12} {'loss 2 procs':>13} {'cs':>6} {'cos 1':>9} {'cos 2':>9}"
    )
    for a, b in zip(c["rows"]["one"], c["rows"]["two"]):
        print(
            f"{a['step']:>4} {a['train/loss']:>12.6f} {b['train/loss']:>13.6f} {b['train/cs']:>6.3f} "
            f"{a['rr/cos_sim_mean']:>9.6f} {b['rr/cos_sim_mean']:>9.6f}"
        )
    print("max |diff| per metric:", {k: f"{v:.1e}" for k, v in c["diffs"].items()})
    print(f"adapter weights max |diff|: {c['adapter_max_abs_diff']:.1e}")
    print("files (2 processes):", c["files"]["two"], c["checkpoints"]["two"])
