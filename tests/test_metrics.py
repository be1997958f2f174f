"""Metrics agree with scikit-learn and thresholds tune per class."""

import numpy as np
import pytest
from sklearn import metrics as skm

from workbench.metrics import classification_metrics, multilabel_metrics, tune_thresholds


def test_single_label_metrics():
    y = np.array([0, 0, 1, 1, 2, 2])
    proba = np.array(
        [[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8], [0.5, 0.2, 0.3]]
    )
    m = classification_metrics(y, proba, ["a", "b", "c"])
    pred = proba.argmax(1)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["weighted_f1"] == pytest.approx(skm.f1_score(y, pred, average="weighted"))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, proba, multi_class="ovr"))
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["per_class"]["b"]["recall"] == 1.0


def test_binary_auc_and_missing_class():
    m = classification_metrics([0, 1, 1, 0], np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.6, 0.4]]), ["n", "p"])
    assert m["roc_auc"] == 1.0
    assert classification_metrics([0, 0], np.array([[0.9, 0.1], [0.2, 0.8]]), ["n", "p"])["roc_auc"] is None


def test_multilabel_metrics():
    y = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    proba = np.array([[0.9, 0.2, 0.7], [0.1, 0.8, 0.4], [0.6, 0.3, 0.2], [0.2, 0.1, 0.9]])
    m = multilabel_metrics(y, proba, 0.5, ["x", "y", "z"])
    pred = (proba >= 0.5).astype(int)
    assert m["micro_f1"] == pytest.approx(skm.f1_score(y, pred, average="micro"))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["subset_accuracy"] == 0.75
    assert m["hamming_loss"] == pytest.approx(1 / 12)


def test_tuned_thresholds_fit_each_class():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(400, 2))
    proba = np.stack([0.3 * y[:, 0] + 0.1 * rng.random(400), 0.5 + 0.4 * y[:, 1] + 0.05 * rng.random(400)], 1)
    t = tune_thresholds(y, proba)
    assert 0.1 <= t[0] <= 0.3 and 0.55 <= t[1] <= 0.9
    assert multilabel_metrics(y, proba, t)["macro_f1"] == 1.0
