"""Calibration metrics and temperature scaling, on arrays with a known answer and on a tiny model."""

import numpy as np
import pytest

from workbench import TextClassificationModel, TextDataModule, Trainer
from workbench.calibration import (
    brier_score,
    calibrate_model,
    expected_calibration_error,
    fit_temperature,
    reliability_table,
)
from workbench.errors import WorkbenchError


def test_ece_and_brier_on_known_cases():
    y = np.array([0, 1, 1, 0])
    perfect = np.eye(2)[y]
    assert expected_calibration_error(y, perfect) == 0.0 and brier_score(y, perfect) == 0.0
    overconfident = np.array([[0.9, 0.1], [0.1, 0.9], [0.9, 0.1], [0.1, 0.9]])  # 90% sure, right half the time
    assert expected_calibration_error(y, overconfident) == pytest.approx(0.4)
    assert brier_score(y, overconfident) == pytest.approx((0.02 + 0.02 + 1.62 + 1.62) / 4)
    table = reliability_table(y, overconfident, n_bins=10)
    assert table["count"].sum() == 4 and table.dropna()["accuracy"].tolist() == [0.5]
    multi = np.array([[0.8, 0.2], [0.8, 0.2]])
    assert expected_calibration_error(np.array([[1, 0], [0, 0]]), multi, multi_label=True) == pytest.approx(0.25)


def test_mismatched_arrays_are_explained():
    with pytest.raises(WorkbenchError, match=r"y_true has shape \(3,\) but proba is \(2, 2\)"):
        expected_calibration_error(np.array([0, 1, 1]), np.eye(2))


def test_temperature_recovers_a_known_scale():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(4000, 3)) * 2
    y = np.array([rng.choice(3, p=np.exp(row) / np.exp(row).sum()) for row in true_logits])
    assert fit_temperature(true_logits * 3, y) == pytest.approx(3.0, rel=0.1)  # logits 3x too sharp


def test_calibrate_model_keeps_accuracy_lowers_nll_and_is_saved(tiny_bert, sentiment_files, tmp_path):
    dm = TextDataModule(str(sentiment_files["train"]), str(sentiment_files["val"]), model_name=tiny_bert, batch_size=8)
    model = TextClassificationModel(tiny_bert, num_classes=2, freeze_embeddings=False)
    Trainer(max_epochs=6, lr=3e-3, checkpoint_dir=None).fit(model, dm)  # overfits: confident on everything
    accuracy = (model.predict_proba_features(dm.val_dataset).argmax(1) ==
                np.array([f["labels"] for f in dm.val_dataset.features])).mean()
    report = calibrate_model(model, dm.val_dataset)
    assert report["after"]["nll"] <= report["before"]["nll"] + 1e-9
    after = model.predict_proba_features(dm.val_dataset)
    assert (after.argmax(1) == np.array([f["labels"] for f in dm.val_dataset.features])).mean() == accuracy
    model.save_pretrained(tmp_path / "m")
    assert TextClassificationModel.from_pretrained(tmp_path / "m").temperature == pytest.approx(report["temperature"])


def test_rescale_matches_scaling_the_logits():
    from workbench.calibration import rescale

    logits = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3]])
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    expected = np.exp(logits / 2) / np.exp(logits / 2).sum(1, keepdims=True)
    assert np.allclose(rescale(proba, 2.0), expected)
    sig = 1 / (1 + np.exp(-logits))
    assert np.allclose(rescale(sig, 2.0, multi_label=True), 1 / (1 + np.exp(-logits / 2)))
