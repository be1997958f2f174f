"""Classification metrics (computed with scikit-learn), their names, and the rule that turns probabilities
into labels.

Single-label: accuracy, precision/recall/F1 (macro, micro, weighted), a per-class report, the confusion
matrix and ROC-AUC. Multi-label: micro and macro F1, subset accuracy and Hamming loss, plus per-class
decision thresholds tuned for F1 on validation data. Arrays in, numbers out: scoring a model is
:mod:`workbench.evaluation`. :func:`predict_from_proba` is the one decision rule used everywhere (training,
evaluation, prediction, cross-validation and error analysis)::

    classification_metrics(y_true, proba, ["neg", "pos"])["accuracy"]
    labels_from_proba(proba, ["neg", "pos"])          # ['pos', 'neg', ...]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn import metrics as skm

from workbench.errors import WorkbenchError

# The scalar keys each kind of classifier's metrics carry (what a checkpoint can be monitored by) ...
SINGLE_LABEL_METRICS = (
    "accuracy",
    "macro_f1",
    "micro_f1",
    "weighted_f1",
    "macro_precision",
    "macro_recall",
    "weighted_precision",
    "weighted_recall",
    "roc_auc",
)
MULTI_LABEL_METRICS = (
    "micro_f1",
    "macro_f1",
    "micro_precision",
    "micro_recall",
    "macro_precision",
    "macro_recall",
    "subset_accuracy",
    "hamming_loss",
    "roc_auc_micro",
)
# ... and the headline ones that summaries, leaderboards and cross-validation show (those a run has).
SUMMARY_METRICS = ("accuracy", "macro_f1", "micro_f1", "weighted_f1", "subset_accuracy", "hamming_loss", "roc_auc")


def monitored_metric(monitor: str | None, *, multi_label: bool) -> str:
    """The validation metric that picks the best checkpoint (and that tuning optimizes): ``train.monitor``, or
    accuracy for single-label and micro_f1 for multi-label data. ``eval_`` prefixes are dropped."""
    return (monitor or ("micro_f1" if multi_label else "accuracy")).removeprefix("eval_")


def greater_is_better(metric: str) -> bool:
    """Whether a higher value of ``metric`` is better (every metric but the losses)."""
    return "loss" not in metric


def proba_from_logits(logits: np.ndarray, temperature: float = 1.0, *, multi_label: bool = False) -> np.ndarray:
    """Probabilities ``(N, K)`` from logits ``(N, K)``: softmax, or one sigmoid per class (multi-label), of the
    logits divided by ``temperature`` (temperature scaling, :mod:`workbench.calibration`).

    Example:
        >>> proba_from_logits(np.array([[0.0, 0.0]])).tolist()
        [[0.5, 0.5]]
    """
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    if multi_label:
        return (1.0 / (1.0 + np.exp(-scaled))).astype(np.float32)
    exp = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
    return (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)


def pool_windows(logits: np.ndarray, counts: Sequence[int], mode: str, scores: np.ndarray | None = None) -> np.ndarray:
    """One row of logits per text from its windows' rows: ``logits`` ``(sum(counts), K)`` holds each text's
    ``counts[i]`` windows in turn; ``mode`` is ``"mean"`` or ``"max"`` (per class) over them, or ``"attention"``:
    their mean weighted by the softmax of each window's learned ``scores`` ``(sum(counts),)`` over its text's
    windows (data.window_pooling; :meth:`workbench.models.TextClassificationModel.fit_window_attention`).

    Example:
        >>> pool_windows(np.array([[0.0, 2.0], [2.0, 0.0], [1.0, 1.0]]), [2, 1], "max")
        array([[2., 2.],
               [1., 1.]])
        >>> pool_windows(np.array([[0.0, 2.0], [2.0, 0.0]]), [2], "attention", scores=np.log([3.0, 1.0]))
        array([[0.5, 1.5]])
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.sum() != len(logits) or (counts < 1).any():
        raise WorkbenchError(f"{len(logits)} window rows do not split into texts of {counts.tolist()[:10]} windows.")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    if mode == "max":
        return np.maximum.reduceat(logits, starts, axis=0)
    if mode == "attention":
        if scores is None or len(scores) != len(logits):
            raise WorkbenchError("Attention pooling needs one score per window row (the model's window_attention).")
        shifted = np.asarray(scores, dtype=np.float64) - np.repeat(np.maximum.reduceat(scores, starts), counts)
        weights = np.exp(shifted)
        weights /= np.repeat(np.add.reduceat(weights, starts), counts)
        return np.add.reduceat(logits * weights[:, None], starts, axis=0).astype(logits.dtype)
    return (np.add.reduceat(logits, starts, axis=0) / counts[:, None]).astype(logits.dtype)


