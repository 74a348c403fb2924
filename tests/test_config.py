import dataclasses
from pathlib import Path

import pytest

from asr.config import (CONFIG_DIR, Config, ConfigError, ModelConfig, load_config, model_preset, save_config)


def write(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_without_a_file():
    config = load_config()
    assert config == Config()
    assert dataclasses.is_dataclass(config) and config.optim.lr == 1e-3


def test_yaml_sections_map_onto_dataclasses(tmp_path):
    path = write(tmp_path, """
model: {n_text_layer: 2, ctc_head: true}
optim: {lr: 3, betas: [0.9, 0.95], schedule: cosine}
data: {train: [a.jsonl.gz, b.jsonl.gz], max_duration: 60}
train: {zero_stage: 2, precision: bf16}
""")
    config = load_config(path)
    assert config.model.n_text_layer == 2 and config.model.ctc_head is True
    assert config.optim.lr == 3.0 and isinstance(config.optim.lr, float)
    assert config.optim.betas == (0.9, 0.95)
    assert config.data.train == ("a.jsonl.gz", "b.jsonl.gz")
    assert config.data.max_duration == 60.0
    assert config.train.zero_stage == 2 and config.train.precision == "bf16"


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().optim.lr = 1.0


def test_unknown_key_names_the_key_and_the_file(tmp_path):
    path = write(tmp_path, "optim:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert str(path) in message and "optim.learning_rate" in message and "lr" in message


def test_unknown_section_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'optimizer'"):
        load_config(write(tmp_path, "optimizer: {lr: 0.1}\n"))


@pytest.mark.parametrize("text, key", [
    ("optim: {lr: fast}", "optim.lr"),
    ("model: {n_text_layer: 2.5}", "model.n_text_layer"),
    ("model: {ctc_head: 1}", "model.ctc_head"),
    ("train: {zero_stage: 4}", "train.zero_stage"),
    ("train: {precision: fp8}", "train.precision"),
    ("optim: {betas: [0.9]}", "optim.betas"),
    ("data: {train: [1, 2]}", "data.train[0]"),
    ("optim: 3", "optim"),
])
def test_wrongly_typed_value_names_key_and_file(tmp_path, text, key):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert key in str(error.value) and str(path) in str(error.value)


def test_overrides_apply_dotted_keys_with_types(tmp_path):
    path = write(tmp_path, "optim: {lr: 0.1}\n")
    config = load_config(path, ["optim.lr=3e-4", "train.zero_stage=3", "data.train=cuts.jsonl.gz",
                                "model.ctc_head=true"])
    assert config.optim.lr == 3e-4
    assert config.train.zero_stage == 3
    assert config.data.train == ("cuts.jsonl.gz",)
    assert config.model.ctc_head is True


@pytest.mark.parametrize("override, fragment", [
    ("optim.lr=abc", "optim.lr"),
    ("optim.rl=1", "optim.rl"),
    ("optim.lr", "key=value"),
    ("optim.lr.x=1", "optim.lr is a value"),
])
def test_bad_override_is_named(tmp_path, override, fragment):
    path = write(tmp_path, "optim: {lr: 0.1}\n")
    with pytest.raises(ConfigError) as error:
        load_config(path, [override])
    assert fragment in str(error.value)


def test_model_preset_with_overrides(tmp_path):
    config = load_config(write(tmp_path, "model: {preset: base, n_text_layer: 2}\n"))
    assert config.model.n_audio_state == 512 and config.model.n_audio_layer == 6
    assert config.model.n_text_layer == 2
    assert load_config(None, ["model.preset=small"]).model.n_audio_layer == 12


def test_unknown_preset_lists_known_ones(tmp_path):
    with pytest.raises(ConfigError, match="unknown model preset 'huge'.*tiny"):
        load_config(write(tmp_path, "model: {preset: huge}\n"))


def test_preset_with_a_bad_key_names_the_preset_file(tmp_path):
    preset = write(tmp_path, "n_mel: 80\n", "mine.yaml")
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, f"model: {{preset: {preset}}}\n"))
    assert str(preset) in str(error.value) and "model.n_mel" in str(error.value)


def test_every_shipped_config_loads():
    for path in sorted(CONFIG_DIR.glob("model/*.yaml")):
        assert isinstance(model_preset(path.stem), ModelConfig)


def test_saved_config_reads_back_equal(tmp_path):
    config = load_config(None, ["model.preset=tiny", "optim.betas=[0.8,0.9]", "data.dev=[x.jsonl.gz]"])
    save_config(config, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == config


def test_unreadable_or_invalid_yaml_is_named(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "optim: {lr: [\n"))


def test_a_sections_own_value_check_names_the_file(tmp_path):
    path = write(tmp_path, "clean: {min_duration: 5.0, max_duration: 1.0}\n")
    with pytest.raises(ConfigError, match="min_duration <= max_duration") as error:
        load_config(path)
    assert str(path) in str(error.value) and "clean" in str(error.value)
