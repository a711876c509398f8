"""A failing write (full disk, failed rename) never leaves a truncated file that looks complete,
and every output writer in the package goes through the atomic helpers (audited by grep)."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import pytest
from relkit import REPO, run_main, train_argv

from circuit_breakers.core import fileio

SRC = REPO / "src" / "circuit_breakers"


def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, "No space left on device")


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize(
    "write",
    [
        lambda p: fileio.write_json(p, {"a": list(range(1000))}),
        lambda p: fileio.write_jsonl(p, [{"i": i} for i in range(1000)]),
        lambda p: fileio.write_text(p, "x" * 100_000),
    ],
    ids=["write_json", "write_jsonl", "write_text"],
)
def test_failed_rename_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch, write):
    target = tmp_path / "out.json"
    target.write_text("old, complete\n")
    monkeypatch.setattr(os, "replace", _enospc)
    with pytest.raises(OSError, match="No space left"):
        write(target)
    assert target.read_text() == "old, complete\n"
    assert _listing(tmp_path) == ["out.json"]  # the temporary file is gone


def test_disk_full_mid_write_leaves_no_file(tmp_path):
    def rows():
        for i in range(100):
            if i == 50:
                raise OSError(errno.ENOSPC, "No space left on device")
            yield {"i": i}

    target = tmp_path / "rows.jsonl"
    with pytest.raises(OSError, match="No space left"):
        fileio.write_jsonl(target, rows())
    assert _listing(tmp_path) == []  # neither half a file nor a temporary one


def test_failed_fsync_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", _enospc)
    with pytest.raises(OSError):
        fileio.write_json(tmp_path / "x.json", {"a": 1})
    assert _listing(tmp_path) == []


def test_train_whose_adapter_cannot_be_written_leaves_no_adapter_and_no_done(
    tmp_path, tiny_dir, train_file, monkeypatch
):
    real = os.replace

    def failing(src, dst, *a, **k):
        if Path(dst).name == "adapter":
            _enospc()
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", failing)
    out = tmp_path / "o"
    rc, _, err = run_main(train_argv(tiny_dir, train_file, out, max_steps=2, save_steps=2))
    assert rc == 1 and "No space left on device" in err
    names = _listing(out)
    assert "adapter" not in names and "DONE" not in names and "train_summary.json" not in names
    assert not [n for n in names if n.startswith(".")]  # no temporary folder left behind


def test_replace_dir_keeps_the_old_folder_when_the_swap_fails(tmp_path, monkeypatch):
    from circuit_breakers.training.run import replace_dir

    final, new = tmp_path / "adapter", tmp_path / ".adapter-new"
    final.mkdir()
    (final / "w").write_text("old")
    new.mkdir()
    (new / "w").write_text("new")
    real, calls = os.replace, []

    def second_fails(src, dst, *a, **k):
        calls.append(dst)
        if len(calls) == 2:  # the old one is moved aside, then the new one cannot be moved in
            _enospc()
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", second_fails)
    with pytest.raises(OSError):
        replace_dir(new, final)
    assert (final / "w").read_text() == "old" and _listing(tmp_path) == ["adapter"]


# -- audit: every writer goes through fileio (or writes into a temp folder renamed whole) -------
WRITE = re.compile(
    r"open\([^)]*['\"](w|a|x|wb|ab|w\+)['\"]|\.write_text\(|\.write_bytes\(|json\.dump\(|"
    r"torch\.save\(|shutil\.(copy|copyfile|copy2|move|copytree)\(|\.to_csv\(|np\.save|"
    r"yaml\.(safe_)?dump\([^)]*,"
)
#: file -> why its raw writes are safe. A new raw write anywhere else fails this test.
ALLOWED = {
    "core/fileio.py": "the atomic helpers themselves; append_jsonl appends whole fsync'ed lines",
    "core/models.py": "GGUF conversion writes into a temporary folder renamed whole",
}


def test_every_output_writer_goes_through_fileio():
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel in ALLOWED:
            continue
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            code = line.split("#", 1)[0]
            if WRITE.search(code):
                offenders.append(f"{rel}:{i}: {line.strip()}")
    assert not offenders, "raw writes (use circuit_breakers.core.fileio):\n" + "\n".join(offenders)
