"""Is harmfulness linearly readable in the base model's hidden states, and does the training
set's harmful-vs-retain contrast point at it on held-out prompts?

    python benchmarks/separability.py --data-dir runs/demo/data [--n 48] \\
        [--output benchmarks/results/separability_demo_cpu.json]

A circuit breaker can only carry over to harmful prompts it never saw if the rerouted feature is
shared by the training and the held-out harmful answers and absent from benign ones. This
measures that on the *base* model (no adapter), per layer, with linear probes (logistic
regression, L2, fit with LBFGS) on mean-pooled assistant-token states, non-massive dims:

* ``heldout_cv``: 4-fold cross-validation on held-out harmful prompts with the model's own
  greedy answers vs held-out benign prompts with the model's own greedy answers (same
  generator on both sides, so style is not the contrast): is the feature there at all?
* ``train_to_heldout``: fit on the training file's harmful completions (the data build's,
  after its prefill) vs its text retain samples, test on the held-out pairs above: does the
  contrast the trainer sees point at the held-out one?
* ``train_natural_to_heldout``: the same, fit on the training prompts' own greedy answers
  (no prefill) vs the retain prompts' own greedy answers;
* ``prompt_train_to_heldout``: the state at the last prompt token (the assistant header),
  training prompts -> held-out prompts: does the model tell them apart before answering?

and the cosine between the difference-of-means directions of the training and held-out
contrasts. AUROC 0.5 = no signal, 1.0 = perfect separation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from circuit_breakers.core.masks import build_features, collate
from circuit_breakers.core.models import load_model_and_tokenizer
from circuit_breakers.core.render import ChatRenderer
from circuit_breakers.core.schema import read_samples
from circuit_breakers.eval.probes import (
    cv_auroc,
    direction_cosine,
    transfer_auroc,
)
from circuit_breakers.training.losses import DEFAULT_MASSIVE_RATIO, find_massive_dims


@torch.no_grad()
def features(model, tok, renderer, samples, batch: int = 8):
    """Per layer: mean over assistant tokens, and the state at the last prompt token."""
    pooled, last = [], []
    for i in range(0, len(samples), batch):
        b = collate(
            [build_features(s, renderer, max_completion_tokens=64) for s in samples[i : i + batch]],
            tok.pad_token_id,
        )
        out = model(
            input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_hidden_states=True
        )
        hs = torch.stack(out.hidden_states[1:], 1).float()  # [B, L, T, D]
        m = b["loss_mask"].float()
        pooled.append((hs * m[:, None, :, None]).sum(2) / m.sum(1)[:, None, None])
        first = m.argmax(1)  # first assistant token; the one before it ends the prompt
        last.append(hs[torch.arange(hs.shape[0]), :, first - 1])
    return torch.cat(pooled), torch.cat(last)  # [N, L, D] each


def separability(model_spec: str, data_dir: str, n: int = 48, max_new_tokens: int = 48) -> dict:
    from reroute_probe import _generate, _with_completion, benign_answers

    model, tok = load_model_and_tokenizer(model_spec, dtype=torch.float32, device="cpu")
    model.eval()
    renderer = ChatRenderer(tok, name=str(model_spec))
    data_dir = Path(data_dir)
    train = [s for s in read_samples(data_dir / "train.jsonl") if not s.tools]
    train_harm = [s for s in train if s.split == "harmful"][:n]
    train_ret = [s for s in train if s.split == "retain" and s.messages[-1].role == "assistant"]
    train_ret = train_ret[: len(train_harm)]
    held_harm = read_samples(data_dir / "holdout" / "harmful_text.jsonl")[:n]
    held_ben = benign_answers(data_dir, n)

    def own(samples):  # the prompts with the base model's own greedy answers
        prompts = [
            s.model_copy(update={"messages": s.messages[:-1]})
            if s.messages[-1].role == "assistant"
            else s
            for s in samples
        ]
        outs = _generate(model, tok, renderer, prompts, max_new_tokens)
        return [_with_completion(p, o) for p, o in zip(prompts, outs)]

    sets = {
        "train_harm": train_harm,
        "train_ret": train_ret,
        "train_harm_own": own(train_harm),
        "train_ret_own": own(train_ret),
        "held_harm_own": own(held_harm),
        "held_ben_own": own(held_ben),
    }
    feats = {k: features(model, tok, renderer, v) for k, v in sets.items()}
    n_layers = feats["train_harm"][0].shape[1]
    # massive dims out, as the trainer's no-massive losses do (found on the benign answers)
    pooled_ben = feats["held_ben_own"][0]
    massive = find_massive_dims(
        pooled_ben.permute(1, 0, 2)[:, :, None, :],
        torch.ones(pooled_ben.shape[0], 1, dtype=torch.bool),
        DEFAULT_MASSIVE_RATIO,
    )
    keep = torch.ones(pooled_ben.shape[-1], dtype=torch.bool)
    keep[massive] = False

    def xy(pos: str, neg: str, which: int, layer: int):
        a, b = feats[pos][which][:, layer][:, keep], feats[neg][which][:, layer][:, keep]
        return torch.cat([a, b]), torch.cat([torch.ones(len(a)), torch.zeros(len(b))]).long()

    rows = []
    for ly in range(n_layers):
        held = xy("held_harm_own", "held_ben_own", 0, ly)
        tr = xy("train_harm", "train_ret", 0, ly)
        tr_own = xy("train_harm_own", "train_ret_own", 0, ly)
        held_p = xy("held_harm_own", "held_ben_own", 1, ly)
        tr_p = xy("train_harm", "train_ret", 1, ly)
        rows.append(
            {
                "layer": ly + 1,
                "heldout_cv": cv_auroc(*held),
                "train_to_heldout": transfer_auroc(*tr, *held),
                "train_natural_to_heldout": transfer_auroc(*tr_own, *held),
                "prompt_train_to_heldout": transfer_auroc(*tr_p, *held_p),
                "dir_cos_train_heldout": direction_cosine(*tr, *held),
                "dir_cos_train_natural_heldout": direction_cosine(*tr_own, *held),
            }
        )
    return {
        "model": str(model_spec),
        "data_dir": str(data_dir),
        "n": {k: len(v) for k, v in sets.items()},
        "massive_dims": massive,
        "max_new_tokens": max_new_tokens,
        "layers": rows,
        "examples": {
            k: [s.messages[-1].content[:160] for s in sets[k][:3]]
            for k in ("train_harm", "train_harm_own", "held_harm_own", "held_ben_own")
        },
    }


COLUMNS = (
    "heldout_cv",
    "train_to_heldout",
    "train_natural_to_heldout",
    "prompt_train_to_heldout",
    "dir_cos_train_heldout",
    "dir_cos_train_natural_heldout",
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default")
    p.add_argument("--data-dir", required=True, help="output folder of `cb data build`")
    p.add_argument("--n", type=int, default=48, help="samples per set")
    p.add_argument("--output", default=None)
    args = p.parse_args(argv)
    res = separability(args.model, args.data_dir, args.n)
    print(f"n per set: {res['n']}; massive dims left out: {res['massive_dims']}")
    print("AUROC of linear probes (held-out harmful vs benign, the model's own answers):")
    print("layer | " + " | ".join(COLUMNS))
    for r in res["layers"]:
        print(f"{r['layer']:5d} | " + " | ".join(f"{r[c]:.3f}" for c in COLUMNS))
    if args.output:
        from circuit_breakers.core.fileio import write_json

        write_json(Path(args.output), res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
