"""Fixtures of the reliability tests (issue 9): a tiny model folder and a tiny training file,
built once per session, and one torch thread while each test runs (see relkit)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from relkit import write_tiny_model, write_train_file  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def train_file(tmp_path_factory) -> Path:
    return write_train_file(tmp_path_factory.mktemp("data") / "train.jsonl")
