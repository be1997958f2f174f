"""How far to trust a model's probabilities: ECE, Brier score, reliability bins and temperature scaling.

Temperature scaling (Guo et al., 2017) divides the logits by one scalar T > 0 fitted on validation data
to minimise the negative log-likelihood. It leaves the argmax (accuracy) unchanged and usually lowers the
expected calibration error (ECE). :func:`calibrate_model` fits T on a labelled dataset, stores it on the
model (``model.temperature``, saved by ``save_pretrained``) and reports the metrics before and after.

Example::

    report = calibrate_model(model, dm.val_dataset)     # fits T, sets model.temperature
    report["before"]["ece"], report["after"]["ece"], report["temperature"]

:func:`compare` scores any labelled split before and after a temperature (ECE / Brier / NLL and the
reliability bins that :func:`workbench.plots.reliability_figure` draws). Options such as ``n_bins`` and
``multi_label`` are keyword-only throughout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from workbench.errors import WorkbenchError
from workbench.store import EncodedExamples


def _validate_inputs(y_true: np.ndarray, proba: np.ndarray, *, multi_label: bool) -> None:
    if proba.ndim != 2:
        raise WorkbenchError(f"proba must be (N, K); got shape {proba.shape}.")
    expected = (len(proba),) if not multi_label else proba.shape
    if y_true.shape != expected:
        raise WorkbenchError(
            f"y_true has shape {y_true.shape} but proba is {proba.shape}: expected y_true "
            f"{'(N, K) multi-hot' if multi_label else '(N,) class ids'} for the same N examples."
        )


def _confidence_and_correct(
    y_true: np.ndarray, proba: np.ndarray, *, multi_label: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Multi-label: each (example, class) is a binary prediction; single-label: the top class."""
    if multi_label:
        return proba.ravel(), y_true.ravel().astype(float)
    return proba.max(1), (proba.argmax(1) == y_true).astype(float)


def reliability_table(y_true, proba, *, n_bins: int = 15, multi_label: bool = False) -> pd.DataFrame:
    """Equal-width confidence bins: ``bin_low``, ``bin_high``, ``count``, ``confidence`` (mean), ``accuracy``.

    For single-label models the confidence is the top class's probability and accuracy is whether the top
    class is right; for multi-label models every (example, class) probability is one binary forecast and
    "accuracy" is the frequency of the label being present.

    Args:
        y_true: ``(N,)`` class ids, or ``(N, K)`` multi-hot for multi-label.
        proba: ``(N, K)`` probabilities.
        n_bins: equal-width bins over [0, 1]; empty bins keep a row with NaN confidence and accuracy.

    Returns:
        One row per bin, ``n_bins`` rows.

    Example:
        >>> reliability_table([0, 1], [[0.9, 0.1], [0.1, 0.9]], n_bins=5)["count"].tolist()
        [0, 0, 0, 0, 2]
    """
    y_true, proba = np.asarray(y_true), np.asarray(proba, dtype=float)
    _validate_inputs(y_true, proba, multi_label=multi_label)
    confidence, correct = _confidence_and_correct(y_true, proba, multi_label=multi_label)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        mask = index == b
        rows.append(
            {
                "bin_low": edges[b],
                "bin_high": edges[b + 1],
                "count": int(mask.sum()),
                "confidence": float(confidence[mask].mean()) if mask.any() else np.nan,
                "accuracy": float(correct[mask].mean()) if mask.any() else np.nan,
            }
        )
    return pd.DataFrame(rows)


def expected_calibration_error(y_true, proba, *, n_bins: int = 15, multi_label: bool = False) -> float:
    """ECE: the count-weighted mean gap between confidence and accuracy over equal-width bins (0 = calibrated)."""
    table = reliability_table(y_true, proba, n_bins=n_bins, multi_label=multi_label).dropna()
    return float((table["count"] * (table["confidence"] - table["accuracy"]).abs()).sum() / table["count"].sum())


def brier_score(y_true, proba, *, multi_label: bool = False) -> float:
    """Mean squared error of the probabilities against the one-hot (or multi-hot) truth, summed over classes."""
    y_true, proba = np.asarray(y_true), np.asarray(proba, dtype=float)
    _validate_inputs(y_true, proba, multi_label=multi_label)
    target = y_true.astype(float) if multi_label else np.eye(proba.shape[1])[y_true]
    return float(((proba - target) ** 2).sum(1).mean())


def negative_log_likelihood(y_true, proba, *, multi_label: bool = False) -> float:
    """Mean negative log-probability of the true class (multi-label: binary cross-entropy summed over classes)."""
    y_true, proba = np.asarray(y_true), np.clip(np.asarray(proba, dtype=float), 1e-12, 1 - 1e-12)
    _validate_inputs(y_true, proba, multi_label=multi_label)
    if multi_label:
        return float(-(y_true * np.log(proba) + (1 - y_true) * np.log(1 - proba)).sum(1).mean())
    return float(-np.log(proba[np.arange(len(y_true)), y_true]).mean())


