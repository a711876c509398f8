"""The stage graph of a run folder: stages, their order and inputs, config hashes and markers.

=============  ================================  ==================================================
stage          what runs                         writes (under the run folder)
=============  ================================  ==================================================
data           ``cb data build --recipe demo``   ``data/train.jsonl``, ``data/holdout/``, ``stats.json``
eval_base      ``cb eval``, the base model       ``eval_base/results.json``, ``samples.jsonl``
train          ``cb train --preset demo``        ``train/adapter/``, ``metrics.jsonl``, ...
sanity         ``cb sanity``, trained model      ``sanity/sanity.json``
eval_trained   ``cb eval`` with the adapter      ``eval_trained/results.json``, ``samples.jsonl``
report         ``cb report``                     ``report/report.html`` and its PNGs
=============  ================================  ==================================================

Resuming. A stage's *config hash* covers its own settings, resolved, and the hashes of the
stages it reads (:data:`UPSTREAM`). At its end a stage writes ``<stage>/stage.json``
(:data:`MARKER`) atomically: hash, config, wall time and a fresh run id. A rerun skips a stage
whose marker has the same hash and was made from the current runs of its upstream stages
(their run ids); so a stage that is redone, because its settings changed or it never finished,
makes everything downstream of it run again too. Before a stage runs, its marker and its old
outputs are removed, so a crash never leaves stale results that look current. The report is
always rewritten (it takes seconds and reads whatever is there).

:class:`StageGraph` is that engine; :class:`~.demo.Demo` gives it each stage's config and
runner. The layout here is also what :mod:`circuit_breakers.report` reads.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from circuit_breakers.core.fileio import write_json
from circuit_breakers.core.redact import redact
from circuit_breakers.core.runs import MARKER, STAGES

UPSTREAM: dict[str, tuple[str, ...]] = {
    "data": (),
    "eval_base": ("data",),
    "train": ("data",),
    "sanity": ("train",),
    "eval_trained": ("data", "train"),
    "report": ("data", "eval_base", "train", "sanity", "eval_trained"),
}


ALWAYS_RUN = {"report"}


#: what must exist (in the stage's folder) for a finished stage to be skipped
OUTPUTS = {
    "data": ("train.jsonl", "holdout", "stats.json"),
    "eval_base": ("results.json", "samples.jsonl"),
    "train": ("adapter", "metrics.jsonl", "train_summary.json"),
    "sanity": ("sanity.json",),
    "eval_trained": ("results.json", "samples.jsonl"),
    "report": ("report.html",),
}


#: old outputs removed before a stage runs (data: ``build`` replaces its own files)
CLEAN = {
    "eval_base": ("results.json", "samples.jsonl"),
    "train": ("adapter", "checkpoints", "merged", "metrics.jsonl", "train_summary.json", "DONE"),
    "sanity": ("sanity.json",),
    "eval_trained": ("results.json", "samples.jsonl"),
    "report": ("report.html", "training_curves.png", "comparison.png"),
}


DESCRIBE = {
    "data": "building the training data and held-out suites",
    "eval_base": "evaluating the base model",
    "train": "training the circuit breaker",
    "sanity": "coherence check of the trained model",
    "eval_trained": "evaluating the trained model",
    "report": "writing the report",
}


Runner = Callable[[Any], dict | None]  # called with the StageGraph (a Demo)


def stage_hash(stage: str, config: dict, upstream: dict[str, str]) -> str:
    blob = json.dumps(
        {"stage": stage, "config": config, "upstream": upstream}, sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s:.1f} s" if s < 60 else f"{int(s // 60)}m {s % 60:02.0f}s"


def digest_files(root: Path) -> str:
    """sha256 over a data folder's sample files and stats (a user's build, see --data-dir)."""
    h = hashlib.sha256()
    for p in [
        root / "train.jsonl",
        root / "stats.json",
        *sorted((root / "holdout").glob("*.jsonl")),
    ]:
        h.update(p.name.encode())
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


class StageGraph:
    """Runs or skips the stages of one run folder in order (see the module docstring).

    A subclass provides :meth:`config` (a stage's resolved settings, JSON-able) and, in
    ``runners``, one function per stage that does the work and returns the ``info`` its marker
    keeps."""

    def __init__(
        self,
        root: Path,
        *,
        runners: dict[str, Runner],
        say: Callable[[str], None],
        redo: tuple[str, ...] = (),
        until: str | None = None,
        skip: tuple[str, ...] = (),
    ) -> None:
        self.root = root
        self.runners = runners
        self.say = say
        self.redo = redo
        self.until = until
        self.skip = skip  # stages left out of this run (another process runs them)
        self.markers: dict[str, dict] = {}
        self.hashes: dict[str, str] = {}
        self.status: dict[str, str] = {}
        self.seconds_now: dict[str, float] = {}

    def config(self, stage: str) -> dict:
        raise NotImplementedError

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def read_marker(self, stage: str) -> dict | None:
        path = self.root / stage / MARKER
        try:
            return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
        except (OSError, json.JSONDecodeError):
            return None

    def can_skip(self, stage: str, old: dict | None, h: str, up_runs: dict) -> bool:
        redo = set(self.redo)
        return bool(
            old
            and stage not in ALWAYS_RUN
            and stage not in redo
            and "all" not in redo
            and old.get("status") == "complete"
            and old.get("hash") == h
            and old.get("upstream_runs", {}) == up_runs
            and all((self.stage_dir(stage) / p).exists() for p in OUTPUTS[stage])
        )

    def clean(self, stage: str) -> None:
        d = self.root / stage
        (d / MARKER).unlink(missing_ok=True)
        # what a killed run left of its atomic writes (fileio.atomic_write, train.save_adapter)
        leftovers = [*d.glob(".*.tmp"), *d.glob(".adapter-*"), *d.glob(".merged-*")]
        for p in [*(d / name for name in CLEAN.get(stage, ())), *leftovers]:
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)
        d.mkdir(parents=True, exist_ok=True)

    def write_marker(self, stage: str, **fields_: Any) -> dict:
        marker = {"stage": stage, "hash": self.hashes.get(stage), **fields_}
        write_json(self.root / stage / MARKER, redact(marker))  # no secret on disk
        return marker

    def run_stages(self, t_start: float) -> BaseException | None:
        """Run or skip every stage (up to ``until``) in order; return the error that stopped a
        stage (its marker says ``failed``; the stages after it are not run), else None."""
        stages = STAGES[: STAGES.index(self.until) + 1] if self.until else STAGES
        for stage in stages:  # resolve every setting first: a bad one fails before any work
            self.config(stage)
        self.root.mkdir(parents=True, exist_ok=True)
        failure: BaseException | None = None
        for i, stage in enumerate(stages, start=1):
            tag = f"[{i}/{len(stages)}] {stage}"
            ups = UPSTREAM[stage]
            if stage in self.skip:
                self.status[stage] = "not run"
                self.say(f"{tag}: left to another process")
                continue
            if any(self.status.get(u) not in ("ran", "skipped") for u in ups):
                self.status[stage] = "blocked"
                continue
            h = stage_hash(stage, self.config(stage), {u: self.hashes[u] for u in ups})
            self.hashes[stage] = h
            up_runs = {u: self.markers[u]["run_id"] for u in ups}
            old = self.read_marker(stage)
            if self.can_skip(stage, old, h, up_runs):
                self.markers[stage], self.status[stage] = old, "skipped"
                self.say(
                    f"{tag}: complete for config {h}, skipped (it took {fmt_seconds(old.get('seconds'))})"
                )
                continue
            self.say(f"{tag}: {DESCRIBE[stage]} (config {h}) ...")
            self.clean(stage)
            started, t0 = (
                datetime.now(timezone.utc).isoformat(timespec="seconds"),
                time.perf_counter(),
            )
            try:
                info = self.runners[stage](self) or {}
            except BaseException as e:  # noqa: BLE001 -- recorded, then raised again below
                secs = time.perf_counter() - t0
                self.write_marker(
                    stage,
                    status="failed",
                    error=f"{type(e).__name__}: {e}",
                    seconds=round(secs, 2),
                    started=started,
                )
                self.status[stage], failure = "failed", e
                self.say(f"{tag}: FAILED after {fmt_seconds(secs)}: {type(e).__name__}: {e}")
                break
            secs = time.perf_counter() - t0
            self.markers[stage] = self.write_marker(
                stage,
                status="complete",
                config=self.config(stage),
                upstream={u: self.hashes[u] for u in ups},
                upstream_runs=up_runs,
                run_id=uuid.uuid4().hex,
                seconds=round(secs, 2),
                started=started,
                finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                info=info,
            )
            self.status[stage], self.seconds_now[stage] = "ran", secs
            self.say(
                f"{tag}: done in {fmt_seconds(secs)} (elapsed {fmt_seconds(time.perf_counter() - t_start)})"
            )
        return failure
