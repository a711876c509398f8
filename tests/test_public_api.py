"""The names ``circuit_breakers`` exports, and that importing the package loads no torch."""

import subprocess
import sys

import circuit_breakers
from circuit_breakers.core.models import load_model_and_tokenizer
from circuit_breakers.core.schema import Sample
from circuit_breakers.training.config import CircuitBreakerConfig
from circuit_breakers.training.trainer import CircuitBreakerTrainer


def test_exports_are_the_package_objects():
    assert circuit_breakers.CircuitBreakerConfig is CircuitBreakerConfig
    assert circuit_breakers.CircuitBreakerTrainer is CircuitBreakerTrainer
    assert circuit_breakers.Sample is Sample
    assert circuit_breakers.load_model_and_tokenizer is load_model_and_tokenizer
    assert set(circuit_breakers.__all__) == {
        "__version__",
        "CircuitBreakerConfig",
        "CircuitBreakerTrainer",
        "Sample",
        "load_model_and_tokenizer",
    }


def test_unknown_name_is_an_attribute_error():
    try:
        circuit_breakers.NoSuchThing  # noqa: B018
    except AttributeError as e:
        assert "NoSuchThing" in str(e)
    else:
        raise AssertionError("no AttributeError")


def test_importing_the_package_and_core_schema_loads_no_torch():
    code = (
        "import sys, circuit_breakers, circuit_breakers.core.schema; "
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
