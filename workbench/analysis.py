"""Where a model is wrong: an error table, the most confused label pairs, slices, and likely label errors.

Everything works on arrays that :func:`workbench.evaluation.evaluate_run` or :func:`workbench.cv.cross_validate`
produce (texts, ``(N,)`` true class ids, ``(N, K)`` probabilities), so the same tables feed a notebook, the
error inspector widget (:mod:`workbench.widgets`) and a static HTML report.

Example::

    table = error_table(evaluation.texts, evaluation.y_true, evaluation.proba, evaluation.label_names)
    table[~table.correct].head(20)                      # the worst mistakes, by loss
    confused_pairs(table)                               # which label is mistaken for which
    label_issues(cv.oof.label, cv.proba, cv.label_names) # confident learning on out-of-fold probabilities
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from workbench.errors import WorkbenchError
from workbench.metrics import deciding_window, pool_windows, predict_from_proba
from workbench.text import check_model_inputs


def _ids(labels, label_names: Sequence[str]) -> np.ndarray:
    """Class ids from ids or names."""
    labels = np.asarray(labels)
    if labels.dtype.kind in "iu":
        return labels
    index = {name: i for i, name in enumerate(label_names)}
    unknown = sorted({str(x) for x in labels if str(x) not in index})
    if unknown:
        raise WorkbenchError(f"Labels {unknown[:5]} are not among the model's labels {list(label_names)[:10]}.")
    return np.asarray([index[str(x)] for x in labels])


def _required(thresholds, caller: str) -> np.ndarray:
    if thresholds is None:
        raise WorkbenchError(
            f"{caller}: multi-label data needs the model's decision thresholds; pass "
            "thresholds=model.thresholds (or a cross-validation's CVResult.thresholds)."
        )
    return np.asarray(thresholds)


def error_table(
    texts: Sequence[str],
    y_true,
    proba,
    label_names: Sequence[str],
    *,
    lengths=None,
    multi_label: bool = False,
    thresholds=None,
) -> pd.DataFrame:
    """One row per example, worst first: text, true and predicted label, confidence, loss, length, correct.

    Args:
        texts: the N texts.
        y_true: ``(N,)`` class ids or names; ``(N, K)`` multi-hot for multi-label.
        proba: ``(N, K)`` probabilities.
        label_names: the K class names.
        lengths: token counts per text (default: whitespace words).
        thresholds: the model's multi-label decision thresholds, ``(K,)`` (required for multi-label data).

    Returns:
        Columns ``text``, ``true``, ``predicted``, ``confidence`` (probability of the predicted label, or of the
        decision for multi-label), ``true_proba``, ``loss`` (cross-entropy of the true label), ``length``,
        ``correct``; sorted by ``loss``, highest first.
    """
    proba = np.asarray(proba, dtype=float)
    if proba.ndim != 2 or proba.shape[1] != len(label_names) or len(proba) != len(texts):
        raise WorkbenchError(
            f"error_table: proba is {proba.shape}, but there are {len(texts)} texts and "
            f"{len(label_names)} labels; it must be (texts, labels)."
        )
    names = np.asarray(label_names, dtype=object)
    eps = 1e-12
    if multi_label:
        truth = np.asarray(y_true).astype(int)
        decided = predict_from_proba(proba, _required(thresholds, "error_table")).astype(bool)
        true_labels = ["|".join(names[row.astype(bool)]) for row in truth]
        predicted = ["|".join(names[row]) for row in decided]
        correct = (decided == truth.astype(bool)).all(1)
        loss = -(truth * np.log(proba + eps) + (1 - truth) * np.log(1 - proba + eps)).sum(1)
        confidence = np.where(decided, proba, 1 - proba).min(1)
        true_proba = np.where(truth.astype(bool), proba, np.nan)
        true_proba = np.nanmin(np.where(truth.any(1, keepdims=True), true_proba, 1.0), axis=1)
    else:
        ids = _ids(y_true, label_names)
        if len(ids) != len(proba):
            raise WorkbenchError(f"error_table: {len(ids)} labels for {len(proba)} rows of probabilities.")
        top = predict_from_proba(proba)
        true_labels, predicted = names[ids], names[top]
        correct = top == ids
        true_proba = proba[np.arange(len(ids)), ids]
        loss = -np.log(true_proba + eps)
        confidence = proba.max(1)
    length = np.asarray(lengths) if lengths is not None else np.array([len(str(t).split()) for t in texts])
    table = pd.DataFrame(
        {
            "text": list(texts),
            "true": true_labels,
            "predicted": predicted,
            "confidence": confidence,
            "true_proba": true_proba,
            "loss": loss,
            "length": length,
            "correct": correct,
        }
    )
    table.index.name = "example"
    return table.sort_values("loss", ascending=False, kind="stable")


def confused_pairs(table: pd.DataFrame, top: int = 10) -> pd.DataFrame:
    """The most frequent (true → predicted) mistakes, with their share of the true class's examples."""
    errors = table[~table["correct"]]
    pairs = errors.groupby(["true", "predicted"]).size().rename("errors").reset_index()
    support = table.groupby("true").size()
    pairs["share_of_true_class"] = pairs["errors"] / pairs["true"].map(support)
    return pairs.sort_values("errors", ascending=False, kind="stable").head(top).reset_index(drop=True)


