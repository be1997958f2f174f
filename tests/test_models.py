"""The model: several architectures, pooling modes, heads, prediction, saving and loading."""

import json

import numpy as np
import pytest
import torch
from conftest import Payload

from workbench.backbones import resolve_backbone
from workbench.config import ModelConfig
from workbench.errors import ConfigError, DataError, ModelLoadError
from workbench.models import TextClassificationModel
from workbench.text import TextProcessing
from workbench.trainer import start_from


@pytest.mark.parametrize("kind", ["bert", "roberta", "distilbert", "deberta", "mpnet"])
@pytest.mark.parametrize("pooling", ["cls", "mean", "attention"])
def test_architectures_and_pooling(tiny_backbones, kind, pooling):
    model = TextClassificationModel(tiny_backbones[kind], num_classes=3, pooling=pooling, hidden_layers=[16])
    batch = model.tokenizer(["a short one", "a somewhat longer sentence here"], padding=True, return_tensors="pt")
    out = model(**batch, labels=torch.tensor([0, 2]))
    assert out["logits"].shape == (2, 3)
    out["loss"].backward()
    assert model.head[-1].weight.grad.abs().sum() > 0  # the loss reaches the head
    assert model.backbone.get_input_embeddings().weight.grad is None  # frozen by default
    assert not any(p.requires_grad for p in model.backbone.embeddings.parameters())


def test_mean_pooling_ignores_padding(tiny_bert):
    # mean pooling named here, not taken from the default: CLS pooling reads token 0 and passes whatever the mask does
    model = TextClassificationModel(tiny_bert, num_classes=2, pooling="mean").eval()
    alone = model.predict_proba("a short one")
    with_longer = model.predict_proba(["a short one", "a much longer sentence that forces padding of the first"])[0]
    np.testing.assert_allclose(alone, with_longer, atol=1e-5)


def test_predict_one_string_or_a_list(tiny_bert):
    model = TextClassificationModel(tiny_bert, labels=["neg", "pos"])
    texts = ["good", "bad", "a fine and long enough film"]
    proba = model.predict_proba(texts)
    assert proba.shape == (3, 2)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    assert model.predict(texts) == [["neg", "pos"][j] for j in proba.argmax(1)]  # the most probable label
    assert model.predict("good") == model.predict(["good"])[0]  # one string gives one label, not a list
    with pytest.raises(DataError, match="empty"):
        model.predict(["good", ""])


def test_multi_label_uses_per_class_thresholds(tiny_bert):
    model = TextClassificationModel(tiny_bert, labels=["a", "b", "c"], multi_label=True)
    model.thresholds = np.array([0.0, 1.1, 0.0], dtype=np.float32)  # a and c always, b never
    assert model.predict("anything") == ["a", "c"]


def test_save_and_load_round_trip(tiny_backbones, tmp_path):
    model = TextClassificationModel(
        tiny_backbones["roberta"],
        labels=["x", "y", "z"],
        pooling="attention",
        hidden_layers=[8],
        activation="relu",
        multi_label_threshold=0.3,
        processing=TextProcessing(max_length=64, truncation="tail"),
    ).eval()
    model.save_pretrained(tmp_path / "m")
    loaded = TextClassificationModel.load_from_checkpoint(tmp_path / "m")
    texts = ["first text", "second, longer text"]
    np.testing.assert_allclose(loaded.predict_proba(texts), model.predict_proba(texts), atol=1e-6)
    assert loaded.label_names == ["x", "y", "z"] and loaded.processing == model.processing
    assert loaded.model_config == model.model_config and loaded.model_config.multi_label_threshold == 0.3


