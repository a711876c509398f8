"""Test kit: tokenizers carrying each model family's chat format, and tiny random causal LMs.

Every family tokenizer is the real SmolLM2 byte-level BPE (from the embedded GGUF, converted
once into the test cache) plus that family's special tokens and a chat template written here to
reproduce the family's documented format, tool calls included:

* ``llama31``: ``<|start_header_id|>role<|end_header_id|>\\n\\n...<|eot_id|>``; tool calls as
  ``<|python_tag|>{"name": ..., "parameters": ...}<|eom_id|>``; tool results in ``ipython`` turns.
* ``qwen25``: ChatML with ``<tools>`` in the system turn, ``<tool_call>`` JSON blocks and tool
  results as ``<tool_response>`` inside a user turn.
* ``mistral``: ``[INST]...[/INST]answer</s>``, ``[AVAILABLE_TOOLS]`` before the last user turn,
  ``[TOOL_CALLS][...]</s>`` and ``[TOOL_RESULTS]...[/TOOL_RESULTS]``.
* ``gemma``: ``<start_of_turn>user|model``; no system role and strict alternation (so the
  renderer must fold the system turn and send tool results as user turns); no native tools.
* ``chatml``: SmolLM2's own template, unchanged from the GGUF; no native tools.
"""

from __future__ import annotations

import copy
from functools import cache, lru_cache

import torch

LLAMA31_TEMPLATE = r"""{{- bos_token -}}
{%- if messages[0].role == 'system' -%}{%- set sys = messages[0].content | trim -%}{%- set msgs = messages[1:] -%}
{%- else -%}{%- set sys = '' -%}{%- set msgs = messages -%}{%- endif -%}
{{- '<|start_header_id|>system<|end_header_id|>\n\n' -}}
{%- if tools -%}{{- 'Environment: ipython\n' -}}{%- endif -%}
{{- 'Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n' -}}
{%- if tools -%}
{{- 'When you call a function, reply with JSON {"name": function name, "parameters": object of arguments}.\n\n' -}}
{%- for t in tools -%}{{- t | tojson -}}{{- '\n\n' -}}{%- endfor -%}
{%- endif -%}
{{- sys + '<|eot_id|>' -}}
{%- for m in msgs -%}
{%- if m.role == 'assistant' and m.tool_calls -%}
{{- '<|start_header_id|>assistant<|end_header_id|>\n\n<|python_tag|>' -}}
{%- for c in m.tool_calls -%}{%- if not loop.first -%}{{- '; ' -}}{%- endif -%}
{{- '{"name": "' + c.function.name + '", "parameters": ' + (c.function.arguments | tojson) + '}' -}}
{%- endfor -%}{{- '<|eom_id|>' -}}
{%- elif m.role == 'tool' -%}
{{- '<|start_header_id|>ipython<|end_header_id|>\n\n' + m.content + '<|eot_id|>' -}}
{%- else -%}
{{- '<|start_header_id|>' + m.role + '<|end_header_id|>\n\n' + (m.content | trim) + '<|eot_id|>' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}{%- endif -%}"""

QWEN25_TEMPLATE = r"""{%- set default_sys = 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' -%}
{%- if messages[0].role == 'system' -%}{%- set sys = messages[0].content -%}{%- set msgs = messages[1:] -%}
{%- else -%}{%- set sys = default_sys -%}{%- set msgs = messages -%}{%- endif -%}
{{- '<|im_start|>system\n' + sys -}}
{%- if tools -%}
{{- '\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n<tools>' -}}
{%- for t in tools -%}{{- '\n' + (t | tojson) -}}{%- endfor -%}
{{- '\n</tools>\n\nFor each call, return {"name": <function-name>, "arguments": <args-json-object>} inside <tool_call></tool_call> tags.' -}}
{%- endif -%}
{{- '<|im_end|>\n' -}}
{%- for m in msgs -%}
{%- if m.role == 'assistant' and m.tool_calls -%}
{{- '<|im_start|>assistant' -}}{%- if m.content -%}{{- '\n' + m.content -}}{%- endif -%}
{%- for c in m.tool_calls -%}
{{- '\n<tool_call>\n{"name": "' + c.function.name + '", "arguments": ' + (c.function.arguments | tojson) + '}\n</tool_call>' -}}
{%- endfor -%}{{- '<|im_end|>\n' -}}
{%- elif m.role == 'tool' -%}
{%- if loop.first or msgs[loop.index0 - 1].role != 'tool' -%}{{- '<|im_start|>user' -}}{%- endif -%}
{{- '\n<tool_response>\n' + m.content + '\n</tool_response>' -}}
{%- if loop.last or msgs[loop.index0 + 1].role != 'tool' -%}{{- '<|im_end|>\n' -}}{%- endif -%}
{%- else -%}
{{- '<|im_start|>' + m.role + '\n' + m.content + '<|im_end|>\n' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"""

