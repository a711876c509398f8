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