# workbench_model.json as the code before ModelConfig and TextProcessing were kept whole wrote it (format 1): a
# trained model's (every processing field) and an untrained one's (no processing, default thresholds)
OLD_METADATA = [
    {
        "format": "workbench-text-classifier/1",
        "model_name": None,
        "labels": ["neg", "pos"],
        "multi_label": False,
        "pooling": "attention",
        "freeze_embeddings": False,
        "thresholds": [0.5, 0.5],
        "temperature": 1.5,
        "processing": {
            "text_pair_column": None,
            "max_length": 40,
            "truncation": "head+tail",
            "head_fraction": 0.25,
            "clean_html": True,
            "mask_urls": False,
            "mask_emails": False,
            "lowercase": False,
        },
        "dropout": 0.1,
        "hidden_layers": [8],
        "activation": "relu",
    },
    {
        "format": "workbench-text-classifier/1",
        "model_name": None,
        "labels": ["a", "b", "c"],
        "multi_label": True,
        "pooling": "cls",
        "freeze_embeddings": True,
        "thresholds": [0.3, 0.4, 0.6],
        "temperature": 1.0,
        "processing": {},
        "dropout": 0.2,
        "hidden_layers": [],
        "activation": "gelu",
    },
]


@pytest.mark.parametrize("old", OLD_METADATA, ids=["trained", "untrained"])
def test_folders_saved_in_the_earlier_layout_still_load(tiny_bert, tmp_path, old):
    old = {**old, "model_name": tiny_bert}
    model = TextClassificationModel(
        tiny_bert,
        labels=old["labels"],
        multi_label=old["multi_label"],
        pooling=old["pooling"],
        freeze_embeddings=old["freeze_embeddings"],
        dropout=old["dropout"],
        hidden_layers=old["hidden_layers"],
        activation=old["activation"],
        processing=TextProcessing(**old["processing"]),
    )
    model.thresholds, model.temperature = np.asarray(old["thresholds"], dtype=np.float32), old["temperature"]
    folder = model.save_pretrained(tmp_path / "m")
    assert set(json.loads((folder / "workbench_model.json").read_text())) >= set(old)  # the layout only grew
    (folder / "workbench_model.json").write_text(json.dumps(old))
    loaded = TextClassificationModel.from_pretrained(folder)
    assert loaded.model_config == model.model_config  # fields the old file lacks take ModelConfig's defaults
    assert loaded.processing == model.processing  # an untrained model's {} is DataConfig's defaults
    assert loaded.thresholds.tolist() == pytest.approx(old["thresholds"]) and loaded.temperature == old["temperature"]
    texts = ["a good film", "a much longer text about something else " * 8]
    np.testing.assert_allclose(loaded.predict_proba(texts), model.eval().predict_proba(texts), atol=1e-6)
    for entry in ("pooling", "activation"):  # what shapes the network may not fall back to a default
        (folder / "workbench_model.json").write_text(json.dumps({k: v for k, v in old.items() if k != entry}))
        with pytest.raises(ModelLoadError, match=f"lacks or garbles the entry '{entry}'"):
            TextClassificationModel.from_pretrained(folder)


def test_the_model_keeps_its_config_and_takes_the_data_through_use_data(tiny_bert, tokenizer):
    given = ModelConfig(backbone=tiny_bert, pooling="cls", hidden_layers=(8,))
    model = TextClassificationModel(given, num_classes=2, dropout=0.2)
    assert model.model_config == ModelConfig(backbone=tiny_bert, pooling="cls", hidden_layers=[8], dropout=0.2)
    assert given.dropout == 0.1  # the keywords change the model's own copy, not the config it was given
    assert model.head[0].p == 0.2 and model.processing == TextProcessing()
    assert TextClassificationModel(tiny_bert, num_classes=2, pooling="cls").model_config == ModelConfig(
        backbone=tiny_bert, pooling="cls"
    )
    with pytest.raises(TypeError, match="poolng"):
        TextClassificationModel(tiny_bert, num_classes=2, poolng="cls")

    model.use_data(["neg", "pos"], tokenizer, TextProcessing(max_length=16, lowercase=True))
    assert model.label_names == ["neg", "pos"] and model.tokenizer is tokenizer
    assert model.processor().config.max_length == 16 and model.processor().clean("LOUD") == "loud"
    model.use_data(processing=TextProcessing(max_length=24))  # what is not given stays
    assert model.label_names == ["neg", "pos"] and model.processing == TextProcessing(max_length=24)
    with pytest.raises(ConfigError, match="The model has 2 classes but 3 labels were given"):
        model.use_data(["a", "b", "c"])


