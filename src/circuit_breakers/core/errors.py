"""Errors that carry *where* the problem is, so the CLI can print ``file:line: field: message``.

Every bad-input path in the library raises :class:`InputError` (exit code 2 in the CLI). A
failure while running (a crash in training, a NaN) is any other exception (exit code 1).
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input: a malformed file, an unknown key, an impossible setting.

    ``file``, ``line`` and ``field`` are optional so the same type serves a JSONL row, a YAML
    key, a CLI flag or a model spec; ``hint`` says what to do about it.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.field = field
        self.hint = hint
        super().__init__(self.format())

    def format(self) -> str:
        where = ""
        if self.file:
            where = str(self.file) + (f":{self.line}" if self.line is not None else "")
        parts = [p for p in (where, f"field '{self.field}'" if self.field else "") if p]
        text = ": ".join([*parts, self.message])
        if self.hint:
            text += f" (hint: {self.hint})"
        return text

    def located(self, *, file: str | None = None, line: int | None = None) -> InputError:
        """Return a copy with the location filled in where it was unknown."""
        return InputError(
            self.message,
            file=self.file or file,
            line=self.line if self.line is not None else line,
            field=self.field,
            hint=self.hint,
        )