def deciding_window(
    logits: np.ndarray, k: int, scores: np.ndarray | None = None, *, multi_label: bool = False
) -> tuple[int, np.ndarray]:
    """Which of one text's windows decided its class ``k``, and each window's share ``(windows,)`` (summing to 1).
    Mean and max pooling (no ``scores``): the window with the largest logit of ``k`` (max pooling takes it; a mean
    weighs it most), shares the softmax of those logits over the windows. Attention pooling: the window that
    pushes hardest for ``k``, its attention weight times ``k``'s margin over the window's best other class (its
    logit of ``k`` for a multi-label model, whose classes are decided one by one); shares the attention weights.

    Example:
        >>> deciding_window(np.array([[0.0, 1.0], [3.0, 0.0]]), 1, scores=np.log([1.0, 3.0]))
        (0, array([0.25, 0.75]))
    """
    logits = np.asarray(logits, dtype=np.float64)
    if scores is None:
        column = logits[:, k]
        shares = np.exp(column - column.max())
        return int(column.argmax()), shares / shares.sum()
    shares = np.exp(np.asarray(scores, dtype=np.float64) - np.max(scores))
    shares /= shares.sum()
    others = np.delete(logits, k, axis=1)
    margin = logits[:, k] - (others.max(axis=1) if others.shape[1] and not multi_label else 0.0)
    return int((shares * margin).argmax()), shares


def predict_from_proba(proba: np.ndarray, thresholds: np.ndarray | None = None) -> np.ndarray:
    """The decision rule: class ids ``(N,)`` by argmax, or, given ``thresholds``, multi-hot ``(N, K)``.

    Args:
        proba: probabilities ``(N, K)``.
        thresholds: multi-label decision thresholds, ``(K,)`` per class or ``(N, K)`` per example (e.g. each
            cross-validation fold's own); None for single-label data.

    Example:
        >>> predict_from_proba(np.array([[0.2, 0.7], [0.6, 0.4]]), np.array([0.5, 0.8])).tolist()
        [[0, 0], [1, 0]]
    """
    proba = np.asarray(proba)
    if thresholds is None:
        return proba.argmax(1)
    return (proba >= np.asarray(thresholds)).astype(int)


def decision_margin(proba: np.ndarray, thresholds: np.ndarray | None = None) -> np.ndarray:
    """How clearly :func:`predict_from_proba` decides each example, ``(N,)``: the gap between the two highest
    probabilities, or, given multi-label ``thresholds``, the distance of the class nearest to its threshold.

    Example:
        >>> decision_margin(np.array([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05]])).round(2).tolist()
        [0.1, 0.85]
    """
    proba = np.asarray(proba, dtype=np.float64)
    if thresholds is not None:
        return np.abs(proba - np.asarray(thresholds)).min(axis=1)
    top_two = np.sort(proba, axis=1)[:, -2:]  # (N, 2): second highest, highest
    return top_two[:, 1] - top_two[:, 0]


def labels_from_proba(
    proba: np.ndarray, label_names: Sequence[str], *, multi_label: bool = False, thresholds: np.ndarray | None = None
) -> list:
    """Label names by :func:`predict_from_proba`: one per row, or a list per row for multi-label data.

    Raises:
        WorkbenchError: for multi-label data without ``thresholds`` (use the model's ``thresholds``).
    """
    if multi_label and thresholds is None:
        raise WorkbenchError("Multi-label decisions need the model's per-class thresholds (model.thresholds).")
    predicted = predict_from_proba(proba, thresholds if multi_label else None)
    if multi_label:
        return [[label_names[j] for j in np.flatnonzero(row)] for row in predicted]
    return [label_names[j] for j in predicted]


