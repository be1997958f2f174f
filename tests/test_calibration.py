"""Calibration metrics and temperature scaling, on arrays with a known answer and on a tiny model."""

import numpy as np
import pytest

from workbench import TextClassificationModel, TextDataModule, Trainer, calibration
from workbench.calibration import (
    brier_score,
    calibrate_model,
    calibration_metrics,
    compare,
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
    accuracy = (
        model.predict_proba_features(dm.val_dataset).argmax(1)
        == np.array([f["labels"] for f in dm.val_dataset.features])
    ).mean()
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


def _softmax(logits):
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_compare_undoes_a_known_overconfidence():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(500, 4)) * 2
    y = np.array([rng.choice(4, p=p) for p in _softmax(logits)])  # labels drawn from softmax(logits)
    sharp = _softmax(logits * 3)  # a model 3x too confident
    c = compare(y, sharp, 3.0, n_bins=10)
    assert c.temperature == 3.0
    assert c.before == pytest.approx(calibration_metrics(y, sharp, n_bins=10))
    assert c.after == pytest.approx(calibration_metrics(y, _softmax(logits), n_bins=10), rel=1e-4)  # 1e-12 clipping
    assert c.after["ece"] < c.before["ece"] / 2 and c.after["nll"] < c.before["nll"]
    assert c.before_bins.equals(reliability_table(y, sharp, n_bins=10)) and len(c.after_bins) == 10
    assert c.table().loc["ece"].tolist() == [c.before["ece"], c.after["ece"]]
    assert list(c.table().columns) == ["before", "after"] and list(c.table().index) == ["ece", "brier", "nll"]


def test_compare_starts_from_temperature_one_for_an_already_calibrated_model():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(200, 3))
    y = rng.integers(0, 3, size=200)
    saved = _softmax(logits / 2.0)  # predicted by a model that already carries temperature 2
    c = compare(y, saved, 4.0, current_temperature=2.0)
    assert c.before == pytest.approx(calibration_metrics(y, _softmax(logits)))  # not the saved probabilities
    assert c.after == pytest.approx(calibration_metrics(y, _softmax(logits / 4.0)))  # scaled once, not twice
    multi = 1 / (1 + np.exp(-logits))
    labels = (rng.random((200, 3)) < multi).astype(int)
    c = compare(labels, 1 / (1 + np.exp(-logits / 2.0)), 0.5, current_temperature=2.0, multi_label=True)
    assert c.after == pytest.approx(calibration_metrics(labels, 1 / (1 + np.exp(-logits * 2)), multi_label=True))
    with pytest.raises(WorkbenchError, match="Temperatures must be positive"):
        compare(y, saved, 0.0)


def test_options_are_keyword_only():
    import inspect

    for name in (
        "reliability_table",
        "expected_calibration_error",
        "brier_score",
        "negative_log_likelihood",
        "fit_temperature",
        "calibration_metrics",
        "calibrate_model",
        "rescale",
        "compare",
    ):
        parameters = inspect.signature(getattr(calibration, name)).parameters.values()
        options = [p.name for p in parameters if p.name in ("n_bins", "multi_label", "max_iter", "current_temperature")]
        assert options and all(p.kind is p.KEYWORD_ONLY for p in parameters if p.name in options), name
    with pytest.raises(TypeError):
        expected_calibration_error(np.array([0, 1]), np.eye(2), 10, False)  # (n_bins, multi_label) by position
