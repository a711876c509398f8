"""Every malformed input exits 2 with a message naming the file, the line and the field."""

import json
import sys
from pathlib import Path

import pytest

from circuit_breakers.cli import main

BAD = Path(__file__).parent / "data" / "bad"

sys.path.insert(0, str(Path(__file__).parent / "reliability"))
import bad_cases  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    work = tmp_path_factory.mktemp("bad")
    models, results = bad_cases.run_all(work)
    torch.set_num_threads(before)
    return models, {r.case.name: r for r in results}, work


def test_corpus_is_complete():
    """Every file in tests/data/bad is used by a case, and the corpus has >= 30 cases."""
    used = {a.split("/")[-1] for c in bad_cases.CASES for a in c.argv if a.startswith("{bad}/")}
    on_disk = {p.name for p in BAD.iterdir() if p.suffix in (".jsonl", ".yaml")}
    assert on_disk <= used, sorted(on_disk - used)
    assert len(bad_cases.CASES) >= 30
    assert len({c.name for c in bad_cases.CASES}) == len(bad_cases.CASES)


@pytest.mark.parametrize("name", [c.name for c in bad_cases.CASES])
def test_case_exits_2_naming_file_line_field(corpus, name):
    models, results, _ = corpus
    r = results[name]
    case = r.case
    assert r.rc == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert case.says in r.message, r.message
    if case.file:
        where = bad_cases.expand(case.file, models, Path("/nonexistent"))
        if "{tmp}" not in case.file:
            assert where in r.message, r.message
    if case.line:
        assert f":{case.line}:" in r.message, r.message
    if case.field:
        assert f"field '{case.field}" in r.message, r.message
    assert "hint:" in r.message or case.name == "not an adapter", r.message


def test_cases_md_is_current(corpus):
    models, results, work = corpus
    ordered = [results[c.name] for c in bad_cases.CASES]
    assert bad_cases.markdown(models, ordered, work) == bad_cases.CASES_MD.read_text(), (
        "run `python tests/reliability/bad_cases.py` to refresh tests/data/bad/CASES.md"
    )


def test_missing_file(capsys, tmp_path):
    assert main(["data", "validate", str(tmp_path / "nope.jsonl")]) == 2
    assert "nope.jsonl: file not found" in capsys.readouterr().err


def test_prompt_only_sample_cannot_be_inspected_for_training(capsys, tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text(
        json.dumps(
            {
                "id": "p",
                "split": "harmful",
                "priority_class": "harmful_flip",
                "messages": [{"role": "user", "content": "x"}],
            }
        )
        + "\n"
    )
    assert main(["data", "validate", str(p)]) == 0  # a valid evaluation prompt
    assert main(["data", "inspect", str(p), "--model", "default"]) == 2
    err = capsys.readouterr().err
    assert f"{p}:1" in err and "no assistant turn" in err and "field 'messages'" in err


def test_model_without_chat_template(capsys, tmp_path):
    from kit import base_tokenizer, tiny_model

    tok = base_tokenizer()
    d = tmp_path / "model"
    tiny_model().save_pretrained(d)
    tok.save_pretrained(d)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    for f in d.glob("chat_template.*"):
        f.unlink()
    assert main(["data", "inspect", "examples/three_samples.jsonl", "--model", str(d)]) == 2
    assert "field 'chat_template'" in capsys.readouterr().err


def test_pickled_weights_refused_unless_allowed(tmp_path):
    import torch

    from circuit_breakers.core.errors import InputError
    from circuit_breakers.core.models import load_model_and_tokenizer

    d = tmp_path / "pickled"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "llama"}))
    torch.save({}, d / "pytorch_model.bin")
    with pytest.raises(InputError, match="pickled weights"):
        load_model_and_tokenizer(str(d))


def test_not_a_model_folder(tmp_path):
    from circuit_breakers.core.errors import InputError
    from circuit_breakers.core.models import load_model_and_tokenizer

    with pytest.raises(InputError, match="config.json is missing"):
        load_model_and_tokenizer(str(tmp_path))
