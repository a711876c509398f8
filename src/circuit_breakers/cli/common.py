"""Flags shared by several verbs."""

from __future__ import annotations

import argparse


def add_model_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument(
        "--model",
        required=required,
        default=None if required else "default",
        help="Hugging Face id, local folder, .gguf file, or 'default' (embedded SmolLM2-135M-Instruct)",
    )
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow the model's own Python code to run (off by default)",
    )
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="allow pickled weights (.bin/.pt), which can run code when loaded (off by default)",
    )
