"""Cross-validation: stratified folds, one run per fold, out-of-fold probabilities and decisions, resume, rare
classes."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from workbench import TextClassificationModel, load_config
from workbench.cv import cross_validate, fold_assignments, load_cv
from workbench.errors import DataError, WorkbenchError
from workbench.metrics import labels_from_proba


def test_folds_are_stratified_and_rare_classes_are_named():
    labels = ["a"] * 30 + ["b"] * 15 + ["c"] * 5
    folds = fold_assignments(labels, 5)
    table = pd.crosstab(pd.Series(labels), folds)
    assert (table.loc["a"] == 6).all() and (table.loc["b"] == 3).all() and (table.loc["c"] == 1).all()
    with pytest.raises(DataError, match="class 'c' has 5. Use at most 5 folds"):
        fold_assignments(labels, 6)
    multi = [["x"], ["x", "y"], ["y"], ["z"], ["x", "z"], ["y", "z"]] * 5
    folds = fold_assignments(multi, 3, multi_label=True)
    assert np.bincount(folds).min() >= 8
    for label in "xyz":  # every label lands in every fold
        assert len({f for f, row in zip(folds, multi, strict=True) if label in row}) == 3


def test_cross_validation_trains_each_fold_and_resumes(tiny_bert, sentiment_files):
    config = load_config(
        overrides={
            "data.train_file": str(sentiment_files["train"]),
            "model.backbone": tiny_bert,
            "model.freeze_embeddings": False,
            "data.batch_size": 8,
            "train.epochs": 2,
            "train.lr": 2e-3,
            "run.name": "cv",
        }
    )
    lines = []
    result = cross_validate(config, n_folds=3, echo=lines.append)
    assert result.summary["n_folds"] == 3 and len(result.summary["folds"]) == 3
    assert set(result.summary["mean"]) >= {"accuracy", "macro_f1"} and result.summary["std"]["accuracy"] >= 0
    assert len(result.oof) == 64 and result.proba.shape == (64, 2)
    assert np.allclose(result.proba.sum(1), 1.0)  # every example got a prediction from the fold that held it out
    assert sorted(result.oof["fold"].value_counts()) == [21, 21, 22]
    assert (result.folder / "oof.parquet").exists() and json.loads((result.folder / "summary.json").read_text())

    loaded = load_cv(result.folder)
    assert np.allclose(loaded.proba, result.proba) and loaded.given_labels == list(result.oof["label"])
    assert loaded.confusion_matrix().sum() == 64
    with pytest.raises(WorkbenchError, match="not a finished cross-validation"):
        load_cv(result.folder / "nowhere")

    again = cross_validate(config, n_folds=3, echo=lines.append)
    assert sum("finished before" in line for line in lines) == 3  # resumed: nothing retrained
    assert np.allclose(again.proba, result.proba)


def test_each_fold_model_is_scored_on_the_test_file(tiny_bert, sentiment_files, tmp_path):
    # Every test text appears once with each label, so any single-label model scores exactly 0.5 on it.
    # The 64 examples fall into folds of 21, 21 and 22, where a validation accuracy of 0.5 cannot occur
    # on the first two: validation scores passed off as test scores would not give 0.5 everywhere.
    texts = sorted(set(pd.read_csv(sentiment_files["train"])["text"]))
    pd.DataFrame({"text": texts * 2, "label": ["pos"] * len(texts) + ["neg"] * len(texts)}).to_csv(
        tmp_path / "test.csv", index=False
    )
    config = load_config(
        overrides={
            "data.train_file": str(sentiment_files["train"]),
            "data.test_file": str(tmp_path / "test.csv"),
            "model.backbone": tiny_bert,
            "data.batch_size": 8,
            "train.epochs": 1,
            "run.name": "cv_test",
            "data.stream_from_mb": 0,
        }
    )  # every file read in pieces: the same folds and scores
    result = cross_validate(config, n_folds=3, echo=None)
    folds = result.summary["folds"]
    assert [row["test_accuracy"] for row in folds] == [0.5, 0.5, 0.5]
    for row in folds:
        saved = json.loads((Path(row["run_dir"]) / "metrics.json").read_text())
        assert saved["test"]["accuracy"] == 0.5 and row["test_macro_f1"] == saved["test"]["macro_f1"]
        assert row["accuracy"] == saved["validation"]["accuracy"]
    assert result.summary["mean"]["test_accuracy"] == 0.5 and result.summary["std"]["test_accuracy"] == 0.0
    assert result.summary["mean"]["test_macro_f1"] == pytest.approx(np.mean([row["test_macro_f1"] for row in folds]))
    assert len(result.oof) == 64  # the test rows are scored, never mixed into the out-of-fold predictions


def test_cross_validation_on_text_pairs(tiny_bert, sentiment_files, tmp_path):
    # The first text is one question for every row: only the second text tells the labels apart, so a
    # fold model that never saw the pair could not beat 0.5 (every fold is half positive).
    question = "is this review positive?"
    reviews = pd.read_csv(sentiment_files["train"]).rename(columns={"text": "review"})
    reviews.insert(0, "question", question)
    reviews.to_csv(tmp_path / "pairs.csv", index=False)
    label_of = dict(zip(reviews["review"], reviews["label"], strict=True))
    config = load_config(
        overrides={
            "data.train_file": str(tmp_path / "pairs.csv"),
            "data.text_column": "question",
            "data.text_pair_column": "review",
            "model.backbone": tiny_bert,
            "model.freeze_embeddings": False,
            "data.batch_size": 8,
            "train.epochs": 6,
            "train.lr": 3e-3,
            "run.name": "cv_pairs",
        }
    )
    result = cross_validate(config, n_folds=2, echo=None)

    folds = pd.read_parquet(result.folder / "folds.parquet")
    assert len(folds) == 64 and (folds["text"] == question).all()
    assert list(folds["label"]) == [label_of[pair] for pair in folds["text_pair"]]  # each pair kept with its label
    for row in result.summary["folds"]:
        model = TextClassificationModel.from_pretrained(row["run_dir"])
        assert model.processing.text_pair_column == "text_pair"  # the fold run encoded both texts
    assert [row["accuracy"] >= 0.9 for row in result.summary["folds"]] == [True, True]  # 1.0 on seeds 1-4 and 42
    for fold, rows in result.oof.groupby("fold"):  # the out-of-fold predictions, too, read the pair
        assert (rows["predicted"] == rows["label"]).mean() == result.summary["folds"][fold]["accuracy"]


@pytest.mark.usefixtures("data_folder")
def test_multi_label_cv_labels_each_example_with_its_fold_models_thresholds(tiny_bert):
    """Reuters (a 240-document subset): out-of-fold predictions use each fold model's tuned thresholds, not 0.5."""
    config = load_config(
        overrides={
            "data.dataset": "reuters",
            "data.train_subset": 240,
            "data.max_length": 48,
            "model.backbone": tiny_bert,
            "model.freeze_embeddings": False,
            "train.epochs": 1,
            "train.lr": 3e-3,
            "run.name": "reuters_cv",
        }
    )
    result = cross_validate(config, n_folds=3, echo=lambda line: None)
    names, proba, thresholds = result.label_names, result.proba, result.thresholds
    assert result.multi_label and thresholds.shape == proba.shape == (240, len(names))
    for fold, run_dir in enumerate(f["run_dir"] for f in result.summary["folds"]):
        model = TextClassificationModel.from_pretrained(run_dir)
        assert model.label_names == names  # every fold model knows every label, also one held out with its fold
        assert np.allclose(thresholds[(result.oof["fold"] == fold).to_numpy()], model.thresholds)
    predicted = ["|".join(p) for p in labels_from_proba(proba, names, multi_label=True, thresholds=thresholds)]
    assert list(result.oof["predicted"]) == predicted
    at_half = ["|".join(names[j] for j in np.flatnonzero(row >= 0.5)) for row in proba]
    assert predicted != at_half  # the old fixed-0.5 rule labels these examples differently
    assert (load_cv(result.folder).oof["predicted"] == result.oof["predicted"]).all()


def test_cross_validation_and_calibration_answer_per_windowed_text(tiny_bert, tmp_path):
    from conftest import long_text_files

    from workbench.evaluation import calibrate_run

    files = long_text_files(tmp_path)
    config = load_config(
        overrides={
            "data.train_file": str(files["train"]),
            "data.max_length": 16,
            "data.truncation": "windows",
            "data.stride": 4,
            "data.max_windows": 0,
            "model.backbone": tiny_bert,
            "model.freeze_embeddings": False,
            "data.batch_size": 8,
            "train.epochs": 6,
            "train.lr": 3e-3,
            "run.name": "cv_windows",
        }
    )
    result = cross_validate(config, n_folds=2, echo=None)
    assert len(result.oof) == 48 and result.proba.shape == (48, 2)  # one answer per text, not per window
    assert result.summary["mean"]["accuracy"] >= 0.8  # chance is 0.5: the label word sits in the last window only
    fold = Path(result.summary["folds"][0]["run_dir"])
    report = calibrate_run(fold, save=False)
    assert report["examples"] == 24 and report["temperature"] > 0