def test_a_registered_model_is_resolved_by_the_caller():
    with pytest.raises(ModelLoadError, match=r"models:/trec@champion is not a saved model folder.*resolve_model_path"):
        TextClassificationModel.from_pretrained("models:/trec@champion")


def test_corrupt_checkpoints_give_clear_errors(tiny_bert, tmp_path):
    model = TextClassificationModel(tiny_bert, num_classes=2)
    folder = model.save_pretrained(tmp_path / "m")
    weights = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(ModelLoadError, match="model.safetensors is corrupt or truncated"):
        TextClassificationModel.from_pretrained(folder)
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "workbench_model.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="corrupt"):
        TextClassificationModel.from_pretrained(folder)
    (folder / "workbench_model.json").unlink()
    with pytest.raises(ModelLoadError, match="lacks workbench_model.json"):
        TextClassificationModel.from_pretrained(folder)
    with pytest.raises(ModelLoadError, match="is not a saved model folder"):
        TextClassificationModel.from_pretrained(tmp_path / "nowhere")


def test_weights_from_another_architecture_are_rejected(tiny_bert, tmp_path):
    a = TextClassificationModel(tiny_bert, num_classes=2)
    b = TextClassificationModel(tiny_bert, num_classes=2, hidden_layers=[8]).eval()
    a.save_pretrained(tmp_path / "a")
    b.save_pretrained(tmp_path / "b")
    # b's own folder loads: a head with hidden_layers=[8] is not what gets rejected below
    np.testing.assert_allclose(
        TextClassificationModel.from_pretrained(tmp_path / "b").predict_proba(["some text"]),
        b.predict_proba(["some text"]),
        atol=1e-6,
    )
    # b's metadata beside a's weights: the folder describes one architecture and holds another's weights
    (tmp_path / "a" / "workbench_model.json").write_text((tmp_path / "b" / "workbench_model.json").read_text())
    with pytest.raises(ModelLoadError, match="does not match the saved architecture"):
        TextClassificationModel.from_pretrained(tmp_path / "a")


def test_hub_name_offline_says_what_to_do():
    with pytest.raises(ModelLoadError, match="offline.*local path.*'minilm'"):
        TextClassificationModel("bert-base-uncased", num_classes=4)


def test_minilm_alias_is_the_packaged_model():
    path = resolve_backbone("minilm")
    config = json.loads(open(f"{path}/config.json").read())
    assert config["hidden_size"] == 384 and config["num_hidden_layers"] == 6


def test_bad_arguments():
    with pytest.raises(ModelLoadError, match="num_classes"):
        TextClassificationModel("minilm")
    with pytest.raises(ModelLoadError, match="pooling"):
        TextClassificationModel("minilm", num_classes=2, pooling="max")


def test_fast_cpu_dropout_matches_dropout_semantics():
    from workbench.models import CPUFastDropout

    drop = CPUFastDropout(0.1)
    x = torch.ones(200, 500)
    torch.manual_seed(0)
    y = drop(x)
    kept = y != 0
    assert abs(1 - kept.float().mean().item() - 0.1) < 0.005  # drops 10% of elements
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.9))  # survivors scaled by 1/(1-p)
    torch.manual_seed(0)
    assert torch.equal(drop(x), y)  # the default generator drives it, so seeds reproduce it
    assert torch.equal(drop.eval()(x), x)


def test_backbone_dropouts_are_swapped(tiny_bert):
    from workbench.models import CPUFastDropout

    model = TextClassificationModel(tiny_bert, num_classes=2)
    kinds = {type(m) for m in model.modules() if isinstance(m, torch.nn.Dropout)}
    assert kinds == {CPUFastDropout}


