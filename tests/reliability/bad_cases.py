"""The bad-input corpus: every case is a ``cb`` command that must exit 2 with a message naming
the file, the line and the field (where the input has them) and saying what to do.

``tests/test_bad_input.py`` runs every case; ``python tests/reliability/bad_cases.py`` runs them
and writes ``tests/data/bad/CASES.md`` (case -> message), which a test keeps current.

Placeholders in a command: ``{bad}`` the corpus folder, ``{repo}`` the repository, ``{tmp}`` a
scratch folder, ``{m:NAME}`` a tiny model folder made by :func:`make_models`.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from relkit import REPO, run_main, write_tiny_model  # noqa: E402

BAD = REPO / "tests" / "data" / "bad"
CASES_MD = BAD / "CASES.md"
#: Flags every ``cb train`` case gets (kept out of the table).
TRAIN_COMMON = ["--output_dir", "{tmp}/out", "--use_cpu", "true", "--report_to", "none",
                "--target_layers", "2", "3"]  # fmt: skip


@dataclass(frozen=True)
class Case:
    name: str
    what: str
    argv: list[str]
    says: str  # a part of the message that shows the right error was found
    file: str | None = None  # placeholder form of the file the message must name
    line: int | None = None
    field: str | None = None
    common: list[str] = dataclasses.field(default_factory=list)


def validate(name: str, what: str, says: str, line: int | None = 1, fld: str | None = None):
    return Case(
        name, what, ["data", "validate", f"{{bad}}/{name}"], says, f"{{bad}}/{name}", line, fld
    )


def train(name: str, what: str, flags: list[str], says: str, **kw) -> Case:
    return Case(name, what, ["train", *flags], says, common=TRAIN_COMMON, **kw)


GOOD = "{repo}/examples/three_samples.jsonl"

CASES: list[Case] = [
    # -- sample files: JSON and encoding ------------------------------------------------------
    validate("malformed_json.jsonl", "malformed JSON", "malformed JSON"),
    validate("malformed_json_line3.jsonl", "malformed JSON on line 3", "malformed JSON", 3),
    validate("invalid_utf8.jsonl", "invalid UTF-8", "invalid UTF-8"),
    validate("not_an_object.jsonl", "a line that is not an object", "expected a JSON object"),
    validate("empty_file.jsonl", "an empty file", "file has no samples", None),
    # -- sample files: schema ---------------------------------------------------------------------
    validate("unknown_field.jsonl", "unknown (misspelt) field", "unknown field", fld="prioirty"),
    validate(
        "unknown_message_field.jsonl",
        "unknown field in a message",
        "unknown field",
        fld="messages[0].contnet",
    ),
    validate("unknown_role.jsonl", "unknown role", "Input should be", fld="messages[0].role"),
    validate(
        "wrong_type_content.jsonl",
        "wrong type: content is a number",
        "valid string",
        fld="messages[0].content",
    ),
    validate(
        "wrong_type_weight.jsonl", "wrong type: weight is a word", "valid number", fld="weight"
    ),
    validate("id_wrong_type.jsonl", "wrong type: id is a number", "valid string", fld="id"),
    validate(
        "messages_not_list.jsonl", "wrong type: messages is a string", "valid list", fld="messages"
    ),
    validate(
        "unknown_priority_class.jsonl",
        "unknown priority class",
        "Input should be",
        fld="priority_class",
    ),
    validate("missing_split.jsonl", "required field missing", "required field", fld="split"),
    validate(
        "split_class_mismatch.jsonl",
        "split contradicts priority class",
        "does not fit",
        fld="split",
    ),
    validate("bad_loss_on.jsonl", "unknown loss_on", "Input should be", fld="loss_on"),
    validate("negative_weight.jsonl", "negative weight", "greater than or equal", fld="weight"),
    validate("no_messages.jsonl", "empty message list", "at least 1 item", fld="messages"),
    validate("duplicate_id.jsonl", "duplicate id", "duplicate id", 2, "id"),
    validate(
        "empty_assistant.jsonl",
        "empty assistant content",
        "empty assistant turn",
        fld="messages[1].content",
    ),
    # -- sample files: tools ------------------------------------------------------------------------
    validate(
        "undeclared_tool.jsonl",
        "tool call with no tools declared",
        "not declared",
        fld="messages[1].tool_calls[0].name",
    ),
    validate(
        "tool_not_in_declared.jsonl",
        "tool call to a tool not among those declared",
        "not declared",
        fld="messages[1].tool_calls[0].name",
    ),
    validate(
        "tool_arguments_not_object.jsonl",
        "tool-call arguments not an object",
        "valid dictionary",
        fld="messages[1].tool_calls[0].arguments",
    ),
    validate(
        "tool_spec_no_name.jsonl", "tool spec without a name", "required field", fld="tools[0].name"
    ),
    validate(
        "tool_calls_on_user.jsonl", "tool_calls on a user turn", "only assistant", fld="messages[0]"
    ),
    # -- sample files: flat row formats -------------------------------------------------------------
    validate(
        "unrecognized_row.jsonl", "row of no known format", "unrecognized row", fld="messages"
    ),
    validate(
        "pair_unknown_key.jsonl",
        "unknown key in a prompt/completion row",
        "unknown field",
        fld="temperature",
    ),
    validate(
        "pair_missing_completion.jsonl",
        "prompt row without completion",
        "needs 'completion'",
        fld="completion",
    ),
    validate(
        "seed_both_completions.jsonl",
        "seed row with both completions",
        "exactly one",
        fld="harmful_completion",
    ),
    validate("span_outside_text.jsonl", "loss span outside the text", "span", fld="spans[0]"),
    # -- files that are not there ---------------------------------------------------------------------
    Case(
        "missing file",
        "a missing file",
        ["data", "validate", "{bad}/does_not_exist.jsonl"],
        "file not found",
        "{bad}/does_not_exist.jsonl",
    ),
    Case(
        "a folder",
        "a folder instead of a file",
        ["data", "validate", "{bad}"],
        "directory",
        "{bad}",
    ),
    train(
        "missing train file",
        "cb train on a missing file",
        ["--model", "{m:tiny}", "--train_file", "{bad}/nope.jsonl"],
        "file not found",
        file="{bad}/nope.jsonl",
    ),
    train(
        "no train file",
        "cb train without --train_file",
        ["--model", "{m:tiny}"],
        "no training data",
        field="train_file",
    ),
    # -- training data that cannot train ------------------------------------------------------------
    train(
        "prompt_only_train.jsonl",
        "no assistant turn (cb train)",
        ["--model", "{m:tiny}", "--train_file", "{bad}/prompt_only_train.jsonl"],
        "no assistant turn",
        file="{bad}/prompt_only_train.jsonl",
        line=1,
        field="messages",
    ),
    Case(
        "prompt_only_train.jsonl (inspect)",
        "no assistant turn (cb data inspect)",
        ["data", "inspect", "{bad}/prompt_only_train.jsonl", "--model", "{m:tiny}"],
        "no assistant turn",
        "{bad}/prompt_only_train.jsonl",
        1,
        "messages",
    ),
    train(
        "no_retain_train.jsonl",
        "no retain samples",
        ["--model", "{m:tiny}", "--train_file", "{bad}/no_retain_train.jsonl"],
        "no retain",
        file="{bad}/no_retain_train.jsonl",
        field="split",
    ),
    train(
        "overlong_sample.jsonl",
        "over-long sample (longer than the model's context)",
        ["--model", "{m:short_context}", "--train_file", "{bad}/overlong_sample.jsonl"],
        "longer than the model's context",
        file="{bad}/overlong_sample.jsonl",
        line=2,
        field="messages",
    ),
    # -- configs -------------------------------------------------------------------------------------
    train(
        "unknown_key.yaml",
        "unknown YAML key",
        ["--config", "{bad}/unknown_key.yaml", "--train_file", GOOD],
        "unknown config key",
        file="{bad}/unknown_key.yaml",
        line=2,
        field="lerning_rate",
    ),
    train(
        "invalid_yaml.yaml",
        "invalid YAML",
        ["--config", "{bad}/invalid_yaml.yaml", "--train_file", GOOD],
        "invalid YAML",
        file="{bad}/invalid_yaml.yaml",
        line=3,
    ),
    train(
        "not_a_mapping.yaml",
        "YAML that is a list",
        ["--config", "{bad}/not_a_mapping.yaml", "--train_file", GOOD],
        "mapping",
        file="{bad}/not_a_mapping.yaml",
    ),
    train(
        "unknown preset",
        "unknown preset",
        ["--preset", "nope", "--train_file", GOOD],
        "unknown preset",
        field="preset",
    ),
    # -- layers --------------------------------------------------------------------------------------
    train(
        "target layer > blocks",
        "target layer beyond the model's blocks (3)",
        ["--model", "{m:tiny}", "--train_file", GOOD, "--target_layers", "2", "4"],
        "target layer 4 does not exist",
        field="target_layers",
    ),
    train(
        "target layer 0",
        "target layer 0 (the embeddings)",
        ["--model", "{m:tiny}", "--train_file", GOOD, "--target_layers", "0"],
        "must be >= 1",
        field="target_layers",
    ),
    train(
        "LoRA beyond truncation",
        "LoRA layers beyond the truncation point",
        [
            "--model",
            "{m:tiny}",
            "--train_file",
            GOOD,
            "--target_layers",
            "2",
            "--lora_layers",
            "0",
            "2",
        ],
        "LoRA layer 2 is beyond the last kept block",
        field="lora_layers",
    ),
    # -- models and adapters ---------------------------------------------------------------------------
    train(
        "no chat template",
        "model without a chat template",
        ["--model", "{m:no_template}", "--train_file", GOOD],
        "no chat template",
        file="{m:no_template}",
        field="chat_template",
    ),
    train(
        "pickled weights",
        "model with only pickled weights",
        ["--model", "{m:pickled}", "--train_file", GOOD],
        "only pickled weights",
        file="{m:pickled}",
        field="model",
    ),
    train(
        "remote code",
        "model that needs its own code",
        ["--model", "{m:remote_code}", "--train_file", GOOD],
        "needs its own Python code",
        file="{m:remote_code}",
        field="trust_remote_code",
    ),
    train(
        "not a model folder",
        "model folder without config.json",
        ["--model", "{tmp}", "--train_file", GOOD],
        "config.json is missing",
        file="{tmp}",
        field="model",
    ),
    Case(
        "adapter for another base",
        "adapter trained on another base model",
        ["sanity", "--model", "{m:other}", "--adapter", "{m:adapter}"],
        "does not fit this model",
        "{m:adapter}",
        None,
        "adapter",
    ),
    Case(
        "not an adapter",
        "adapter folder without adapter_config.json",
        ["sanity", "--model", "{m:tiny}", "--adapter", "{tmp}"],
        "not a PEFT adapter folder",
        "{tmp}",
        None,
        "adapter",
    ),
]


# -- materials ----------------------------------------------------------------------------------
REMOTE_CODE = """from transformers import LlamaConfig, LlamaForCausalLM
class EvilConfig(LlamaConfig):
    model_type = "evilnet"
