"""Cross-validation: stratified folds, one run per fold, out-of-fold probabilities, resume, rare classes."""

import json

import numpy as np
import pandas as pd
import pytest

from workbench import load_config
from workbench.cv import cross_validate, fold_assignments, load_cv
from workbench.errors import DataError


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
        assert len({f for f, row in zip(folds, multi) if label in row}) == 3


def test_cross_validation_trains_each_fold_and_resumes(tiny_bert, sentiment_files):
    config = load_config(overrides={"data.train_file": str(sentiment_files["train"]), "model.backbone": tiny_bert,
                                    "model.freeze_embeddings": False, "data.batch_size": 8, "train.epochs": 2,
                                    "train.lr": 2e-3, "run.name": "cv"})
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
    with pytest.raises(Exception, match="not a finished cross-validation"):
        load_cv(result.folder / "nowhere")

    again = cross_validate(config, n_folds=3, echo=lines.append)
    assert sum("finished before" in line for line in lines) == 3  # resumed: nothing retrained
    assert np.allclose(again.proba, result.proba)
