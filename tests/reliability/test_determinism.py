"""Same seed, same run: metrics.jsonl identical on CPU (wall-clock keys excluded), same adapter."""

from __future__ import annotations

from relkit import WALL_CLOCK_KEYS, run_main, strict_rows, train_argv, without_wall_clock
from safetensors.torch import load_file


def _run(tmp_path, tiny_dir, train_file, name, seed):
    out = tmp_path / name
    argv = train_argv(tiny_dir, train_file, out, max_steps=8, save_strategy="no", seed=seed)
    argv.remove("--save_steps")
    argv.remove("4")
    rc, _, err = run_main(argv)
    assert rc == 0, err
    return strict_rows(out / "metrics.jsonl"), load_file(
        str(out / "adapter" / "adapter_model.safetensors")
    )


def test_same_seed_gives_identical_metrics_and_adapter(tmp_path, tiny_dir, train_file):
    rows_a, ad_a = _run(tmp_path, tiny_dir, train_file, "a", 0)
    rows_b, ad_b = _run(tmp_path, tiny_dir, train_file, "b", 0)
    rows_c, _ = _run(tmp_path, tiny_dir, train_file, "c", 1)
    assert {"tokens_per_s"} == WALL_CLOCK_KEYS and all("tokens_per_s" in r for r in rows_a)
    assert len(rows_a) == 8
    assert without_wall_clock(rows_a) == without_wall_clock(rows_b)  # exact, every key
    assert all((ad_a[k] == ad_b[k]).all() for k in ad_a)
    # the check has teeth: another seed changes the losses
    assert [r["train/loss"] for r in rows_a] != [r["train/loss"] for r in rows_c]