def error_slices(table: pd.DataFrame, length_buckets: int = 5) -> pd.DataFrame:
    """Accuracy, mean loss and size per slice: by true class and by length bucket (quantiles)."""
    by_class = table.groupby("true").agg(
        examples=("correct", "size"), accuracy=("correct", "mean"), mean_loss=("loss", "mean")
    )
    by_class.index = [f"class = {c}" for c in by_class.index]
    buckets = pd.qcut(table["length"], q=min(length_buckets, table["length"].nunique()), duplicates="drop")
    by_length = table.groupby(buckets, observed=True).agg(
        examples=("correct", "size"), accuracy=("correct", "mean"), mean_loss=("loss", "mean")
    )
    by_length.index = [f"length {int(np.ceil(b.left))}-{int(b.right)}" for b in by_length.index]
    out = pd.concat([by_class, by_length])
    out.index.name = "slice"
    return out


def label_issues(
    labels,
    pred_probs,
    label_names: Sequence[str],
    *,
    texts: Sequence[str] | None = None,
    multi_label: bool = False,
    thresholds=None,
) -> pd.DataFrame:
    """Likely label errors by confident learning (cleanlab) on out-of-fold probabilities, most suspect first.

    Args:
        labels: given labels, ``(N,)`` ids or names (multi-label: lists of names or ``(N, K)`` multi-hot).
        pred_probs: ``(N, K)`` out-of-fold probabilities (each from a model that did not train on it).
        label_names: the K class names.
        texts: the N texts, shown beside each suspect.
        thresholds: multi-label decision thresholds, ``(K,)`` or per example ``(N, K)`` (each cross-validation
            fold model's own: :attr:`workbench.cv.CVResult.thresholds`); required for multi-label data.

    Returns:
        One row per suspect: ``example`` (position), ``text``, ``given``, ``suggested`` (the most likely
        other label; for multi-label data, the labels the model decides on), ``given_proba`` (the model's
        probability of the given label).
    """
    from cleanlab.filter import find_label_issues

    pred_probs = np.asarray(pred_probs, dtype=float)
    names = np.asarray(label_names, dtype=object)
    if multi_label:
        if np.asarray(labels, dtype=object).ndim == 2 and not isinstance(np.asarray(labels, dtype=object)[0, 0], str):
            lists = [list(np.flatnonzero(row)) for row in np.asarray(labels)]
        else:
            index = {n: i for i, n in enumerate(label_names)}
            lists = [[index[x] for x in row] for row in labels]
        ranked = find_label_issues(lists, pred_probs, multi_label=True, return_indices_ranked_by="self_confidence")
        given = ["|".join(names[row]) for row in lists]
        suggested = [
            "|".join(names[row.astype(bool)])
            for row in predict_from_proba(pred_probs, _required(thresholds, "label_issues"))
        ]
        given_proba = [float(np.mean(pred_probs[i, row])) if row else float("nan") for i, row in enumerate(lists)]
    else:
        ids = _ids(labels, label_names)
        if len(ids) != len(pred_probs):
            raise WorkbenchError(f"label_issues: {len(ids)} labels for {len(pred_probs)} rows of probabilities.")
        ranked = find_label_issues(ids, pred_probs, return_indices_ranked_by="self_confidence")
        given = names[ids]
        others = pred_probs.copy()
        others[np.arange(len(ids)), ids] = -1
        suggested = names[others.argmax(1)]
        given_proba = pred_probs[np.arange(len(ids)), ids]
    rows = [
        {
            "example": int(i),
            "text": texts[i] if texts is not None else None,
            "given": given[i],
            "suggested": suggested[i],
            "given_proba": float(given_proba[i]),
        }
        for i in ranked
    ]
    return pd.DataFrame(rows, columns=["example", "text", "given", "suggested", "given_proba"])


def deciding_windows(model, texts: Sequence[str], classes: Sequence[str] | None = None) -> pd.DataFrame:
    """For a model that reads long texts as windows (``data.truncation=windows``): which window decided each
    text's class, the one whose logit of that class is the largest (max pooling takes it; a mean weighs it most),
    or with attention pooling the one pushing hardest for it (:func:`workbench.metrics.deciding_window`).

    Args:
        model: a :class:`~workbench.models.TextClassificationModel`.
        texts: the texts, e.g. an error table's ``text`` column.
        classes: the class each text is asked about (default: its predicted class; e.g. the true class, to see
            where the model looked for it).

    Returns:
        One row per text: ``windows`` (how many), ``deciding_window`` (from 0), ``window_share`` (that window's
        logit of the class, as a softmax share over the text's windows: 1 / windows when all agree, 1 when one
        window alone speaks for it; with attention pooling its attention weight) and ``window_text`` (its tokens,
        decoded).
    """
    texts = list(texts)
    check_model_inputs(texts, pair_model=bool(model.processing.text_pair_column))
    features = model.processor().encode(texts)
    outputs = model.window_outputs(features)
    if classes is None:  # each text's prediction, from its pooled window logits
        mode = model.processing.window_pooling
        pooled = np.concatenate([pool_windows(part, [len(part)], mode, scores) for part, scores in outputs])
        classes = model.labels_from_proba(model.proba_from_logits(pooled))
    classes = list(classes)
    if model.multi_label and any(not isinstance(c, str) for c in classes):
        raise WorkbenchError("deciding_windows: give a multi-label model one class name per text (classes=...).")
    rows = []
    for (text_logits, scores), feature, name in zip(outputs, features, classes, strict=True):
        if str(name) not in model.label_names:
            raise WorkbenchError(f"deciding_windows: '{name}' is not a class of this model.")
        best, shares = deciding_window(
            text_logits, model.label_names.index(str(name)), scores, multi_label=model.multi_label
        )
        ids = feature["windows"][best] if "windows" in feature else feature["input_ids"]
        rows.append(
            {
                "windows": len(text_logits),
                "deciding_window": best,
                "window_share": float(shares[best]),
                "window_text": model.tokenizer.decode(ids, skip_special_tokens=True),
            }
        )
    return pd.DataFrame(rows)
