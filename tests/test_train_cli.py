"""cb train: presets load, and bad settings exit 2 with file/line/field."""

import pytest
import torch

from circuit_breakers.cli import main
from circuit_breakers.training.config import config_parser
from circuit_breakers.training.experimental import ExperimentalConfig
from circuit_breakers.training.presets import PRESET_DIR, load_layers


@pytest.mark.parametrize("preset", sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
def test_every_preset_loads(preset):
    parser = config_parser(ExperimentalConfig)  # what cb train parses
    values = load_layers(preset, None)
    if not torch.cuda.is_available():  # the 8B presets ask for bf16 on a GPU
        values.update(bf16=False, use_cpu=True)
    parser.set_defaults(output_dir="/tmp/x", **values)
    cfg = parser.parse_args_into_dataclasses([], look_for_args_file=False)[0]
    assert cfg.target_layers and cfg.max_steps > 0
    assert max(cfg.lora_layers) < max(cfg.target_layers)  # LoRA below the truncation point


def test_stage2_has_the_seed_values():
    d = load_layers("stage2", None)
    assert (
        d["alpha"],
        d["target_layers"],
        d["max_grad_norm"],
        d["max_steps"],
        d["learning_rate"],
    ) == (0.5, [15], 0.5, 300, 3e-5)
    assert d["loss_weighting"] == "dual" and d["per_device_train_batch_size"] == 4


def test_unknown_yaml_key_names_file_line_key(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("alpha: 2.0\nlerning_rate: 0.1\n")
    assert (
        main(["train", "--config", str(cfg), "--train_file", "examples/three_samples.jsonl"]) == 2
    )
    assert f"{cfg}:2: field 'lerning_rate': unknown config key" in capsys.readouterr().err


def test_unknown_preset(capsys):
    assert main(["train", "--preset", "nope"]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags,message",
    [
        (
            ["--target_layers", "31"],
            "target layer 31 does not exist: the model has 30 decoder blocks",
        ),
        (["--target_layers", "0"], "target_layers must be >= 1"),
        (
            ["--target_layers", "6", "--lora_layers", "0", "8"],
            "LoRA layer 8 is beyond the last kept block",
        ),
        (["--loss_weighting", "triple"], "unknown loss_weighting 'triple'"),
        (
            ["--reroute_variant", "cosin"],
            "field 'reroute_variant': unknown reroute_variant 'cosin'",
        ),
        (["--retain_sampling", "random"], "unknown retain_sampling 'random' (choose uniform"),
    ],
)
def test_bad_layer_settings_exit_2(tmp_path, capsys, flags, message):
    argv = [
        "train",
        "--preset",
        "demo",
        "--train_file",
        "examples/three_samples.jsonl",
        "--output_dir",
        str(tmp_path / "o"),
        *flags,
    ]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_gpu_preset_on_cpu_says_what_to_do(capsys):
    if torch.cuda.is_available():
        pytest.skip("has a GPU")
    assert (
        main(["train", "--preset", "stage2", "--train_file", "examples/three_samples.jsonl"]) == 2
    )
    assert "--bf16 false" in capsys.readouterr().err


def test_bad_choice_in_yaml_exits_2_naming_the_field(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("retain_variant: l3\n")
    argv = ["train", "--config", str(cfg), "--train_file", "examples/three_samples.jsonl"]
    assert main([*argv, "--output_dir", str(tmp_path / "o"), "--use_cpu", "true"]) == 2
    assert (
        "field 'retain_variant': unknown retain_variant 'l3' (choose l2," in capsys.readouterr().err
    )


def test_choice_fields_are_literals_checked_in_post_init(tmp_path):
    from circuit_breakers.core.errors import InputError
    from circuit_breakers.training.config import CircuitBreakerConfig, choice_fields
    from circuit_breakers.training.experimental import ExperimentalConfig, knob
    from circuit_breakers.training.losses import REROUTE_VARIANTS, RETAIN_VARIANTS

    choices = choice_fields(CircuitBreakerConfig)
    assert set(choices) == {
        "loss_weighting",
        "reroute_variant",
        "retain_variant",
        "retain_sampling",
    }
    assert set(choices["retain_variant"]) == set(RETAIN_VARIANTS)
    kw = dict(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    # the research-only variant needs the experimental config
    assert set(choice_fields(ExperimentalConfig)["reroute_variant"]) == set(REROUTE_VARIANTS)
    with pytest.raises(InputError, match="unknown reroute_variant 'cosine_normalized'"):
        CircuitBreakerConfig(reroute_variant="cosine_normalized", **kw)
    exp = ExperimentalConfig(reroute_variant="cosine_normalized", alpha_decay=0.5, **kw)
    assert knob(exp, "alpha_decay") == 0.5
    plain = CircuitBreakerConfig(**kw)
    assert knob(plain, "alpha_decay") == 0.0 and knob(plain, "retain_full_sequence") is False
    assert not hasattr(plain, "lora_skip_massive_inputs") and not hasattr(
        plain, "sanity_every_steps"
    )
