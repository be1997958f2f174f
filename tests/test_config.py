"""The typed config tree: defaults, experiment files, dotted overrides and clear errors."""

from pathlib import Path

import pytest
import yaml

from workbench.config import (
    NOTEBOOK_PARAMETERS,
    Config,
    ParityConfig,
    config_from_dict,
    config_from_parameters,
    load_config,
    parse_overrides,
)
from workbench.errors import ConfigError


def test_defaults_are_valid_and_typed():
    cfg = load_config()
    assert cfg.model.backbone == "minilm"
    assert cfg.data.truncation == "head"
    assert isinstance(cfg.train.lr, float)


def test_experiment_file_then_overrides(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("data:\n  dataset: trec\ntrain:\n  lr: 1.0e-4\n  epochs: 2\n")
    cfg = load_config(
        path, ["train.lr=3e-5", "model.hidden_layers=[64,32]", "data.train_subset=100", "model.freeze_embeddings=false"]
    )
    assert cfg.data.dataset == "trec"
    assert cfg.train.epochs == 2.0
    assert cfg.train.lr == 3e-5  # the override wins over the file
    assert cfg.model.hidden_layers == [64, 32]
    assert cfg.data.train_subset == 100 and isinstance(cfg.data.train_subset, int)
    assert cfg.model.freeze_embeddings is False


@pytest.mark.parametrize(
    "override, message",
    [
        (["train.lrr=1e-4"], "Unknown config key 'train.lrr'"),
        (["trian.lr=1e-4"], "Unknown config key 'trian'"),
        (["data.max_length=long"], "data.max_length='long' must be a number"),
        (["train.optimizer=sgd"], "train.optimizer='sgd' is not one of adamw, adafactor, lamb"),
        (["data.val_fraction=1.5"], "data.val_fraction=1.5 must be between 0 and 1"),
        (["data.max_tokens=16"], "data.max_tokens=16 must be at least data.max_length"),
        (["train.lr"], "needs the form section.key=value"),
        (["train=3"], "'train' is a section"),
        (["model.hidden_layers=[256,128"], "is not valid YAML"),
        (["data.label_delimiter=''"], "data.label_delimiter must not be empty"),
        (["train.lr="], "train.lr needs a value"),
        (["train.log_every=0"], "train.log_every=0 must be at least 1"),
        (["train.device=gpu"], "train.device='gpu' is not one of auto, cpu, cuda"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        load_config(overrides=override)


def test_unknown_key_in_file_names_file_and_key(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("model:\n  pooler: cls\n")
    with pytest.raises(ConfigError, match=r"exp.yaml: Unknown config key 'model.pooler'.*pooling"):
        load_config(path)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(overrides=["train.lr=2e-5", "data.dataset=sst2", "train.class_weights=[1, 2]"])
    cfg.save(tmp_path / "config.yaml")
    again = config_from_dict(yaml.safe_load((tmp_path / "config.yaml").read_text()))
    assert again == cfg


def test_parse_overrides_nests_and_parses_yaml_scalars():
    assert parse_overrides(["a.b=1", "a.c=true", "d.e=[1, 2]"]) == {"a": {"b": 1, "c": True}, "d": {"e": [1, 2]}}


def _dotted(sections: dict) -> dict:
    """``{section: {key: value}}`` as ``{"section.key": value}`` (a value may itself be a mapping, e.g. tune.space)."""
    return {f"{section}.{key}": value for section, values in sections.items() for key, value in values.items()}


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")), ids=lambda p: p.name
)
def test_repository_configs_differ_from_the_defaults_exactly_as_written(path):
    written = _dotted(yaml.safe_load(path.read_text()))
    cfg = load_config(path)
    resolved = _dotted(cfg.to_dict())
    assert written and {key: resolved[key] for key in written} == written  # every value in the file is applied
    assert set(cfg.changes()) <= set(written)  # and nothing else moved from its default


def test_config_from_parameters_matches_the_dotted_overrides(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("data:\n  dataset: trec\n  test_split: test\n  max_length: 96\ntrain:\n  lr: 1.0e-4\n")
    parameters = {
        "dataset": None,
        "train_file": "train.csv",
        "test_split": None,
        "model": "tiny",
        "pooling": "cls",
        "epochs": 2,
        "train_subset": None,
        "run_name": "nb",
        "run_root": "out",
    }
    cfg = config_from_parameters(path, **parameters)
    assert cfg == load_config(
        path,
        {
            "data.dataset": None,
            "data.train_file": "train.csv",
            "data.test_split": None,
            "model.backbone": "tiny",
            "model.pooling": "cls",
            "train.epochs": 2,
            "data.train_subset": None,
            "run.name": "nb",
            "run.root": "out",
        },
    )
    assert cfg.data.test_split is None and cfg.data.dataset is None  # None clears what the file set, as before
    assert cfg.data.max_length == 96 and cfg.train.lr == 1e-4  # keys not given keep the file's values
    assert config_from_parameters() == Config()
    with pytest.raises(ConfigError, match="model.backbone needs a value"):
        config_from_parameters(model=None)


def test_config_from_parameters_rejects_unknown_names():
    with pytest.raises(ConfigError, match=r"Unknown notebook parameter\(s\) 'learning_rate'. Valid names: .*\blr\b"):
        config_from_parameters(learning_rate=1e-4, lr=1e-4)


def test_every_config_key_is_a_notebook_parameter():
    keys = set(_dotted(Config().to_dict()))
    assert set(NOTEBOOK_PARAMETERS.values()) == keys  # a field name in two sections would hide one of them
    assert all(NOTEBOOK_PARAMETERS[key.split(".")[1]] == key for key in keys)
    assert NOTEBOOK_PARAMETERS["model"] == "model.backbone" and NOTEBOOK_PARAMETERS["run_root"] == "run.root"


def test_updated_is_a_validated_copy():
    base = load_config(overrides=["train.lr=1e-4"])
    changed = base.updated({"train.lr": 3e-5, "data.batch_size": 16, "run.name": "trial_3"})
    assert (changed.train.lr, changed.data.batch_size, changed.run.name) == (3e-5, 16, "trial_3")
    assert (base.train.lr, base.data.batch_size, base.run.name) == (1e-4, 32, "default")  # the original is untouched
    with pytest.raises(ConfigError, match="Unknown config key 'train.lrr'"):
        base.updated({"train.lrr": 1})
    with pytest.raises(ConfigError, match="data.max_tokens=8192 must be at least data.max_length=10000"):
        base.updated(["data.max_length=10000"])


@pytest.mark.parametrize("field", ["margin", "min_agreement", "max_accuracy_drop", "accuracy_alpha"])
def test_parity_limits_are_shares(field):
    assert ParityConfig.__dataclass_fields__[field].metadata["help"]  # each says what it bounds
    assert getattr(ParityConfig(**{field: 0.0}), field) == 0.0 and getattr(ParityConfig(**{field: 1.0}), field) == 1.0
    for bad in (-0.01, 1.5):
        with pytest.raises(ConfigError, match=rf"parity.{field}={bad} must be in \[0, 1\]"):
            ParityConfig(**{field: bad})
