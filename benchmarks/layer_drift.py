"""Where a trained adapter moves the hidden states of benign text, layer by layer.

    python benchmarks/layer_drift.py --adapter RUN/train/adapter --data-dir RUN/data [--n 16] \\
        [--output benchmarks/results/layer_drift.json]

On the held-out benign answers (``holdout/benign_text.jsonl``), adapter on vs off: per layer,
the mean relative L2 change ``||h - h0|| / ||h0||`` and the cosine over the non-massive dims,
and the relative change of each massive dim, separately for the assistant tokens and the prompt
tokens; then the next-token KL(base || adapter). The retain loss holds the target layer(s) only;
this shows how much of the change that it leaves grows in the layers after them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from circuit_breakers.core.masks import build_features, collate
from circuit_breakers.training.losses import DEFAULT_MASSIVE_RATIO, find_massive_dims


def drift(model_spec: str, adapter: str, data_dir: str, n: int = 16) -> dict:
    from reroute_probe import benign_answers, load_with_adapter

    model, tok, renderer = load_with_adapter(model_spec, adapter, "cpu")
    benign = benign_answers(data_dir, n)
    b = collate(
        [build_features(s, renderer, max_completion_tokens=64) for s in benign], tok.pad_token_id
    )
    ids, att, mask = b["input_ids"], b["attention_mask"].bool(), b["loss_mask"].bool()
    with torch.no_grad():
        on = model(input_ids=ids, attention_mask=att.long(), output_hidden_states=True)
        with model.disable_adapter():
            off = model(input_ids=ids, attention_mask=att.long(), output_hidden_states=True)
    n_layers = len(on.hidden_states) - 1
    # massive dims as the trainer finds them (its ratio), on the assistant tokens of any layer
    massive = find_massive_dims(torch.stack(off.hidden_states[1:]), mask, DEFAULT_MASSIVE_RATIO)
    keep = torch.ones(on.hidden_states[0].shape[-1], dtype=torch.bool)
    keep[massive] = False
    out: dict = {"n": len(benign), "massive_dims": massive, "tokens": {}}
    lp_on = torch.log_softmax(on.logits[:, :-1].float(), -1)
    lp_off = torch.log_softmax(off.logits[:, :-1].float(), -1)
    kl = (lp_off.exp() * (lp_off - lp_on)).sum(-1)
    for name, sel in (("assistant", mask), ("prompt", att & ~mask)):
        rows = []
        for ly in range(1, n_layers + 1):
            x, x0 = on.hidden_states[ly][sel].float(), off.hidden_states[ly][sel].float()
            rel = ((x - x0)[:, keep].norm(dim=-1) / x0[:, keep].norm(dim=-1)).mean().item()
            cos = torch.nn.functional.cosine_similarity(x[:, keep], x0[:, keep], dim=-1).mean()
            mrel = {
                str(d): ((x[:, d] - x0[:, d]).abs().mean() / x0[:, d].abs().mean()).item()
                for d in massive
            }
            rows.append({"layer": ly, "rel_l2": rel, "cos": cos.item(), "massive_rel": mrel})
        out["tokens"][name] = {"layers": rows, "next_token_kl": kl[sel[:, 1:]].mean().item()}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default")
    p.add_argument("--adapter", required=True)
    p.add_argument("--data-dir", required=True, help="output folder of `cb data build`")
    p.add_argument("--n", type=int, default=16, help="benign samples")
    p.add_argument("--output", default=None)
    args = p.parse_args(argv)
    res = drift(args.model, args.adapter, args.data_dir, args.n)
    print(f"massive dims: {res['massive_dims']}; n = {res['n']}")
    for name, r in res["tokens"].items():
        print(f"== {name} tokens (next-token KL base||adapter {r['next_token_kl']:.3f})")
        print("layer | rel L2 (non-massive) | cos | massive dims rel")
        for row in r["layers"]:
            m = ", ".join(f"{d}: {v:.3f}" for d, v in row["massive_rel"].items())
            print(f"{row['layer']} | {row['rel_l2']:.3f} | {row['cos']:.3f} | {m}")
    if args.output:
        from circuit_breakers.core.fileio import write_json

        write_json(Path(args.output), {"adapter": args.adapter, **res})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
