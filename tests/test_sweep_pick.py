"""pipeline/sweep.py: the pick rule of demo_sweep.py, and that the pick reproduces its run."""

from circuit_breakers.pipeline.sweep import pick_best


def _run(name, harmful, nll, tools, **over):
    return {
        "name": name,
        "overrides": over,
        "suites": {
            "harmful_text": {"harmful_compliance_rate": harmful},
            "benign_text": {"benign_nll": nll},
            "benign_tools": {"benign_action_accuracy": tools},
        },
    }


BASE = _run("base", 0.6, 1.0, 0.40)


def test_pick_keeps_the_grids_base_overrides():
    # the grid's base switched a knob on for every run; the pick must keep it, or the benchmark
    # trains a different model than the one the sweep chose (it did: qwen round 2, H100)
    runs = [BASE, _run("a", 0.3, 1.02, 0.40, learning_rate=1e-3)]
    best = pick_best(runs, {"lora_skip_massive_inputs": True, "learning_rate": 5e-4})
    assert best["name"] == "a"
    assert best["overrides"] == {"lora_skip_massive_inputs": True, "learning_rate": 1e-3}


def test_pick_is_lowest_harmful_among_runs_that_keep_nll_and_tools():
    runs = [
        BASE,
        _run("damaging", 0.1, 1.20, 0.40, learning_rate=3e-3),  # NLL +20 %: out
        _run("tools_lost", 0.2, 1.00, 0.30, learning_rate=2e-3),  # -10 pts tools: out
        _run("kept_hi", 0.5, 1.04, 0.38, learning_rate=1e-4),
        _run("kept_lo", 0.4, 1.05, 0.37, learning_rate=3e-4),  # on both edges: in
    ]
    assert pick_best(runs)["name"] == "kept_lo"


def test_pick_falls_back_to_smallest_nll_when_no_run_keeps_both():
    runs = [BASE, _run("x", 0.1, 1.9, 0.4), _run("y", 0.5, 1.3, 0.1)]
    best = pick_best(runs)
    assert best["name"] == "y" and "smallest benign NLL" in best["why"]


def test_merged_round_picks_like_one_run_would(tmp_path):
    # a round run as one process per grid run (device_efficacy.sh CB_SWEEP_PAR=1): the parts are
    # joined with --merge, and --pick then chooses among all of them with the grid's base
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "demo_sweep.py"
    head = {"data_dir": "d", "eval_config": "qwen", "judge": "default", "base_overrides": {"k": 1}}
    parts = {
        "p1.json": [BASE, _run("kept", 0.4, 1.01, 0.40, learning_rate=3e-4)],
        "p2.json": [_run("lower_but_damaging", 0.1, 1.5, 0.40, learning_rate=1e-3)],
        "p3.json": [_run("kept_lower", 0.3, 1.03, 0.39, alpha=3.0)],
    }
    for name, runs in parts.items():
        (tmp_path / name).write_text(json.dumps({**head, "runs": runs}))
    out, pick = tmp_path / "round.json", tmp_path / "pick.json"
    cmd = [sys.executable, str(script), "--data-dir", "d", "--grid", "g", "--output", str(out),
           "--pick", str(pick), "--merge", *(str(tmp_path / n) for n in parts)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    assert [r["name"] for r in json.loads(out.read_text())["runs"]] == [
        "base", "kept", "lower_but_damaging", "kept_lower"
    ]  # fmt: skip
    assert json.loads(pick.read_text())["name"] == "kept_lower"
    assert json.loads(pick.read_text())["overrides"] == {"k": 1, "alpha": 3.0}
