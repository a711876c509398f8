"""Keep secrets (judge API keys, W&B keys, Hugging Face tokens) out of logs and output files.

Secrets reach this tool through environment variables (``WANDB_API_KEY``, ``HF_TOKEN``,
``CB_JUDGE_API_KEY``, ``OPENAI_API_KEY``, ...) and, for ``TrainingArguments.hub_token``, through
the config. Three layers stop them from being written:

* :func:`redact` scrubs an object before it is written (resolved configs, summaries): values
  under secret-looking keys become ``"<redacted>"``, and any known secret value inside a string
  (a URL with a key in it, an error message) is replaced.
* :class:`RedactingFilter` does the same to every log record that reaches a handler, so a secret
  that ends up in a log message is printed as ``<redacted>``.
* Known secrets are the values of environment variables whose *name* looks secret, plus values
  registered with :func:`register_secret` (the CLI registers ``--hub_token``).
* The password of a URL (``https://user:KEY@host/v1``, e.g. a judge endpoint given with its
  key) is replaced wherever a URL appears, known or not.

Values shorter than 8 characters are never treated as secrets: replacing "1" or "true"
everywhere would corrupt the output and protect nothing.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

REDACTED = "<redacted>"
#: A key or variable name that holds a secret.
SECRET_NAME = re.compile(
    r"(api[_-]?key|token|secret|passw(or)?d|credential|auth(orization)?$|private[_-]?key)",
    re.IGNORECASE,
)
#: Names that match the pattern above but hold no secret (counts, limits, token ids).
NOT_SECRET = re.compile(
    r"(tokens?_(per|id|ids|count|s$)|max_.*tokens|_tokens$|^tokens$|pad_token|eos_token|bos_token|"
    r"unk_token|tokenizer|num_.*tokens|n_tokens)",
    re.IGNORECASE,
)
MIN_SECRET_LEN = 8
#: ``scheme://user:password@``: the password part of a URL's user info.
URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@/\s]+@")

_registered: set[str] = set()


def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(name)) and not NOT_SECRET.search(name)


def register_secret(value: str | None) -> None:
    """Treat ``value`` as a secret from now on (e.g. a token given on the command line)."""
    if value and len(value) >= MIN_SECRET_LEN:
        _registered.add(value)


def known_secrets() -> list[str]:
    """Every secret value known now, longest first (so a secret inside another goes second)."""
    values = set(_registered)
    for name, value in os.environ.items():
        if is_secret_name(name) and value and len(value) >= MIN_SECRET_LEN:
            values.add(value)
    return sorted(values, key=len, reverse=True)


def redact_text(text: str, secrets: list[str] | None = None) -> str:
    for s in known_secrets() if secrets is None else secrets:
        if s in text:
            text = text.replace(s, REDACTED)
    if "://" in text:
        text = URL_PASSWORD.sub(rf"\g<head>{REDACTED}@", text)
    return text


def redact(obj: Any, secrets: list[str] | None = None) -> Any:
    """A copy of ``obj`` (dicts, lists, strings) with secrets replaced by ``"<redacted>"``."""
    secrets = known_secrets() if secrets is None else secrets
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if isinstance(k, str) and is_secret_name(k) and isinstance(v, str) and v:
                out[k] = REDACTED
            else:
                out[k] = redact(v, secrets)
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v, secrets) for v in obj)
    if isinstance(obj, str):
        return redact_text(obj, secrets)
    return obj


class RedactingFilter(logging.Filter):
    """A handler filter that rewrites each record's message without secrets."""

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = known_secrets()
        try:
            message = record.getMessage()
        except Exception:  # a broken %-format: leave it to the handler to report
            return True
        clean = redact_text(message, secrets)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text, secrets)
        return True


def install_log_redaction(*loggers: logging.Logger) -> None:
    """Add :class:`RedactingFilter` to the handlers of the root logger, of ``transformers``
    (which does not propagate to the root) and of ``loggers``. Safe to call more than once;
    call it again after importing a library that adds its own handlers."""
    targets = [logging.getLogger(), logging.getLogger("transformers"), *loggers]
    for logger in targets:
        for handler in logger.handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())
