"""``cb demo`` killed with SIGKILL during each of its six stages, one after the other, then run to
the end: every rerun skips the stages that finished, redoes the one that was killed, and the
final run folder equals that of an uninterrupted run (metrics, adapter, evals, summary); after
every kill, no output file with its final name is torn.

Inputs are tiny and offline: a 3-layer random model with the real tokenizer, a recipe of JSONL
sources that already carry their answers (the data stage generates nothing), two eval suites of
3 prompts answered with 3 tokens, 10 training steps. Each ``cb demo`` is its own process, forked
from a preloaded server (relkit says why), killed at a point read from the files it writes.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from relkit import (
    HUB_TOKEN,
    SECRETS,
    files_with,
    run_cb,
    start_cb,
    strict_rows,
    without_wall_clock,
)
from safetensors.torch import load_file

from circuit_breakers.core.runs import MARKER, STAGES
from circuit_breakers.training.checkpoints import checkpoint_step, last_good_checkpoint

STEPS = 10
WORDS = ["apple", "river", "stone", "cloud", "garden", "window", "candle", "forest", "bridge",
         "market", "lantern", "pencil", "harbor", "meadow", "violin", "basket", "mirror", "ladder",
         "orchard", "planet", "rocket", "saddle", "tunnel", "valley", "wagon"]  # fmt: skip


# -- tiny inputs --------------------------------------------------------------------------------
def _rows(rng: random.Random, prefix: str, cls: str, n: int, answer: bool) -> list[dict]:
    rows = []
    for i in range(n):
        messages = [{"role": "user", "content": f"Tell me about {' '.join(rng.sample(WORDS, 8))}"}]
        if answer:
            text = "Here is what I know: " + " and ".join(rng.sample(WORDS, 6)) + "."
            messages.append({"role": "assistant", "content": text})
        split = "harmful" if cls == "harmful_flip" else "retain"
        rows.append(
            {
                "id": f"{prefix}/{i}",
                "split": split,
                "priority_class": cls,
                "source": prefix,
                "messages": messages,
            }
        )
    return rows


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def demo_argv(tmp_path_factory, tiny_dir) -> Callable[[Path], list[str]]:
    root = tmp_path_factory.mktemp("demo_inputs")
    rng = random.Random(0)

    def source(name: str, cls: str, n: int, answer: bool = True) -> list[dict]:
        rows = _rows(rng, name, cls, n, answer)
        return [{"source": "jsonl", "count": n, "path": _jsonl(root / f"{name}.jsonl", rows)}]

    recipe = {
        "name": "tiny",
        "seed": 0,
        "target_ratio": 1.0,
        "holdout": {
            "prompt_sources": [],
            "suites": {
                "harmful_text": source("held_harm", "harmful_flip", 3, answer=False),
                "benign_text": source("held_chat", "general_conversation", 3),
            },
        },
        "train": {
            "harmful_flip": {"sources": source("harm", "harmful_flip", 6)},
            "general_conversation": {"sources": source("chat", "general_conversation", 6)},
        },
    }
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    (root / "eval.yaml").write_text(
        "max_new_tokens: 3\njudge: regex\nsuites:\n"
        "  harmful_text: {type: harmful_text, file: harmful_text.jsonl}\n"
        "  benign_text: {type: benign_text, file: benign_text.jsonl}\n",
        encoding="utf-8",
    )
    train_set = {
        "target_layers": "[2, 3]",
        "lora_layers": "[0, 1, 2]",
        "lora_r": "4",
        "max_steps": str(STEPS),
        "per_device_train_batch_size": "2",
        "save_steps": "2",
        "logging_steps": "1",
        "hub_token": HUB_TOKEN,  # a secret in the settings (leakage is checked at the end)
    }

    def argv(out: Path) -> list[str]:
        a = ["demo", "--output-dir", str(out), "--model", str(tiny_dir),
             "--recipe", str(root / "recipe.yaml"), "--eval-config", str(root / "eval.yaml"),
             "--device", "cpu", "--sanity-max-new-tokens", "3", "--no-progress"]  # fmt: skip
        for k, v in train_set.items():
            a += ["--train-set", f"{k}={v}"]
        return a

    return argv


# -- kill points, read from the files the run writes ----------------------------------------------
def _mid_training(run: Path) -> bool:
    """A whole checkpoint exists and a later step was logged: killed between two saves."""
    ckpt = last_good_checkpoint(run / "train" / "checkpoints")
    metrics = run / "train" / "metrics.jsonl"
    return (
        bool(ckpt)
        and metrics.exists()
        and metrics.read_bytes().count(b"\n") > checkpoint_step(ckpt)
    )


def _folder(stage: str) -> Callable[[Path], bool]:
    return lambda run: (run / stage).is_dir()


#: stage -> (where in the stage the kill lands, the test for it). A stage's folder appears when
#: the stage starts (its old outputs and marker are removed then).
KILL_AT: dict[str, tuple[str, Callable[[Path], bool]]] = {
    "data": ("its folder created", _folder("data")),
    "eval_base": ("its folder created", _folder("eval_base")),
    "train": ("between checkpoints", _mid_training),
    "sanity": ("its folder created", _folder("sanity")),
    "eval_trained": ("its folder created", _folder("eval_trained")),
    "report": (
        "one PNG written, no HTML yet",
        lambda run: (run / "report" / "training_curves.png").exists(),
    ),
}
#: Windows of milliseconds widened so the kill lands inside them instead of racing the run
#: (relkit._slow_down): the HTML follows the PNGs at once, and a tiny training step is fast.
SLOW_AT = {
    "report": "circuit_breakers.report.html:render_html=10",
    "train": "circuit_breakers.training.trainer:CircuitBreakerTrainer.compute_loss=0.15",
}


def _kill_when(proc, run: Path, stage: str, log: Path, timeout: float = 300.0) -> float:
    """SIGKILL ``proc`` as soon as the kill point of ``stage`` is seen; returns seconds waited."""
    ready, t0 = KILL_AT[stage][1], time.monotonic()
    while time.monotonic() - t0 < timeout:
        if ready(run):
            assert proc.kill9() == -9
            return time.monotonic() - t0
        if proc.poll() is not None:
            raise AssertionError(
                f"cb demo ended (exit {proc.poll()}) before the kill point in {stage}:\n"
                + log.read_text(errors="replace")[-3000:]
            )
        time.sleep(0.005)
    proc.kill9()
    raise AssertionError(f"no kill point in {stage} within {timeout:.0f} s")


def _whole_outputs(run: Path) -> tuple[int, int]:
    """Check every file with its final name; return (files checked, temporary files left).

    Temporary files (``.name.XXXX.tmp``, ``.adapter-XXXX/``) are what a kill leaves of an
    atomic write; they never carry a final name. Checkpoints are judged on resume
    (checkpoints.checkpoint_problem) and the demo removes them before training again."""
    checked = temp = 0
    for p in sorted(run.rglob("*")):
        rel = p.relative_to(run).parts
        if any(part.startswith(".") for part in rel):
            temp += p.is_file()
            continue
        if not p.is_file() or "checkpoints" in rel:
            continue
        checked += 1
        if p.suffix == ".json":
            json.loads(p.read_text(encoding="utf-8"))
        elif p.suffix == ".jsonl":
            strict_rows(p)
        elif p.suffix == ".safetensors":
            load_file(str(p))
        elif p.suffix == ".png":
            assert p.read_bytes().endswith(b"IEND\xaeB`\x82"), f"torn PNG {p}"
        elif p.suffix == ".html":
            assert p.read_text(encoding="utf-8").rstrip().endswith("</html>"), f"torn {p}"
    return checked, temp


def _marker_status(run: Path, stage: str) -> str | None:
    path = run / stage / MARKER
    return json.loads(path.read_text(encoding="utf-8"))["status"] if path.exists() else None


def _stage_lines(log: Path) -> dict[str, str]:
    """What one ``cb demo`` did per stage, from its progress lines: ran | skipped."""
    done = {}
    for line in log.read_text(errors="replace").splitlines():
        for s in STAGES:
            if line.startswith("[") and f"] {s}: " in line:
                if ", skipped (it took" in line:
                    done[s] = "skipped"
                elif ": done in " in line:
                    done[s] = "ran"
    return done


def _eval_rows(run: Path, stage: str) -> list[tuple]:
    return [
        (r["id"], r["suite"], r["output"], json.dumps(r["scores"], sort_keys=True))
        for r in strict_rows(run / stage / "samples.jsonl")
    ]


def _no_time(targets: list[dict]) -> list[dict]:
    return [t for t in targets if t["suite"] != "time"]  # the wall-clock budget target


def test_demo_killed_in_every_stage_then_rerun_equals_an_uninterrupted_run(tmp_path, demo_argv):
    ref, run = tmp_path / "ref", tmp_path / "run"
    rc = run_cb(demo_argv(ref), tmp_path / "ref.log", **SECRETS)
    assert rc == 0, (tmp_path / "ref.log").read_text()

    checked_total = temp_total = 0
    for i, stage in enumerate(STAGES):
        log = tmp_path / f"kill{i}-{stage}.log"
        slow = {"CB_TEST_SLOW": SLOW_AT[stage]} if stage in SLOW_AT else {}
        waited = _kill_when(start_cb(demo_argv(run), log, **SECRETS, **slow), run, stage, log)
        # the kill landed inside the stage: the stages before it are complete, it is not
        assert _marker_status(run, stage) != "complete", f"{stage} finished before the kill"
        assert all(_marker_status(run, s) == "complete" for s in STAGES[:i])
        # this run skipped what earlier runs finished and redid the stage killed before
        assert _stage_lines(log) == {
            **{s: "skipped" for s in STAGES[: max(i - 1, 0)]},
            **({STAGES[i - 1]: "ran"} if i else {}),
        }, log.read_text(errors="replace")[-3000:]
        assert not (run / "summary.json").exists()
        checked, temp = _whole_outputs(run)
        checked_total, temp_total = checked_total + checked, temp_total + temp
        print(
            f"\ndemo kill -9 during {stage} ({KILL_AT[stage][0]}, {waited:.1f} s into the run): "
            f"{checked} files whole, {temp} temporary files"
        )

    log = tmp_path / "final.log"
    assert run_cb(demo_argv(run), log, **SECRETS) == 0, log.read_text(errors="replace")[-3000:]
    assert _stage_lines(log) == {**{s: "skipped" for s in STAGES[:-1]}, "report": "ran"}
    assert _whole_outputs(run)[1] == 0  # the stage that redid its work removed what a kill left

    a, b = (json.loads((d / "summary.json").read_text()) for d in (ref, run))
    assert b["comparison"] == a["comparison"] and a["comparison"]
    assert _no_time(b["targets"]) == _no_time(a["targets"])
    assert b["sanity"] == a["sanity"]
    assert {s: v["hash"] for s, v in b["stages"].items()} == {
        s: v["hash"] for s, v in a["stages"].items()
    }  # the same resolved configs
    for stage in ("eval_base", "eval_trained"):
        ra, rb = (json.loads((d / stage / "results.json").read_text()) for d in (ref, run))
        assert rb["suites"] == ra["suites"]
        assert _eval_rows(run, stage) == _eval_rows(ref, stage)
    for name in ("train.jsonl", "holdout/harmful_text.jsonl", "holdout/benign_text.jsonl"):
        assert (run / "data" / name).read_bytes() == (ref / "data" / name).read_bytes()
    rows = strict_rows(run / "train" / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    assert without_wall_clock(rows) == without_wall_clock(
        strict_rows(ref / "train" / "metrics.jsonl")
    )
    wa, wb = (
        load_file(str(d / "train" / "adapter" / "adapter_model.safetensors")) for d in (ref, run)
    )
    assert wa.keys() == wb.keys() and wa
    diff = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    sa, sb = (json.loads((d / "sanity" / "sanity.json").read_text()) for d in (ref, run))
    assert sb["report"] == sa["report"]
    print(
        f"\ndemo: {len(STAGES)} kills (one per stage) survived; final summary, evals, metrics "
        f"equal to an uninterrupted run; max |adapter diff| = {diff:.3g}; "
        f"{checked_total} files whole after the kills, {temp_total} temporary files left"
    )
    assert diff <= 1e-6

    secrets = [*SECRETS.values(), HUB_TOKEN]
    (leaks, n_ref), (leaks_run, n_run) = files_with(ref, secrets), files_with(run, secrets)
    logs = sorted(tmp_path.glob("*.log"))
    leaks += leaks_run + [
        f"{p.name}: {s[:12]}..."
        for p in logs
        for s in secrets
        if s in p.read_text(errors="replace")
    ]
    print(
        f"leakage (demo, all stages): {len(leaks)} secrets found in {n_ref + n_run} files "
        f"and {len(logs)} logs"
    )
    assert leaks == []