MISTRAL_TEMPLATE = r"""{{- bos_token -}}
{%- if messages[0].role == 'system' -%}{%- set sys = messages[0].content -%}{%- set msgs = messages[1:] -%}
{%- else -%}{%- set sys = '' -%}{%- set msgs = messages -%}{%- endif -%}
{%- set ns = namespace(last_user=-1) -%}
{%- for m in msgs -%}{%- if m.role == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}{%- endfor -%}
{%- for m in msgs -%}
{%- if m.role == 'user' -%}
{%- if tools and loop.index0 == ns.last_user -%}
{{- '[AVAILABLE_TOOLS][' -}}{%- for t in tools -%}{%- if not loop.first -%}{{- ', ' -}}{%- endif -%}{{- t | tojson -}}{%- endfor -%}{{- '][/AVAILABLE_TOOLS]' -}}
{%- endif -%}
{%- if sys and loop.index0 == ns.last_user -%}{{- '[INST]' + sys + '\n\n' + m.content + '[/INST]' -}}
{%- else -%}{{- '[INST]' + m.content + '[/INST]' -}}{%- endif -%}
{%- elif m.role == 'assistant' and m.tool_calls -%}
{{- '[TOOL_CALLS][' -}}{%- for c in m.tool_calls -%}{%- if not loop.first -%}{{- ', ' -}}{%- endif -%}
{{- '{"name": "' + c.function.name + '", "arguments": ' + (c.function.arguments | tojson) + '}' -}}
{%- endfor -%}{{- ']' + eos_token -}}
{%- elif m.role == 'assistant' -%}{{- m.content + eos_token -}}
{%- elif m.role == 'tool' -%}{{- '[TOOL_RESULTS]{"content": ' + (m.content | tojson) + '}[/TOOL_RESULTS]' -}}
{%- else -%}{{- raise_exception('Only user, assistant and tool roles are supported') -}}
{%- endif -%}
{%- endfor -%}"""

GEMMA_TEMPLATE = r"""{{- bos_token -}}
{%- if messages[0].role == 'system' -%}{{- raise_exception('System role not supported') -}}{%- endif -%}
{%- for m in messages -%}
{%- if (m.role == 'user') != (loop.index0 % 2 == 0) -%}{{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') -}}{%- endif -%}
{%- set role = 'model' if m.role == 'assistant' else m.role -%}
{{- '<start_of_turn>' + role + '\n' + (m.content | trim) + '<end_of_turn>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<start_of_turn>model\n' -}}{%- endif -%}"""

FAMILIES: dict[str, dict] = {
    "llama31": dict(
        template=LLAMA31_TEMPLATE,
        bos="<|begin_of_text|>",
        eos="<|eot_id|>",
        special=[
            "<|begin_of_text|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eot_id|>",
            "<|eom_id|>",
            "<|python_tag|>",
            "<|finetune_right_pad_id|>",
        ],
        config="llama",
    ),
    "qwen25": dict(
        template=QWEN25_TEMPLATE, bos=None, eos="<|im_end|>", special=[], config="qwen2"
    ),
    "mistral": dict(
        template=MISTRAL_TEMPLATE,
        bos="<s>",
        eos="</s>",
        special=[
            "<s>",
            "</s>",
            "[INST]",
            "[/INST]",
            "[TOOL_CALLS]",
            "[AVAILABLE_TOOLS]",
            "[/AVAILABLE_TOOLS]",
            "[TOOL_RESULTS]",
            "[/TOOL_RESULTS]",
        ],
        config="mistral",
    ),
    "gemma": dict(
        template=GEMMA_TEMPLATE,
        bos="<bos>",
        eos="<end_of_turn>",
        special=["<bos>", "<start_of_turn>", "<end_of_turn>"],
        config="gemma",
    ),
    "chatml": dict(template=None, bos=None, eos=None, special=[], config="llama"),
}


@lru_cache(maxsize=1)
def base_tokenizer():
    """The real SmolLM2 tokenizer (converted once from the embedded GGUF into the cache)."""
    from circuit_breakers.core.models import load_tokenizer

    return load_tokenizer("default")


@cache
def _family_tokenizer(family: str):
    spec = FAMILIES[family]
    tok = copy.deepcopy(base_tokenizer())
    if spec["special"]:
        tok.add_tokens(spec["special"], special_tokens=True)
    if spec["template"] is not None:
        tok.chat_template = spec["template"]
    if spec["bos"]:
        tok.bos_token = spec["bos"]
    if spec["eos"]:
        tok.eos_token = spec["eos"]
    if family == "llama31":
        tok.pad_token = "<|finetune_right_pad_id|>"
    return tok


def family_tokenizer(family: str):
    """A fresh copy (tests may mutate it) of a family's tokenizer."""
    return copy.deepcopy(_family_tokenizer(family))


def tiny_model(
    family: str = "chatml",
    *,
    vocab_size: int | None = None,
    layers: int = 2,
    hidden: int = 32,
    seed: int = 0,
):
    """A tiny random causal LM of the family's architecture (2 layers, hidden 32 by default)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    arch = FAMILIES[family]["config"] if family in FAMILIES else family
    vocab = vocab_size or len(_family_tokenizer(family if family in FAMILIES else "chatml"))
    kw = dict(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
    )
    if arch == "gemma":
        kw["head_dim"] = hidden // 4
    torch.manual_seed(seed)
    cfg = AutoConfig.for_model(arch, **kw)
    return AutoModelForCausalLM.from_config(cfg).eval()
