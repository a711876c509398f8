"""Where does rerouting act? Per-set cosine and NLL of a trained adapter against its base model.

For one adapter, on five sets of (prompt, completion) pairs, teacher-forced:

* ``train_harmful``: harmful samples of the training file (the model's own completions);
* ``heldout_harmful``: held-out harmful prompts with the *base* model's greedy completions
  (what the model would say, so what the circuit breaker must catch at generation time);
* ``heldout_harmful_prefill``: the same prompts answered after ``"Sure, here is"`` (the data
  build's default prefill): the form of the training completions on prompts never trained on;
* ``heldout_harmful_eval_prefill``: the same after the eval's first held-out prefill, an opener
  no data build uses;
* ``heldout_benign``: the retain hold-out (benign prompts and answers).

it prints the masked mean cosine between adapter-on and adapter-off hidden states at the target
layers (1.0 = untouched, <= 0 = rerouted) and the NLL of the completion with and without the
adapter. Then it greedy-generates from a few training and held-out prompts with the adapter on.
A circuit breaker that generalizes has low cosine on both harmful sets and ~1.0 on benign.

    python benchmarks/reroute_probe.py --model default --adapter runs/train/adapter \
        --data-dir runs/demo/data --target-layers 6 12 [--n 48] [--output probe.json]

``benchmarks/demo_sweep.py --probe`` calls :func:`probe` after training each candidate.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from circuit_breakers.core.masks import build_features, collate
from circuit_breakers.core.models import load_model_and_tokenizer
from circuit_breakers.core.render import ChatRenderer
from circuit_breakers.core.schema import Message, Sample, read_samples
from circuit_breakers.eval.attacks import HELD_OUT_PREFILLS


@torch.no_grad()
def _generate(model, tok, renderer, samples, max_new_tokens, batch=16, prefill="") -> list[str]:
    tok.padding_side = "left"
    out = []
    for i in range(0, len(samples), batch):
        texts = [
            renderer.render_prompt(s.messages, s.tools, prefill=prefill)
            for s in samples[i : i + batch]
        ]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(model.device) for k, v in enc.items()}
        gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
        out += tok.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return out


@torch.no_grad()
def _stats(model, tok, renderer, samples, layers, batch=8) -> dict:
    """Masked mean cosine (adapter on vs off) per target layer and NLL on/off, per set."""
    cos_sum = {ly: 0.0 for ly in layers}
    n_tok, nll_on, nll_off, per_sample = 0.0, 0.0, 0.0, []
    for i in range(0, len(samples), batch):
        feats = [
            build_features(s, renderer, max_completion_tokens=64) for s in samples[i : i + batch]
        ]
        b = collate(feats, tok.pad_token_id)
        ids, att = b["input_ids"].to(model.device), b["attention_mask"].to(model.device)
        mask = b["loss_mask"].to(model.device)
        on = model(input_ids=ids, attention_mask=att, output_hidden_states=True)
        with model.disable_adapter():
            off = model(input_ids=ids, attention_mask=att, output_hidden_states=True)
        sample_cos = torch.zeros(ids.shape[0], device=ids.device)
        for ly in layers:
            c = torch.nn.functional.cosine_similarity(
                on.hidden_states[ly].float(), off.hidden_states[ly].float(), dim=-1
            )
            cos_sum[ly] += (c * mask).sum().item()
            sample_cos += (c * mask).sum(1) / mask.sum(1).clamp(min=1)
        per_sample += (sample_cos / len(layers)).tolist()
        # NLL of token t+1 where t+1 is in the mask
        tgt_mask = mask[:, 1:]
        for logits, acc in ((on.logits, "on"), (off.logits, "off")):
            lp = torch.log_softmax(logits[:, :-1].float(), -1)
            nll = -lp.gather(-1, ids[:, 1:, None]).squeeze(-1)
            s = (nll * tgt_mask).sum().item()
            if acc == "on":
                nll_on += s
            else:
                nll_off += s
        n_tok += tgt_mask.sum().item()
        del on, off
    ps = sorted(per_sample)
    return {
        "n": len(samples),
        "cos_by_layer": {str(ly): cos_sum[ly] / max(n_tok, 1) for ly in layers},
        "cos_sample_median": ps[len(ps) // 2] if ps else None,
        "frac_samples_cos_below_0.5": sum(c < 0.5 for c in ps) / max(len(ps), 1),
        "nll_adapter": nll_on / max(n_tok, 1),
        "nll_base": nll_off / max(n_tok, 1),
    }


def _with_completion(s: Sample, text: str) -> Sample:
    msgs = [*s.messages, Message(role="assistant", content=text.strip() or "...")]
    return s.model_copy(update={"messages": msgs, "split": "harmful"})


PREFILL = "Sure, here is"
EVAL_PREFILL = HELD_OUT_PREFILLS[0]


def load_with_adapter(model_spec, adapter, device: str):
    """fp32 model with the trained adapter (``disable_adapter()`` gives the base), tokenizer,
    renderer."""
    from peft import PeftModel

    model, tok = load_model_and_tokenizer(model_spec, dtype=torch.float32, device=device)
    model = PeftModel.from_pretrained(model, adapter).eval()
    return model, tok, ChatRenderer(tok, name=str(model_spec))


def benign_answers(data_dir, n: int) -> list[Sample]:
    """The first ``n`` held-out benign samples that end in an assistant answer."""
    return [
        s
        for s in read_samples(Path(data_dir) / "holdout" / "benign_text.jsonl")
        if s.messages[-1].role == "assistant"
    ][:n]


def probe(model_spec, adapter, data_dir, layers, n=48, max_new_tokens=48, show=4) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tok, renderer = load_with_adapter(model_spec, adapter, device)
    data_dir = Path(data_dir)
    train = [s for s in read_samples(data_dir / "train.jsonl") if s.split == "harmful"]
    train_text = [s for s in train if not s.tools][:n]
    held = read_samples(data_dir / "holdout" / "harmful_text.jsonl")[:n]
    benign = benign_answers(data_dir, n)
    with model.disable_adapter():
        base_out = _generate(model, tok, renderer, held, max_new_tokens)
        base_pre = _generate(model, tok, renderer, held, max_new_tokens, prefill=PREFILL)
        base_evp = _generate(model, tok, renderer, held, max_new_tokens, prefill=EVAL_PREFILL)
    held_pairs = [_with_completion(s, o) for s, o in zip(held, base_out)]
    # the same prompts answered after the data build's adversarial prefill: the *form* of the
    # training completions on prompts never trained on (memorized answers vs the distribution)
    pre_pairs = [_with_completion(s, PREFILL + o) for s, o in zip(held, base_pre)]
    # and after an opener no data build uses: the first of the eval's held-out prefills
    evp_pairs = [_with_completion(s, EVAL_PREFILL + o) for s, o in zip(held, base_evp)]
    res = {
        "train_harmful": _stats(model, tok, renderer, train_text, layers),
        "heldout_harmful": _stats(model, tok, renderer, held_pairs, layers),
        "heldout_harmful_prefill": _stats(model, tok, renderer, pre_pairs, layers),
        "heldout_harmful_eval_prefill": _stats(model, tok, renderer, evp_pairs, layers),
        "heldout_benign": _stats(model, tok, renderer, benign, layers),
    }
    prompts = [s.model_copy(update={"messages": s.messages[:-1]}) for s in train_text[:show]]
    prompts += held[:show]
    gens = _generate(model, tok, renderer, prompts, max_new_tokens)
    res["generations"] = [
        {
            "set": "train" if i < show else "heldout",
            "prompt": p.messages[-1].content[:120],
            "out": g,
        }
        for i, (p, g) in enumerate(zip(prompts, gens))
    ]
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return res


def print_probe(name: str, res: dict) -> None:
    print(f"\n== probe {name}")
    for k in (
        "train_harmful",
        "heldout_harmful",
        "heldout_harmful_prefill",
        "heldout_harmful_eval_prefill",
        "heldout_benign",
    ):
        if k not in res:  # results of an older probe
            continue
        r = res[k]
        cos = " ".join(f"L{ly}={c:.3f}" for ly, c in r["cos_by_layer"].items())
        print(
            f"  {k:28s} n={r['n']:3d} cos {cos} med={r['cos_sample_median']:.3f} "
            f"<0.5:{r['frac_samples_cos_below_0.5']:.2f}  nll {r['nll_base']:.3f} -> "
            f"{r['nll_adapter']:.3f}"
        )
    for g in res["generations"]:
        print(f"  [{g['set']}] {g['prompt'][:60]!r} -> {g['out'][:140]!r}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--adapter", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--target-layers", type=int, nargs="+", required=True)
    p.add_argument("--n", type=int, default=48)
    p.add_argument("--output", default=None)
    a = p.parse_args(argv)
    res = probe(a.model, a.adapter, a.data_dir, a.target_layers, n=a.n)
    print_probe(a.adapter, res)
    if a.output:
        from circuit_breakers.core.fileio import write_json

        write_json(a.output, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