def classification_metrics(y_true: Sequence[int], proba: np.ndarray, label_names: Sequence[str]) -> dict:
    """Metrics of a single-label classifier.

    Args:
        y_true: true class ids, shape ``(N,)``.
        proba: predicted probabilities, shape ``(N, K)``.
        label_names: the K class names.

    Returns:
        A JSON-ready dict: ``accuracy``, ``{macro,micro,weighted}_{precision,recall,f1}``, ``roc_auc``
        (None when a class is absent from y_true), ``per_class`` and ``confusion_matrix``.
    """
    y_true = np.asarray(y_true)
    proba = np.asarray(proba)
    y_pred = predict_from_proba(proba)
    labels = np.arange(len(label_names))
    out: dict = {"n": len(y_true), "accuracy": float(skm.accuracy_score(y_true, y_pred))}
    for avg in ("macro", "micro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, average=avg, zero_division=0)
        out.update({f"{avg}_precision": float(p), f"{avg}_recall": float(r), f"{avg}_f1": float(f)})
    out["roc_auc"] = _roc_auc(y_true, proba, labels)
    report = skm.classification_report(
        y_true, y_pred, labels=labels, target_names=list(label_names), output_dict=True, zero_division=0
    )
    out["per_class"] = {name: report[name] for name in label_names}
    out["confusion_matrix"] = skm.confusion_matrix(y_true, y_pred, labels=labels).tolist()
    return out


def _roc_auc(y_true: np.ndarray, proba: np.ndarray, labels: np.ndarray) -> float | None:
    if len(np.unique(y_true)) < len(labels):
        return None  # AUC is undefined for a class with no positive example
    if len(labels) == 2:
        return float(skm.roc_auc_score(y_true, proba[:, 1]))
    return float(skm.roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=labels))


def multilabel_metrics(
    y_true: np.ndarray, proba: np.ndarray, thresholds: np.ndarray | float, label_names: Sequence[str] | None = None
) -> dict:
    """Metrics of a multi-label classifier.

    Args:
        y_true: multi-hot truth, shape ``(N, K)``.
        proba: per-class probabilities, shape ``(N, K)``.
        thresholds: a decision threshold per class ``(K,)`` or one for all.

    Returns:
        ``micro_f1``, ``macro_f1``, micro/macro precision and recall, ``subset_accuracy``,
        ``hamming_loss``, ``roc_auc_micro`` and (with label_names) a ``per_class`` F1 table.
    """
    y_true = np.asarray(y_true).astype(int)
    y_pred = predict_from_proba(proba, thresholds)
    out: dict = {"n": len(y_true)}
    for avg in ("micro", "macro"):
        p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, average=avg, zero_division=0)
        out.update({f"{avg}_precision": float(p), f"{avg}_recall": float(r), f"{avg}_f1": float(f)})
    out["subset_accuracy"] = float(skm.accuracy_score(y_true, y_pred))
    out["hamming_loss"] = float(skm.hamming_loss(y_true, y_pred))
    has_both = (y_true.sum(0) > 0) & (y_true.sum(0) < len(y_true))
    out["roc_auc_micro"] = (
        float(skm.roc_auc_score(y_true[:, has_both], proba[:, has_both], average="micro")) if has_both.any() else None
    )
    if label_names is not None:
        f1 = skm.f1_score(y_true, y_pred, average=None, zero_division=0)
        out["per_class"] = {
            name: {"f1": float(v), "support": int(s)} for name, v, s in zip(label_names, f1, y_true.sum(0), strict=True)
        }
    return out


def tune_thresholds(
    y_true: np.ndarray,
    proba: np.ndarray,
    grid: Sequence[float] = tuple(np.arange(0.05, 0.96, 0.05)),
    default: float = 0.5,
) -> np.ndarray:
    """Per-class thresholds that maximize each class's F1 on held-out data, shape ``(K,)``.

    Classes with no positive example keep ``default``.
    """
    y_true = np.asarray(y_true).astype(int)
    thresholds = np.full(y_true.shape[1], default, dtype=np.float32)
    for k in range(y_true.shape[1]):
        if y_true[:, k].sum() == 0:
            continue
        scores = [skm.f1_score(y_true[:, k], proba[:, k] >= t, zero_division=0) for t in grid]
        thresholds[k] = grid[int(np.argmax(scores))]
    return thresholds