def test_pickle_weights_are_refused_and_never_unpickled(tiny_bert, tmp_path):
    import shutil

    from workbench.backbones import load_backbone

    marker = tmp_path / "the-pickle-ran"
    folder = tmp_path / "pickled-backbone"
    shutil.copytree(tiny_bert, folder)
    (folder / "model.safetensors").unlink()
    torch.save({"embeddings.word_embeddings.weight": Payload(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match=r"only in pytorch_model.bin, a pickle file.*safetensors only"):
        load_backbone(str(folder))
    with pytest.raises(ModelLoadError, match="a pickle file"):
        TextClassificationModel(str(folder), num_classes=2)
    saved = TextClassificationModel(tiny_bert, num_classes=2).save_pretrained(tmp_path / "model")
    (saved / "model.safetensors").unlink()
    torch.save({"head.weight": Payload(marker)}, saved / "model.pt")
    with pytest.raises(ModelLoadError, match=r"model's weights only in model.pt, a pickle file"):
        TextClassificationModel.from_pretrained(saved)
    assert not marker.exists()


CUSTOM_CODE = """
from pathlib import Path
from transformers import BertConfig, BertModel

Path(MARKER).write_text("ran")  # what running the model's own code would do first


class CustomConfig(BertConfig):
    model_type = "custom-bert"


class CustomModel(BertModel):
    config_class = CustomConfig
"""


def test_code_shipped_with_a_backbone_runs_only_when_named(tiny_bert, tmp_path):
    import shutil

    from workbench.backbones import load_backbone

    folder, marker = tmp_path / "custom", tmp_path / "the-code-ran"
    shutil.copytree(tiny_bert, folder)
    (folder / "custom.py").write_text(CUSTOM_CODE.replace("MARKER", repr(str(marker))))
    config = json.loads((folder / "config.json").read_text())
    config.update(
        {
            "model_type": "custom-bert",
            "architectures": ["CustomModel"],
            "auto_map": {"AutoConfig": "custom.CustomConfig", "AutoModel": "custom.CustomModel"},
        }
    )
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"runs its own Python code.*model.trust_remote_code"):
        load_backbone(str(folder))
    assert not marker.exists()
    backbone = load_backbone(str(folder), trust_remote_code=[str(folder)])
    assert type(backbone).__name__ == "CustomModel" and marker.exists()


def test_attention_window_pooling_starts_as_the_mean_and_its_scorer_is_saved(tiny_bert, tmp_path):
    windows = {"max_length": 16, "truncation": "windows", "stride": 4}
    texts = [" ".join(["the plot was long and"] * n) + " great" for n in (1, 3, 6)]

    def build(pooling: str) -> TextClassificationModel:
        processing = TextProcessing(**windows, window_pooling=pooling)
        return TextClassificationModel(tiny_bert, labels=["neg", "pos"], processing=processing, seed=3)

    mean, attention = build("mean"), build("attention")
    assert mean.window_attention is None and not attention.window_attention.weight.requires_grad  # not trained
    features = attention.processor().encode(texts)
    assert [len(f["windows"]) for f in features] == [1, 2, 3]
    torch.testing.assert_close(attention.logits_of(features), mean.logits_of(features))  # a zero scorer: the mean
    with pytest.raises(ConfigError, match="does not pool windows by attention"):
        mean.fit_window_attention(features)
    with torch.no_grad():
        attention.window_attention.weight.normal_()
    logits, scores = attention.window_outputs(features)[-1]
    weights = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
    np.testing.assert_allclose(attention.logits_of(features)[-1].numpy(), weights @ logits, rtol=1e-5, atol=1e-6)
    loaded = TextClassificationModel.from_pretrained(attention.save_pretrained(tmp_path / "saved"))
    torch.testing.assert_close(loaded.logits_of(features), attention.logits_of(features))
    plain = TextClassificationModel(tiny_bert, labels=["neg", "pos"], seed=4)  # as train() builds it (init_from)
    start_from(plain, tmp_path / "saved")  # the scorer is left behind: the new run fits its own
    torch.testing.assert_close(plain.head[-1].weight, attention.head[-1].weight)
    attention.use_data(processing=TextProcessing(**windows, window_pooling="max"))  # another pooling: no scorer
    assert attention.window_attention is None