def fit_temperature(logits, y_true, *, multi_label: bool = False, max_iter: int = 200) -> float:
    """The temperature T > 0 that minimises the NLL of ``softmax(logits / T)`` (or sigmoid) on these labels.

    Args:
        logits: ``(N, K)`` raw model outputs on held-out data.
        y_true: ``(N,)`` class ids, or ``(N, K)`` multi-hot for multi-label.
    """
    logits = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    target = torch.as_tensor(np.asarray(y_true))
    if len(logits) == 0:
        raise WorkbenchError("fit_temperature needs at least one labelled example.")
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)  # T = exp(log_t) stays positive
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def loss():
        optimizer.zero_grad()
        scaled = logits / log_t.exp()
        if multi_label:
            value = torch.nn.functional.binary_cross_entropy_with_logits(scaled, target.to(scaled.dtype))
        else:
            value = torch.nn.functional.cross_entropy(scaled, target.long())
        value.backward()
        return value

    optimizer.step(loss)
    return float(log_t.exp().item())


def calibration_metrics(y_true, proba, *, n_bins: int = 15, multi_label: bool = False) -> dict:
    """``{"ece", "brier", "nll"}`` of these probabilities (see the three functions above)."""
    return {
        "ece": expected_calibration_error(y_true, proba, n_bins=n_bins, multi_label=multi_label),
        "brier": brier_score(y_true, proba, multi_label=multi_label),
        "nll": negative_log_likelihood(y_true, proba, multi_label=multi_label),
    }


def calibrate_model(model, dataset: EncodedExamples, *, n_bins: int = 15) -> dict:
    """Fit temperature scaling on a labelled encoded dataset, set ``model.temperature``, report before/after.

    Args:
        model: a :class:`workbench.TextClassificationModel`.
        dataset: a labelled dataset (:class:`~workbench.store.EncodedExamples`) the model was not trained on
            (validation).

    Returns:
        ``{"temperature": T, "before": {ece, brier, nll}, "after": {...}, "examples": N}``.
    """
    if len(dataset) == 0:
        raise WorkbenchError("calibrate_model needs a non-empty labelled dataset (the validation split).")
    y_true = dataset.labels
    logits = model.logits_of(dataset.features, lengths=dataset.lengths).numpy()
    previous = model.temperature
    model.temperature = 1.0
    before = calibration_metrics(y_true, model.proba_from_logits(logits), n_bins=n_bins, multi_label=model.multi_label)
    model.temperature = fit_temperature(logits, y_true, multi_label=model.multi_label)
    after = calibration_metrics(y_true, model.proba_from_logits(logits), n_bins=n_bins, multi_label=model.multi_label)
    return {
        "temperature": model.temperature,
        "previous_temperature": previous,
        "examples": len(y_true),
        "before": before,
        "after": after,
    }


def rescale(proba, temperature: float, *, multi_label: bool = False) -> np.ndarray:
    """Apply a temperature to probabilities that were computed at temperature 1 (same as scaling the logits)."""
    proba = np.clip(np.asarray(proba, dtype=float), 1e-12, 1 - 1e-12)
    if multi_label:
        logits = np.log(proba / (1 - proba)) / temperature
        return 1 / (1 + np.exp(-logits))
    scaled = np.log(proba) / temperature
    scaled -= scaled.max(1, keepdims=True)
    return np.exp(scaled) / np.exp(scaled).sum(1, keepdims=True)


@dataclass
class Comparison:
    """Calibration of one labelled split before and after temperature scaling (see :func:`compare`)."""

    temperature: float
    before: dict  # {"ece", "brier", "nll"} at temperature 1
    after: dict  # the same at ``temperature``
    before_bins: pd.DataFrame  # reliability_table rows at temperature 1
    after_bins: pd.DataFrame  # the same at ``temperature``

    def table(self) -> pd.DataFrame:
        """The metrics side by side: rows ``ece``, ``brier``, ``nll``; columns ``before``, ``after``."""
        return pd.DataFrame({"before": self.before, "after": self.after})


def compare(
    y_true, proba, temperature: float, *, current_temperature: float = 1.0, n_bins: int = 15, multi_label: bool = False
) -> Comparison:
    """Score a split's probabilities before and after temperature scaling, with the reliability bins of both.

    Args:
        y_true: ``(N,)`` class ids, or ``(N, K)`` multi-hot for multi-label.
        proba: ``(N, K)`` probabilities of a model on this split.
        temperature: the fitted temperature T (e.g. ``calibrate_model(...)["temperature"]``).
        current_temperature: the temperature ``proba`` was computed at: 1 for an uncalibrated model, the
            model's saved ``temperature`` otherwise. "Before" is always temperature 1, so a model that was
            calibrated earlier is not scaled twice.
        n_bins: equal-width confidence bins for the ECE and the reliability bins.

    Returns:
        A :class:`Comparison`; ``plots.reliability_figure(c.before_bins, c.before["ece"], c.after_bins,
        c.after["ece"])`` draws it and ``c.table()`` lists ECE / Brier / NLL before and after.

    Example::

        c = compare(evaluation.y_true, evaluation.proba, report["temperature"], multi_label=evaluation.multi_label)
        c.before["ece"], c.after["ece"]
    """
    if temperature <= 0 or current_temperature <= 0:
        raise WorkbenchError(
            f"Temperatures must be positive; got temperature={temperature}, current_temperature={current_temperature}."
        )
    proba = np.asarray(proba, dtype=float)
    before = proba if current_temperature == 1.0 else rescale(proba, 1.0 / current_temperature, multi_label=multi_label)
    after = rescale(before, temperature, multi_label=multi_label)
    options = {"n_bins": n_bins, "multi_label": multi_label}
    return Comparison(
        float(temperature),
        calibration_metrics(y_true, before, **options),
        calibration_metrics(y_true, after, **options),
        reliability_table(y_true, before, **options),
        reliability_table(y_true, after, **options),
    )
