"""SetFit few-shot and zero-shot runs (workbench.fewshot, data.shots) on a tiny random sentence encoder."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from workbench import load_config, train
from workbench.cli import main
from workbench.config import ModelConfig, SetFitConfig
from workbench.data import TextDataModule
from workbench.export import export_model
from workbench.fewshot import templated_examples, to_workbench_model, zero_shot_model
from workbench.models import TextClassificationModel
from workbench.runtime import load_export
from workbench.text import TextProcessing

TOPICS = {
    "sport": ["football", "tennis", "match", "goal", "league"],
    "money": ["bank", "stocks", "price", "market", "profit"],
    "food": ["bread", "cheese", "soup", "apple", "dinner"],
}
FILLER = ["the", "a", "of", "and", "today", "news", "about", "new", "this", "was"]


def topic_rows(n_per_class: int, seed: int) -> pd.DataFrame:
    """Texts of filler words around two words of their topic: the topic words decide the label."""
    rng = np.random.default_rng(seed)
    rows = []
    for label, words in TOPICS.items():
        for _ in range(n_per_class):
            text = [*rng.choice(FILLER, 4), *rng.choice(words, 2), *rng.choice(FILLER, 2)]
            rows.append((" ".join(text), label))
    return pd.DataFrame(rows, columns=["text", "label"]).sample(frac=1, random_state=seed)


@pytest.fixture
def topic_files(tmp_path):
    topic_rows(20, 0).to_csv(tmp_path / "train.csv", index=False)
    topic_rows(15, 1).to_csv(tmp_path / "val.csv", index=False)
    return {"train": str(tmp_path / "train.csv"), "val": str(tmp_path / "val.csv")}


def setfit_config(files, backbone, tmp_path, **overrides):
    return load_config(
        None,
        {
            "data.train_file": files["train"],
            "data.val_file": files["val"],
            "data.max_length": 16,
            "model.backbone": backbone,
            "train.method": "setfit",
            "setfit.iterations": 20,
            "setfit.body_lr": 3e-3,
            "setfit.pair_batch_size": 8,
            "run.root": str(tmp_path / "runs"),
            "run.name": "fewshot",
            **overrides,
        },
    )


def test_setfit_learns_from_four_examples_per_class_and_records_them(topic_files, tiny_bert, tmp_path):
    result = train(setfit_config(topic_files, tiny_bert, tmp_path, **{"data.shots": 4}))
    assert result.metrics["validation"]["accuracy"] >= 0.9, result.metrics["validation"]
    assert result.metrics["train"]["examples"] == 12 and result.metrics["train"]["optimizer_steps"] > 0
    rows = json.loads((result.run_dir / "training_rows.json").read_text())
    assert (
        rows["shots"] == 4
        and sorted(rows["rows"]) == sorted(TOPICS)
        and all(len(r) == 4 for r in rows["rows"].values())
    )
    # an ordinary run: best/ loads and predicts as the trained model does
    loaded = TextClassificationModel.from_pretrained(result.run_dir)
    texts = topic_rows(3, 5)["text"].tolist()
    np.testing.assert_allclose(loaded.predict_proba(texts), result.model.predict_proba(texts), atol=1e-5)
    assert loaded.model_config.head_norm == "none"  # the tiny encoder is a plain encoder: mean pooling, no Normalize
    # the contrastive training is what learned: the same head on the untrained encoder does far worse (0.62)
    frozen = train(setfit_config(topic_files, tiny_bert, tmp_path, **{"data.shots": 4, "setfit.body_epochs": 0}))
    assert frozen.metrics["validation"]["accuracy"] < result.metrics["validation"]["accuracy"] - 0.15


def test_shots_pick_the_same_examples_for_the_same_seed(topic_files):
    def sample(seed):
        dm = TextDataModule(
            config=None, train_file=topic_files["train"], val_file=topic_files["val"], seed=seed, shots=3
        )
        dm.setup()
        return dm.training_rows["rows"], list(dm.train_dataset.texts)

    first, texts = sample(1)
    assert sample(1) == (first, texts)
    assert sample(2)[0] != first
    assert all(len(rows) == 3 for rows in first.values()) and len(texts) == 9


def test_setfit_head_becomes_the_same_linear_layer(tiny_bert):
    """to_workbench_model computes what SetFit computes: logistic regression (binary and multi-class) and the
    differentiable head, on a plain encoder and on one that normalises (a Normalize module)."""
    from sentence_transformers.models import Normalize
    from setfit import SetFitModel

    frame = topic_rows(6, 3)
    texts = frame["text"].tolist()
    for labels in (sorted(TOPICS), ["money", "sport"]):
        rows = frame[frame["label"].isin(labels)]
        ids = [labels.index(label) for label in rows["label"]]
        for differentiable in (False, True):
            torch.manual_seed(0)
            params = {"out_features": len(labels)} if differentiable else {}
            model = SetFitModel.from_pretrained(tiny_bert, use_differentiable_head=differentiable, head_params=params)
            if differentiable:
                model.model_body.append(Normalize())
            model.model_body.max_seq_length = 16
            model.fit(
                rows["text"].tolist(),
                ids,
                num_epochs=2,
                batch_size=8,
                body_learning_rate=1e-5,
                head_learning_rate=1e-2,
                show_progress_bar=False,
            )
            ours = to_workbench_model(
                model, labels, ModelConfig(backbone=tiny_bert), TextProcessing(max_length=16), None, seed=0
            )
            expected = model.predict_proba(texts, as_numpy=True)
            np.testing.assert_allclose(ours.predict_proba(texts), expected, atol=1e-5)
            assert ours.model_config.head_norm == ("l2" if differentiable else "none")


def test_zero_shot_gives_a_model_without_labels(tiny_bert, tmp_path, topic_files):
    config = setfit_config(topic_files, tiny_bert, tmp_path)
    descriptions = {"sport": "football and tennis", "money": "bank and stocks"}
    model = zero_shot_model(descriptions, config, workdir=tmp_path / "scratch")
    assert model.label_names == ["sport", "money"]
    texts, _ = templated_examples(model.label_names, descriptions, config.setfit.template, 1)
    assert model.predict(texts) == ["sport", "money"]
    # as a run: the training split's labels, none of its texts
    run = train(setfit_config(topic_files, tiny_bert, tmp_path, **{"setfit.zero_shot": True}))
    assert run.metrics["train"]["original_examples"] == 0 and run.metrics["train"]["templated_examples"] == 24
    assert (run.run_dir / "best").is_dir() and "accuracy" in run.metrics["validation"]


def test_exported_setfit_model_gives_the_same_probabilities(topic_files, tiny_bert, tmp_path):
    config = setfit_config(topic_files, tiny_bert, tmp_path, **{"data.shots": 4, "setfit.head": "differentiable"})
    run = train(config)
    export_model(run.run_dir, tmp_path / "onnx", engine="onnx", echo=None)
    texts = topic_rows(5, 9)["text"].tolist()
    exported = load_export(tmp_path / "onnx").predict_proba(texts)
    np.testing.assert_allclose(exported, run.model.predict_proba(texts), atol=1e-4)


def test_setfit_config_defaults():
    assert SetFitConfig().templates_per_label == 0 and SetFitConfig(zero_shot=True).templates_per_label == 8


@pytest.mark.parametrize(
    "case", ["too_many_shots", "no_shots", "negative_shots", "multi_label", "descriptions", "windows"]
)
def test_bad_input_is_one_line_and_exit_2(case, topic_files, multilabel_file, tiny_bert, tmp_path, capsys):
    data = [f"data.train_file={topic_files['train']}", f"data.val_file={topic_files['val']}"]
    argv, expected = {
        "too_many_shots": ([*data, "data.shots=50"], "data.shots=50: class 'food'"),
        "no_shots": ([*data, "data.shots=0"], "data.shots=0 must be a positive count"),
        "negative_shots": ([*data, "data.shots=-2"], "data.shots=-2 must be a positive count"),
        "multi_label": (
            [f"data.train_file={multilabel_file}", "data.multi_label=true", "data.label_column=labels"],
            "multi-label",
        ),
        "descriptions": ([*data, "data.label_descriptions={sport: games, weather: rain}"], "weather"),
        "windows": ([*data, "data.truncation=windows", "data.stride=4"], "set data.truncation=head"),
    }[case]
    code = main(["train", *argv, f"model.backbone={tiny_bert}", "train.method=setfit", "run.name=bad"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("workbench train: error:") and expected in err, err
    assert len(err.splitlines()) == 1, err
    assert not (tmp_path / "runs" / "bad").exists()  # no run folder left half-made


def test_cv_tune_calibration_and_explanations_take_setfit_runs(topic_files, tiny_bert, tmp_path):
    """data.shots and train.method=setfit are one key each for cross-validation and a study; a SetFit run
    calibrates and explains as any run does."""
    from workbench.cv import cross_validate
    from workbench.evaluation import calibrate_run
    from workbench.explain import token_attributions
    from workbench.tune import tune

    base = {"data.shots": 3, "setfit.iterations": 5}
    folds = cross_validate(setfit_config(topic_files, tiny_bert, tmp_path, **base, **{"run.name": "cv"}), n_folds=2)
    assert len(folds.summary["folds"]) == 2 and len(list(folds.folder.glob("fold_*/version_0/training_rows.json"))) == 2
    for drawn_file in sorted(folds.folder.glob("fold_*/version_0/training_rows.json")):  # each fold's own sample
        drawn = json.loads(drawn_file.read_text())["rows"]
        assert all(len(rows) == 3 for rows in drawn.values())
    space = {"setfit.body_lr": {"log_uniform": [1e-4, 3e-3]}}
    study = tune(setfit_config(topic_files, tiny_bert, tmp_path, **base, **{"tune.space": space, "tune.trials": 2}))
    table = study.trials_table()
    assert (table["state"] == "COMPLETE").all() and table["value"].between(0, 1).all()
    run = train(setfit_config(topic_files, tiny_bert, tmp_path, **base))
    assert "temperature" in calibrate_run(run.run_dir)
    (explained,) = token_attributions(run.model, "the football match today", n_steps=4)
    assert len(explained.tokens) == len(explained.scores) > 0 and explained.target in TOPICS
