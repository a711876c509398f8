"""Render samples with the tokenizer's own chat template and find the assistant character spans.

How spans are found, for any template: for each assistant turn ``k`` we render the conversation
before it with the generation prompt (``P``) and the conversation through it (``F``). The turn's
own text is ``F[len(P):]`` with trailing whitespace removed: the content, the tool-call text the
template writes, and the end-of-turn marker (``<|eot_id|>``, ``<|im_end|>``, ``</s>``...). That
segment is then located in the full rendering. Nothing is hard-coded per model family, and a
template that does not render a turn as an extension of its generation prompt is an error.

Tools: if the template mentions ``tools`` it gets the tool schemas through ``tools=`` and tool
calls in the Hugging Face ``tool_calls`` form. Otherwise (SmolLM2's ChatML, Gemma...) one
documented fallback format is used:

* the tool schemas go into the system turn as JSON, one per line, after :data:`FALLBACK_TOOL_PREAMBLE`;
* a call is written in the assistant text as ``<tool_call>{"name": ..., "arguments": ...}</tool_call>``;
* a tool result is a ``tool`` turn, or, for templates that reject that role, a user turn
  ``<tool_response name="fn">...</tool_response>``.

Templates that reject a ``system`` turn get it folded into the first user turn.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property

from circuit_breakers.core.errors import InputError
from circuit_breakers.core.schema import Message, Sample, ToolCall, ToolSpec

FALLBACK_TOOL_PREAMBLE = (
    "You can call tools. To call one, answer with "
    '<tool_call>{"name": <tool name>, "arguments": <JSON object>}</tool_call>. '
    "Available tools:"
)
_SENTINEL = "cbsentinelfn"


@dataclass
class Rendered:
    """A rendered conversation and the character spans that carry loss."""

    text: str
    spans: list[tuple[int, int]] = field(default_factory=list)

    def span_texts(self) -> list[str]:
        return [self.text[s:e] for s, e in self.spans]


def tool_call_text(call: ToolCall) -> str:
    """The fallback format of one call."""
    return (
        "<tool_call>"
        + json.dumps({"name": call.name, "arguments": call.arguments}, ensure_ascii=False)
        + "</tool_call>"
    )


class ChatRenderer:
    """Renders :class:`Sample` objects with one tokenizer's chat template."""

    def __init__(self, tokenizer, *, name: str = "tokenizer") -> None:
        template = getattr(tokenizer, "chat_template", None)
        if not template:
            raise InputError(
                "the tokenizer has no chat template",
                file=name,
                field="chat_template",
                hint="use an instruct/chat model or set tokenizer.chat_template",
            )
        self.tok = tokenizer
        self.name = name
        self.template = template if isinstance(template, str) else json.dumps(template)
        self.native_tools = "tools" in self.template

    # -- capability probes (rendered once, then cached) ------------------------------------
    def _apply(self, conv: list[dict], tools: list[dict] | None, gen: bool) -> str:
        kwargs = {"tools": tools} if (tools and self.native_tools) else {}
        return self.tok.apply_chat_template(
            conv, tokenize=False, add_generation_prompt=gen, **kwargs
        )

    def _renders(self, conv: list[dict]) -> bool:
        try:
            self._apply(conv, None, False)
            return True
        except Exception:
            return False

    @cached_property
    def supports_system(self) -> bool:
        return self._renders([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}])

    @cached_property
    def supports_tool_role(self) -> bool:
        if self.native_tools:
            return True
        conv = [
            {"role": "user", "content": "u"},
            {"role": "assistant", "content": "a"},
            {"role": "tool", "content": "t"},
            {"role": "assistant", "content": "b"},
        ]
        return self._renders(conv)

    # -- message conversion ------------------------------------------------------------------
    def _tool_dicts(self, tools: list[ToolSpec]) -> list[dict]:
        return [{"type": "function", "function": t.model_dump()} for t in tools]

    def to_template(
        self, messages: list[Message], tools: list[ToolSpec]
    ) -> tuple[list[dict], dict[int, int]]:
        """Convert messages to template dicts; also return original index -> converted index."""
        conv: list[dict] = []
        index: dict[int, int] = {}
        pending_system: str | None = None
        index_shift = 0  # 1 when a system turn is prepended for the fallback tool schemas
        if tools and not self.native_tools:
            schema = "\n".join(json.dumps(t.model_dump(), ensure_ascii=False) for t in tools)
            block = f"{FALLBACK_TOOL_PREAMBLE}\n{schema}"
            if messages and messages[0].role == "system":
                head = messages[0].model_copy(
                    update={"content": f"{messages[0].content}\n\n{block}"}
                )
                messages = [head, *messages[1:]]
            else:
                messages = [Message(role="system", content=block), *messages]
                index_shift = 1
        for i, m in enumerate(messages):
            orig = i - index_shift
            if m.role == "system" and not self.supports_system:
                pending_system = (
                    m.content if pending_system is None else f"{pending_system}\n\n{m.content}"
                )
                continue
            if m.role == "assistant":
                d: dict = {"role": "assistant", "content": m.content}
                if m.tool_calls:
                    if self.native_tools:
                        d["tool_calls"] = [
                            {
                                "type": "function",
                                "id": c.id or f"call_{k}",
                                "function": {"name": c.name, "arguments": c.arguments},
                            }
                            for k, c in enumerate(m.tool_calls)
                        ]
                    else:
                        calls = "\n".join(tool_call_text(c) for c in m.tool_calls)
                        d["content"] = f"{m.content}\n{calls}" if m.content.strip() else calls
            elif m.role == "tool":
                if self.supports_tool_role:
                    d = {"role": "tool", "content": m.content}
                    if m.name:
                        d["name"] = m.name
                    if m.tool_call_id:
                        d["tool_call_id"] = m.tool_call_id
                else:
                    body = f'<tool_response name="{m.name or ""}">\n{m.content}\n</tool_response>'
                    if conv and conv[-1]["role"] == "user" and conv[-1].get("_from_tool"):
                        conv[-1]["content"] += "\n" + body
                        index[orig] = len(conv) - 1
                        continue
                    d = {"role": "user", "content": body, "_from_tool": True}
            else:
                d = {"role": m.role, "content": m.content}
            if pending_system is not None and d["role"] == "user":
                d["content"] = f"{pending_system}\n\n{d['content']}"
                pending_system = None
            conv.append(d)
            if orig >= 0:
                index[orig] = len(conv) - 1
        if pending_system is not None:
            conv.insert(0, {"role": "user", "content": pending_system})
        for d in conv:
            d.pop("_from_tool", None)
        return conv, index

    def render_conv(
        self, conv: list[dict], tools: list[ToolSpec], *, add_generation_prompt: bool
    ) -> str:
        try:
            return self._apply(
                conv, self._tool_dicts(tools) if tools else None, add_generation_prompt
            )
        except Exception as e:  # jinja raise_exception, missing keys...
            raise InputError(
                f"the chat template failed to render this conversation: {e}",
                file=self.name,
                field="messages",
            ) from None

    # -- public API --------------------------------------------------------------------------
    def render(self, sample: Sample) -> Rendered:
        """Render a training sample and return the loss spans of its ``loss_on`` turn(s)."""
        if "rendered_text" in sample.meta:
            return self._pre_rendered(sample)
        targets = sample.assistant_indices()
        if not targets:
            raise InputError(
                "sample has no assistant turn to put the loss on",
                field="messages",
                hint="training samples need an assistant (or tool-call) turn",
            )
        conv, index = self.to_template(sample.messages, sample.tools)
        full = self.render_conv(conv, sample.tools, add_generation_prompt=False)
        spans: list[tuple[int, int]] = []
        cursor = 0
        for orig in targets:
            k = index[orig]
            seg, prefix_len = self._segment(conv, k, sample.tools)
            self._check_segment(seg, sample.messages[orig], orig)
            if full.startswith(seg, prefix_len) and prefix_len >= cursor:
                start = prefix_len
            else:  # template rewrote earlier turns (e.g. Mistral moves tools): find the segment
                start = full.find(seg, cursor)
                if start < 0:
                    raise InputError(
                        f"assistant turn {orig} could not be located in the rendered text",
                        field=f"messages[{orig}]",
                        hint="the chat template is not supported",
                    )
            spans.append((start, start + len(seg)))
            cursor = start + len(seg)
        return Rendered(full, spans)

    def _segment(self, conv: list[dict], k: int, tools: list[ToolSpec]) -> tuple[str, int]:
        before = self.render_conv(conv[:k], tools, add_generation_prompt=True)
        through = self.render_conv(conv[: k + 1], tools, add_generation_prompt=False)
        if not through.startswith(before):
            raise InputError(
                "the chat template does not render the assistant turn as a continuation of its "
                "generation prompt, so its span cannot be found",
                file=self.name,
                field="chat_template",
            )
        seg = through[len(before) :].rstrip()
        if not seg:
            raise InputError("the assistant turn renders to nothing", field=f"messages[{k}]")
        return seg, len(before)

    def _check_segment(self, seg: str, msg: Message, orig: int) -> None:
        content = msg.content.strip()
        if content and content not in seg:
            raise InputError(
                "the rendered assistant turn does not contain its content (the template "
                "rewrites it)",
                field=f"messages[{orig}].content",
            )
        for j, call in enumerate(msg.tool_calls or []):
            if call.name not in seg:
                raise InputError(
                    "the rendered assistant turn does not contain its tool call",
                    field=f"messages[{orig}].tool_calls[{j}]",
                )

    @cached_property
    def end_of_turn(self) -> str:
        """The text the template writes after an assistant turn's content (e.g. ``<|im_end|>``)."""
        conv = [{"role": "user", "content": "u"}, {"role": "assistant", "content": _SENTINEL}]
        seg, _ = self._segment(conv, 1, [])
        return seg[seg.index(_SENTINEL) + len(_SENTINEL) :]

    def _pre_rendered(self, sample: Sample) -> Rendered:
        text = sample.meta["rendered_text"]
        if "loss_spans" in sample.meta:
            return Rendered(text, [tuple(s) for s in sample.meta["loss_spans"]])
        completion = sample.messages[sample.assistant_indices()[-1]].content
        start = text.rfind(completion)
        if start < 0:
            raise InputError("the completion does not occur in the pre-rendered text", field="text")
        end = start + len(completion)
        eot = self.end_of_turn
        if eot and text.startswith(eot, end):
            end += len(eot)
        return Rendered(text, [(start, end)])

    def render_prompt(
        self, messages: list[Message], tools: list[ToolSpec], *, prefill: str = ""
    ) -> str:
        """The text to generate from: the conversation, the generation prompt, then ``prefill``."""
        conv, _ = self.to_template(messages, tools)
        return self.render_conv(conv, tools, add_generation_prompt=True) + prefill

    def tool_call_opener(self, tools: list[ToolSpec] | None = None) -> str:
        """The text an assistant turn starts with when it calls a tool, up to the function name.

        Forced-call evaluation pre-fills this so the model must pick a function.
        """
        spec = ToolSpec(name=_SENTINEL)
        msgs = [
            Message(role="user", content="u"),
            Message(role="assistant", tool_calls=[ToolCall(name=_SENTINEL)]),
        ]
        conv, index = self.to_template(msgs, [spec, *(tools or [])])
        seg, _ = self._segment(conv, index[1], [spec, *(tools or [])])
        return seg[: seg.index(_SENTINEL)]
