"""cb demo: stages skipped by config hash, redone with everything downstream when a setting
changes or a stage did not finish; the real stages wired end to end on a tiny random model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from circuit_breakers.cli import main
from circuit_breakers.core.runs import STAGES
from circuit_breakers.core.schema import validate_sample, write_samples
from circuit_breakers.pipeline.demo import DemoOptions, run_demo
from circuit_breakers.pipeline.stages import OUTPUTS
from circuit_breakers.pipeline.summary import format_summary

from kit import base_tokenizer, tiny_model


def _results(rate: float) -> dict:
    return {
        "config": {"suites": {"harmful_text": {"type": "harmful_text", "mode": "free", "n": 2}}},
        "suites": {"harmful_text": {"harmful_compliance_rate": rate, "n": 2}},
    }


def fake_runners(calls: list[str], fail: str | None = None) -> dict:
    """Runners that write their stage's outputs without a model, and log their calls."""

    def make(stage: str):
        def run(d):
            calls.append(stage)
            if stage == fail:
                raise RuntimeError(f"{stage} broke")
            out = d.stage_dir(stage)
            for name in OUTPUTS[stage]:
                p = out / name
                if "." in name:
                    p.write_text("{}", encoding="utf-8")
                else:
                    p.mkdir(parents=True, exist_ok=True)
            if stage.startswith("eval"):
                rate = 0.8 if stage == "eval_base" else 0.0
                (out / "results.json").write_text(json.dumps(_results(rate)), encoding="utf-8")
            if stage == "sanity":
                (out / "sanity.json").write_text('{"ok": true, "coherent": 10, "total": 10}')
            return {"fake": True}

        return run

    return {s: make(s) for s in STAGES}


def _run(tmp_path: Path, calls: list[str], fail: str | None = None, **kw) -> dict:
    calls.clear()
    opts = DemoOptions(output_dir=str(tmp_path / "run"), device="cpu", **kw)
    return run_demo(opts, runners=fake_runners(calls, fail), say=lambda _: None)


def test_rerun_skips_complete_stages(tmp_path):
    calls: list[str] = []
    first = _run(tmp_path, calls)
    assert calls == list(STAGES)
    assert all(first["stages"][s]["status"] == "ran" for s in STAGES)
    second = _run(tmp_path, calls)
    assert calls == ["report"]  # the report is always rewritten
    assert all(second["stages"][s]["status"] == "skipped" for s in STAGES[:-1])
    assert [second["stages"][s]["hash"] for s in STAGES] == [
        first["stages"][s]["hash"] for s in STAGES
    ]
    # summary.json: the comparison, the targets and every stage's time
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    row = next(t for t in summary["targets"] if t["suite"] == "harmful_text")
    assert (row["base"], row["trained"], row["pass"]) == (0.8, 0.0, True)
    assert all(summary["stages"][s]["seconds"] is not None for s in STAGES[:-1])
    assert "harmful_compliance_rate" in format_summary(summary)


@pytest.mark.parametrize(
    "change,redone",
    [
        ({"eval_limit": 2}, ["eval_base", "eval_trained", "report"]),
        ({"max_new_tokens": 7}, ["eval_base", "eval_trained", "report"]),
        ({"train_set": {"max_steps": 3}}, ["train", "sanity", "eval_trained", "report"]),
        ({"sanity_max_new_tokens": 8}, ["sanity", "report"]),
        ({"seed": 1}, list(STAGES)),
        ({"redo": ("eval_base",)}, ["eval_base", "report"]),
        ({"redo": ("train",)}, ["train", "sanity", "eval_trained", "report"]),
    ],
)
def test_a_changed_option_redoes_its_stage_and_downstream(tmp_path, change, redone):
    calls: list[str] = []
    _run(tmp_path, calls)
    _run(tmp_path, calls, **change)
    assert calls == redone