class EvilModel(LlamaForCausalLM):
    config_class = EvilConfig
"""


def make_models(root: Path) -> dict[str, Path]:
    """Tiny model folders for the model cases (3 decoder blocks each)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    root.mkdir(parents=True, exist_ok=True)
    m = {"tiny": write_tiny_model(root / "tiny")}
    m["short_context"] = write_tiny_model(root / "short_context", max_position_embeddings=48)
    m["no_template"] = _copy(m["tiny"], root / "no_template")
    cfg = json.loads((m["no_template"] / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (m["no_template"] / "tokenizer_config.json").write_text(json.dumps(cfg))
    for f in m["no_template"].glob("chat_template.*"):
        f.unlink()
    m["pickled"] = _copy(m["tiny"], root / "pickled")
    torch.save(
        load_file(str(m["pickled"] / "model.safetensors")), m["pickled"] / "pytorch_model.bin"
    )
    (m["pickled"] / "model.safetensors").unlink()
    m["remote_code"] = _copy(m["tiny"], root / "remote_code")
    cfg = json.loads((m["remote_code"] / "config.json").read_text())
    cfg["model_type"] = "evilnet"
    cfg["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (m["remote_code"] / "config.json").write_text(json.dumps(cfg))
    (m["remote_code"] / "evil.py").write_text(REMOTE_CODE)
    other = write_tiny_model(root / "other")
    cfg = json.loads((other / "config.json").read_text())  # same family, other widths
    cfg.update(hidden_size=48, intermediate_size=96)
    (other / "config.json").write_text(json.dumps(cfg))
    (other / "model.safetensors").unlink()
    from transformers import AutoConfig

    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(other)).save_pretrained(other)
    m["other"] = other
    base = AutoModelForCausalLM.from_pretrained(m["tiny"])
    lora = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    lora.save_pretrained(root / "adapter")
    m["adapter"] = root / "adapter"
    return m


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def expand(text: str, models: dict[str, Path], tmp: Path) -> str:
    text = text.replace("{bad}", str(BAD)).replace("{repo}", str(REPO)).replace("{tmp}", str(tmp))
    return re.sub(r"\{m:(\w+)\}", lambda mo: str(models[mo.group(1)]), text)


def shorten(text: str, models: dict[str, Path], tmp: Path) -> str:
    """Machine-independent form of a message or command, for CASES.md."""
    for name, path in sorted(models.items(), key=lambda kv: -len(str(kv[1]))):
        text = text.replace(str(path), f"<{name}-model>" if name != "adapter" else "<adapter>")
    text = text.replace(str(BAD), "tests/data/bad").replace(str(REPO) + "/", "")
    return text.replace(str(tmp), "<tmp>")


@dataclass
class Result:
    case: Case
    rc: int
    message: str  # the "cb: error: ..." line, or the whole stderr when there is none
    stderr: str


def run_case(case: Case, models: dict[str, Path], tmp: Path) -> Result:
    tmp.mkdir(parents=True, exist_ok=True)
    argv = [expand(a, models, tmp) for a in case.argv[:1] + case.common + case.argv[1:]]
    rc, _, err = run_main(argv)
    lines = [line for line in err.splitlines() if line.startswith("cb: error: ")]
    return Result(case, rc, lines[-1] if lines else err, err)


def run_all(work: Path) -> tuple[dict[str, Path], list[Result]]:
    models = make_models(work / "models")
    return models, [run_case(c, models, work / f"case{i}") for i, c in enumerate(CASES)]


def markdown(models: dict[str, Path], results: list[Result], work: Path) -> str:
    def cell(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    ok = sum(1 for r in results if r.rc == 2)
    out = [
        "# Bad-input corpus: case -> message",
        "",
        "Generated by `python tests/reliability/bad_cases.py` (do not edit by hand);",
        "`tests/test_bad_input.py` runs every case and checks that this table is current.",
        f"{len(results)} cases, {ok} exit with code 2. `cb train` cases also get "
        f"`{' '.join(TRAIN_COMMON).replace('{tmp}', '<tmp>')}` (a case's own flags win).",
        "",
        "| # | case | command | exit | message |",
        "|---|------|---------|------|---------|",
    ]
    for i, r in enumerate(results, start=1):
        tmp = work / f"case{i - 1}"
        cmd = "cb " + " ".join(shorten(expand(a, models, tmp), models, tmp) for a in r.case.argv)
        msg = shorten(r.message, models, tmp).removeprefix("cb: error: ")
        out.append(f"| {i} | {cell(r.case.what)} | `{cell(cmd)}` | {r.rc} | {cell(msg)} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    import tempfile

    import torch

    torch.set_num_threads(1)
    from circuit_breakers.core.fileio import write_text

    with tempfile.TemporaryDirectory(prefix="cb-bad-") as d:
        models, results = run_all(Path(d))
        write_text(CASES_MD, markdown(models, results, Path(d)))
    bad = [r.case.name for r in results if r.rc != 2]
    print(f"wrote {CASES_MD}: {len(results)} cases, {len(results) - len(bad)} exit 2")
    for name in bad:
        print(f"  NOT exit 2: {name}")
