"""Character spans -> token loss masks, verified.

The rendered text is tokenized once with ``return_offsets_mapping``; a token is in the mask when
its character range overlaps a loss span. Then the mask is *verified*: the masked tokens must
cover each span exactly (no token straddles a span edge) and must decode back to the span text.
An empty mask or a mismatch raises :class:`InputError`; there is no fallback to "loss on every
token", which would fail silently.

Truncation policy: the prompt (tokens before the first masked token) is cut from the left to
``max_prompt_tokens``; the completion (from the first masked token on) is cut from the right to
``max_completion_tokens``. Both counts are returned so callers can report them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from circuit_breakers.core.errors import InputError
from circuit_breakers.core.render import ChatRenderer, Rendered
from circuit_breakers.core.schema import Sample


@dataclass
class Features:
    """One tokenized sample ready for batching."""

    input_ids: list[int]
    loss_mask: list[int]
    prompt_truncated: int = 0  # tokens dropped from the left of the prompt
    completion_truncated: int = 0  # tokens dropped from the right of the completion

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def n_loss_tokens(self) -> int:
        return sum(self.loss_mask)


def spans_to_mask(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
    """1 for each token whose ``[start, end)`` overlaps a span, else 0."""
    mask = []
    for s, e in offsets:
        hit = e > s and any(s < se and e > ss for ss, se in spans)
        mask.append(1 if hit else 0)
    return mask


def verify_mask(
    text: str, offsets, ids: list[int], mask: list[int], spans, tokenizer, where: str = ""
) -> None:
    """Check that the masked tokens are exactly the span text; raise InputError if not."""
    if not any(mask):
        raise InputError(
            "the loss mask is empty: no token falls inside the assistant span",
            field="messages",
            hint=f"{where} check the chat template and loss_on",
        )
    for ss, se in spans:
        toks = [j for j, (s, e) in enumerate(offsets) if mask[j] and s < se and e > ss]
        if not toks:
            raise InputError(f"no token covers the assistant span [{ss}, {se})", field="messages")
        lo, hi = offsets[toks[0]][0], offsets[toks[-1]][1]
        if (lo, hi) != (ss, se) or toks != list(range(toks[0], toks[-1] + 1)):
            raise InputError(
                f"token boundaries do not match the assistant span: span {text[ss:se]!r} but the "
                f"tokens cover {text[lo:hi]!r}",
                field="messages",
                hint="the tokenizer merges the span edge with its neighbour; report the template",
            )
        decoded = tokenizer.decode(
            [ids[j] for j in toks], skip_special_tokens=False, clean_up_tokenization_spaces=False
        )
        expected = text[ss:se]
        # SentencePiece decoders drop the leading space of a run; the offsets check above is exact.
        if decoded != expected and decoded.strip() != expected.strip():
            raise InputError(
                f"masked tokens decode to {decoded!r}, expected {expected!r}", field="messages"
            )


def tokenize_rendered(
    rendered: Rendered,
    tokenizer,
    *,
    max_prompt_tokens: int | None = None,
    max_completion_tokens: int | None = None,
) -> Features:
    """Tokenize a rendered sample, build and verify its loss mask, then truncate."""
    enc = tokenizer(rendered.text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    mask = spans_to_mask(offsets, rendered.spans)
    verify_mask(rendered.text, offsets, ids, mask, rendered.spans, tokenizer)
    first = mask.index(1)
    cut_left = max(0, first - max_prompt_tokens) if max_prompt_tokens is not None else 0
    n_completion = len(ids) - first
    cut_right = (
        max(0, n_completion - max_completion_tokens) if max_completion_tokens is not None else 0
    )
    end = len(ids) - cut_right
    return Features(ids[cut_left:end], mask[cut_left:end], cut_left, cut_right)


def build_features(
    sample: Sample,
    renderer: ChatRenderer,
    *,
    max_prompt_tokens: int | None = None,
    max_completion_tokens: int | None = None,
) -> Features:
    """Sample -> verified features. Errors carry the sample id in the field."""
    try:
        rendered = renderer.render(sample)
        return tokenize_rendered(
            rendered,
            renderer.tok,
            max_prompt_tokens=max_prompt_tokens,
            max_completion_tokens=max_completion_tokens,
        )
    except InputError as e:
        raise InputError(
            f"sample {sample.id!r}: {e.message}", field=e.field, hint=e.hint, file=e.file
        ) from None


def loss_text(features: Features, tokenizer) -> str:
    """Decode of the masked tokens (what ``cb data inspect --json`` prints)."""
    ids = [t for t, m in zip(features.input_ids, features.loss_mask) if m]
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def collate(
    features: list[Features],
    pad_token_id: int,
    *,
    padding_side: str = "right",
    pad_to_multiple_of: int | None = None,
) -> dict[str, torch.Tensor]:
    """Pad a list of features into ``input_ids``, ``attention_mask`` and ``loss_mask`` tensors."""
    n = max(f.n_tokens for f in features)
    if pad_to_multiple_of:
        n = -(-n // pad_to_multiple_of) * pad_to_multiple_of
    ids = torch.full((len(features), n), pad_token_id, dtype=torch.long)
    att = torch.zeros((len(features), n), dtype=torch.long)
    lm = torch.zeros((len(features), n), dtype=torch.float32)
    for i, f in enumerate(features):
        k = f.n_tokens
        sl = slice(0, k) if padding_side == "right" else slice(n - k, n)
        ids[i, sl] = torch.tensor(f.input_ids)
        att[i, sl] = 1
        lm[i, sl] = torch.tensor(f.loss_mask, dtype=torch.float32)
    return {"input_ids": ids, "attention_mask": att, "loss_mask": lm}
