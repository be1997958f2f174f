"""Scoring trained models: on an encoded dataset, on a run's own validation or test split, and calibrating them.

Training (:mod:`workbench.trainer`), the command line and the notebooks all score models through
:func:`evaluate_model`, so every metric comes from one place and one decision rule
(:func:`workbench.metrics.predict_from_proba`)::

    evaluation = evaluate_run("runs/trec/version_0", split="validation")
    evaluation.metrics["macro_f1"], evaluation.report()        # headline numbers and the per-class table
    calibrate_run("runs/trec/version_0")                        # temperature scaling, saved with the model
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.calibration import calibrate_model
from workbench.data import TextDataModule
from workbench.datafiles import read_table_chunks
from workbench.errors import WorkbenchError
from workbench.labels import LabelMap
from workbench.metrics import classification_metrics, multilabel_metrics, predict_from_proba
from workbench.models import TextClassificationModel
from workbench.runs import Run, RunDir, load_run, save_best
from workbench.store import EncodedExamples


def evaluate_model(model: TextClassificationModel, dataset: EncodedExamples, proba: np.ndarray | None = None) -> dict:
    """Metrics of a trained model on an encoded labelled dataset, by its own decision rule.

    Args:
        model: a :class:`~workbench.models.TextClassificationModel` (its labels, thresholds, temperature).
        dataset: any dataset (:class:`~workbench.store.EncodedExamples`) whose examples carry ``labels``.
        proba: the model's probabilities ``(N, K)`` on ``dataset`` when already computed.

    Returns:
        :func:`classification_metrics` or, for a multi-label model, :func:`multilabel_metrics` at the model's
        thresholds, with a ``per_class`` table.

    Example:
        >>> evaluate_model(model, dm.val_dataset)["accuracy"]  # doctest: +SKIP
    """
    if proba is None:
        proba = model.predict_proba_features(dataset)
    return metrics_of(model, dataset.labels, proba)


def evaluate_file(
    model: TextClassificationModel,
    path: str | Path,
    *,
    text_column: str = "text",
    label_column: str = "label",
    rows: int = 10_000,
) -> dict:
    """:func:`evaluate_model` on a labelled file read ``rows`` rows at a time: memory holds one piece of text and
    the probabilities ``(N, K)``, never the whole file (``workbench evaluate --file``).

    Example:
        >>> evaluate_file(model, "big_test.csv")["accuracy"]  # doctest: +SKIP
    """
    dm = TextDataModule.for_model(model, text_column=text_column, label_column=label_column)
    dm.config.cache = False  # a piece of a stream is never read twice: a cache file per piece would only fill the disk
    probas, labels = [], []
    for frame in read_table_chunks(path, rows):
        dataset = dm.encode_frame(frame, str(path))
        probas.append(model.predict_proba_features(dataset))
        labels.extend(dataset.labels)
    return metrics_of(model, labels, np.concatenate(probas))


def metrics_of(model: TextClassificationModel, labels: list, proba: np.ndarray) -> dict:
    """The model's metrics for true labels (ids, or multi-hot rows) and its probabilities ``(N, K)``."""
    if model.multi_label:
        return multilabel_metrics(np.asarray(labels), proba, model.thresholds, model.label_names)
    return classification_metrics(labels, proba, model.label_names)


@dataclass
class Evaluation:
    """A model's predictions on one labelled split, with what the plots and error tables need."""

    split: str
    label_names: list[str]
    multi_label: bool
    texts: list[str]
    y_true: np.ndarray  # (N,) class ids, or (N, K) multi-hot for multi-label
    proba: np.ndarray  # (N, K)
    y_pred: np.ndarray  # like y_true
    metrics: dict
    model: TextClassificationModel

    @property
    def thresholds(self) -> np.ndarray:
        """The model's decision thresholds ``(K,)`` (what multi-label decisions use)."""
        return self.model.thresholds

    def report(self) -> pd.DataFrame:
        """The per-class precision / recall / F1 / support table."""
        return pd.DataFrame(self.metrics["per_class"]).T if "per_class" in self.metrics else pd.DataFrame()


def run_datamodule(run: Run, model: TextClassificationModel) -> TextDataModule:
    """The run's data, split and encoded exactly as in training, with the trained model's labels."""
    dm = TextDataModule(
        config=run.config.data, model_name=str(run.model_dir), tokenizer=model.tokenizer, seed=run.config.train.seed
    )
    return dm.setup(label_map=LabelMap(model.label_names, model.multi_label))


def run_split(run: Run, model: TextClassificationModel, split: str) -> EncodedExamples:
    """The run's ``validation`` or ``test`` split, encoded as in training (:func:`run_datamodule`)."""
    if split not in ("validation", "test"):
        raise WorkbenchError(f"split={split!r}: choose 'validation' or 'test'.")
    dm = run_datamodule(run, model)
    dataset = dm.val_dataset if split == "validation" else dm.test_dataset
    if dataset is None:
        raise WorkbenchError(
            f"Run {run.path} has no test split: its data config names no test_file or test_split. "
            "Use split='validation'."
        )
    return dataset


def evaluate_run(
    run: Run | str | Path, split: str = "validation", *, model: TextClassificationModel | None = None
) -> Evaluation:
    """Score a run's best model on its own validation or test split (rebuilt from the saved data config).

    Args:
        run: a :class:`~workbench.runs.Run` or a run directory.
        split: ``validation`` or ``test``.
        model: the run's model when it is already loaded (otherwise it is loaded from the run).

    Example:
        >>> evaluation = evaluate_run("runs/trec/version_0", "test")  # doctest: +SKIP
        >>> evaluation.metrics["accuracy"], evaluation.model.label_names  # doctest: +SKIP
    """
    run = run if isinstance(run, Run) else load_run(run)
    model = model or TextClassificationModel.from_pretrained(run.model_dir)
    dataset = run_split(run, model, split)
    proba = model.predict_proba_features(dataset)
    labels = dataset.labels
    predicted = predict_from_proba(proba, model.thresholds if model.multi_label else None)
    return Evaluation(
        split,
        list(model.label_names),
        model.multi_label,
        list(dataset.texts),
        labels,
        proba,
        predicted,
        evaluate_model(model, dataset, proba),
        model,
    )


def calibrate_run(run: Run | str | Path, save: bool = True, *, model: TextClassificationModel | None = None) -> dict:
    """Fit temperature scaling on the run's validation split and (by default) save it with the best model.

    Writes ``calibration.json`` (temperature, ECE / Brier / NLL before and after) into the run directory
    and re-saves ``best/`` with the temperature, so later predictions are calibrated.

    Args:
        run: a :class:`~workbench.runs.Run` or a run directory.
        save: write the temperature into the run (``best/`` and ``calibration.json``).
        model: the run's model when it is already loaded; its ``temperature`` is set to the fitted one.
    """
    run = run if isinstance(run, Run) else load_run(run)
    model = model or TextClassificationModel.from_pretrained(run.model_dir)
    report = calibrate_model(model, run_datamodule(run, model).val_dataset)
    if save:
        save_best(model, run.model_dir)
        RunDir(run.path).write_json(RunDir.CALIBRATION, report)
    return report