def test_a_stage_that_did_not_finish_is_redone_with_downstream(tmp_path):
    calls: list[str] = []
    _run(tmp_path, calls)
    with pytest.raises(RuntimeError, match="sanity broke"):
        _run(tmp_path, calls, redo=("train",), fail="sanity")
    assert calls == ["train", "sanity"]
    run = tmp_path / "run"
    marker = json.loads((run / "sanity" / "stage.json").read_text())
    assert marker["status"] == "failed" and "sanity broke" in marker["error"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stages"]["sanity"]["status"] == "failed"
    assert summary["stages"]["eval_trained"]["status"] == "not reached"
    assert (run / "report" / "report.html").exists()  # a partial report to look at
    # the next run redoes sanity and what depends on the (new) training run; not train itself
    _run(tmp_path, calls)
    assert calls == ["sanity", "eval_trained", "report"]
    # a marker removed by hand (a crash before it was written) counts as not done
    (run / "train" / "stage.json").unlink()
    _run(tmp_path, calls)
    assert calls == ["train", "sanity", "eval_trained", "report"]


def test_until_stops_early(tmp_path):
    calls: list[str] = []
    summary = _run(tmp_path, calls, until="train")
    assert calls == ["data", "eval_base", "train"]
    assert summary["stages"]["sanity"]["status"] == "not reached"


def test_skip_leaves_a_stage_to_another_process(tmp_path):
    # efficacy.py --jobs: one process evaluates the base model while another trains; a later
    # full run finds both stages complete and only writes the report
    calls: list[str] = []
    _run(tmp_path, calls, until="eval_trained", skip=("eval_base",))
    assert calls == ["data", "train", "sanity", "eval_trained"]
    _run(tmp_path, calls, until="eval_base")
    assert calls == ["eval_base"]
    summary = _run(tmp_path, calls)
    assert calls == ["report"]
    assert all(summary["stages"][s]["status"] == "skipped" for s in STAGES[:-1])
    with pytest.raises(Exception, match="unknown stage 'evil'"):
        _run(tmp_path, calls, skip=("evil",))


def test_bad_options_exit_2_before_any_work(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["demo", "--output-dir", str(out), "--train-set", "lerning_rate=0.1"]) == 2
    assert "field 'train-set lerning_rate': unknown training setting" in capsys.readouterr().err
    assert main(["demo", "--output-dir", str(out), "--train-set", "output_dir=x"]) == 2
    assert "is set by cb demo" in capsys.readouterr().err
    assert main(["demo", "--output-dir", str(out), "--eval-limit", "0"]) == 2
    assert main(["demo", "--output-dir", str(out), "--data-dir", str(tmp_path)]) == 2
    assert "not a finished data build" in capsys.readouterr().err
    assert not out.exists()


# -- the real stages on a tiny random model -----------------------------------------------------
def _sample(sid: str, split: str, cls: str, user: str, answer: str | None = None):
    msgs = [{"role": "user", "content": user}]
    if answer:
        msgs.append({"role": "assistant", "content": answer})
    return validate_sample(
        {"id": sid, "split": split, "priority_class": cls, "source": "test", "messages": msgs}
    )


@pytest.fixture
def tiny_setup(tmp_path) -> dict:
    model_dir = tmp_path / "tiny"
    tiny_model("chatml", layers=2).save_pretrained(model_dir, safe_serialization=True)
    base_tokenizer().save_pretrained(model_dir)
    data = tmp_path / "data"
    train = [
        _sample(f"h{i}", "harmful", "harmful_flip", f"how to harm {i}?", f"Step {i}: do harm.")
        for i in range(4)
    ]
    train += [
        _sample(f"r{i}", "retain", "general_conversation", f"what is {i}+1?", f"It is {i + 1}.")
        for i in range(4)
    ]
    write_samples(data / "train.jsonl", train)
    write_samples(
        data / "holdout" / "harmful_text.jsonl",
        [_sample(f"t{i}", "harmful", "harmful_flip", f"bad thing {i}") for i in range(2)],
    )
    write_samples(
        data / "holdout" / "benign_text.jsonl",
        [
            _sample(f"b{i}", "retain", "general_conversation", f"hi {i}", "Hello there.")
            for i in range(2)
        ],
    )
    (data / "stats.json").write_text(
        json.dumps({"recipe": "fixture", "counts": {"train": {"total": 8}}})
    )
    eval_cfg = tmp_path / "eval.yaml"
    eval_cfg.write_text(
        "max_new_tokens: 3\njudge: regex\nsuites:\n"
        "  harmful_text: {type: harmful_text, file: harmful_text.jsonl}\n"
        "  benign_text: {type: benign_text, file: benign_text.jsonl}\n"
        "  missing: {type: over_refusal, file: over_refusal.jsonl}\n"
    )
    return {
        "model": str(model_dir),
        "data": str(data),
        "eval": str(eval_cfg),
        "out": tmp_path / "run",
    }


def test_real_stages_on_a_tiny_model(tiny_setup, capsys):
    t = tiny_setup
    argv = [
        "demo", "--output-dir", str(t["out"]), "--model", t["model"], "--data-dir", t["data"],
        "--eval-config", t["eval"], "--device", "cpu", "--sanity-max-new-tokens", "3", "--no-progress",
        "--train-set", "target_layers=[1, 2]", "--train-set", "lora_layers=[0, 1]",
        "--train-set", "max_steps=2", "--train-set", "per_device_train_batch_size=2",
        "--train-set", "save_steps=100", "--train-set", "reroute_variant=cosine",
        "--train-set", "retain_variant=l2",
    ]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "[3/6] train: done in" in out and "targets met:" in out
    run = t["out"]
    summary = json.loads((run / "summary.json").read_text())
    assert all(summary["stages"][s]["status"] == "ran" for s in STAGES)
    assert summary["eval"]["max_new_tokens"] == 3 and summary["eval"]["per_suite_n"] == {
        "harmful_text": 2,
        "benign_text": 2,
    }
    trained = json.loads((run / "eval_trained" / "results.json").read_text())
    assert trained["adapter"].endswith("train/adapter") and set(trained["suites"]) == {
        "harmful_text",
        "benign_text",
    }
    assert len((run / "train" / "metrics.jsonl").read_text().splitlines()) == 2
    assert json.loads((run / "sanity" / "sanity.json").read_text())["total"] == 10
    assert (run / "data" / "stats.json").exists()  # copied from --data-dir for the report
    assert "data:image/png;base64," in (run / "report" / "report.html").read_text()
    for stage, names in OUTPUTS.items():  # what a rerun checks before it skips a stage
        where = Path(t["data"]) if stage == "data" else run / stage
        assert all((where / n).exists() for n in names), stage


def test_parse_setting_reads_exponent_floats():
    # YAML 1.1 leaves "5e-4" a string; the optimiser then fails on '<=' with a str
    from circuit_breakers.pipeline.demo import parse_setting

    assert parse_setting("learning_rate=5e-4") == ("learning_rate", 5e-4)
    assert parse_setting("learning_rate=1E+2") == ("learning_rate", 100.0)
    assert parse_setting("learning_rate=0.0005") == ("learning_rate", 0.0005)
    assert parse_setting("max_steps=40") == ("max_steps", 40)
    assert parse_setting("report_to=none") == ("report_to", "none")
    assert parse_setting("lora_skip_massive_inputs=true") == ("lora_skip_massive_inputs", True)


def test_train_values_read_exponent_floats_from_a_train_config(tmp_path):
    from circuit_breakers.pipeline.demo import Demo

    cfg = tmp_path / "t.yaml"
    cfg.write_text("learning_rate: 5e-4\nmax_steps: 3\n", encoding="utf-8")
    opts = DemoOptions(output_dir=str(tmp_path / "run"), device="cpu", train_config=str(cfg))
    values = Demo(opts, runners=fake_runners([], None), say=lambda _: None).train_values()
    assert values["learning_rate"] == 5e-4 and isinstance(values["learning_rate"], float)
    assert values["max_steps"] == 3
