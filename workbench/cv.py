"""k-fold cross-validation: one training run per fold, out-of-fold probabilities, mean ± std of the metrics.

Folds are stratified by label (scikit-learn's ``StratifiedKFold``) or, for multi-label data, by iterative
stratification (``iterative-stratification``'s ``MultilabelStratifiedKFold``). Each fold trains a normal
run, with its held-out fold as the validation data, under ``<run.root>/<run.name>/cv/``::

    cv/folds.parquet        text, label and fold of every example (the split, fixed by the seed)
    cv/fold_0/version_0/    a full run directory per fold (config, metrics, best model, log)
    cv/oof.parquet          every example's out-of-fold probabilities, predicted and true label
    cv/summary.json         per-fold metrics and their mean and standard deviation

An interrupted cross-validation resumes: folds whose run finished are read back, not retrained.

Example::

    result = cross_validate(load_config("configs/trec.yaml"), n_folds=5)
    result.summary["mean"]["accuracy"], result.summary["std"]["accuracy"]
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.config import Config
from workbench.data import TextDataModule
from workbench.errors import DataError, WorkbenchError


@dataclass
class CVResult:
    folder: Path
    summary: dict
    oof: pd.DataFrame  # one row per example: text, label, fold, predicted, proba_<label> columns

    @property
    def label_names(self) -> list[str]:
        return [c.removeprefix("proba_") for c in self.oof.columns if c.startswith("proba_")]

    @property
    def proba(self) -> np.ndarray:
        """Out-of-fold probabilities ``(N, K)``, in the order of ``oof``."""
        return self.oof[[f"proba_{name}" for name in self.label_names]].to_numpy()

    @property
    def multi_label(self) -> bool:
        return bool(self.summary["multi_label"])

    @property
    def given_labels(self) -> list:
        """Each example's label (a list of labels for multi-label data), as given in the data."""
        if self.multi_label:
            delimiter = self.summary.get("label_delimiter", "|")
            return [[x for x in str(v).split(delimiter) if x] for v in self.oof["label"]]
        return list(self.oof["label"])

    def confusion_matrix(self) -> np.ndarray:
        """``(K, K)`` counts of out-of-fold predictions, rows = true label (single-label data only)."""
        if self.multi_label:
            raise WorkbenchError("A confusion matrix needs single-label data; this cross-validation is multi-label.")
        table = pd.crosstab(self.oof["label"], self.oof["predicted"])
        return table.reindex(index=self.label_names, columns=self.label_names, fill_value=0).to_numpy()


def load_cv(folder: str | Path) -> CVResult:
    """Read a finished cross-validation folder (``<run root>/<name>/cv``)."""
    folder = Path(folder)
    if not (folder / "summary.json").exists() or not (folder / "oof.parquet").exists():
        raise WorkbenchError(f"{folder} is not a finished cross-validation (summary.json and oof.parquet are written "
                             "when the last fold ends). Run `workbench cv` (it resumes) or give the cv folder.")
    return CVResult(folder, json.loads((folder / "summary.json").read_text()), pd.read_parquet(folder / "oof.parquet"))


def fold_assignments(labels: list, n_folds: int, multi_label: bool = False, seed: int = 42,
                     label_names: list[str] | None = None) -> np.ndarray:
    """The fold (0..n_folds-1) of each example, stratified by label.

    Args:
        labels: one label per example, or one list of labels per example (multi-label).
        n_folds: at least 2, and at most the number of examples of the rarest class (single-label).

    Raises:
        DataError: naming the class that has fewer examples than folds.
    """
    if n_folds < 2:
        raise DataError(f"n_folds={n_folds}: cross-validation needs at least 2 folds.")
    n = len(labels)
    if n < n_folds:
        raise DataError(f"{n} examples cannot fill {n_folds} folds.")
    folds = np.empty(n, dtype=int)
    if multi_label:
        from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

        names = label_names or sorted({label for row in labels for label in row})
        index = {name: j for j, name in enumerate(names)}
        target = np.zeros((n, len(names)), dtype=int)
        for i, row in enumerate(labels):
            target[i, [index[label] for label in row]] = 1
        splitter = MultilabelStratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(n), target)
    else:
        from sklearn.model_selection import StratifiedKFold

        counts = pd.Series(labels).value_counts()
        if counts.min() < n_folds:
            rare = counts[counts < n_folds]
            raise DataError(f"{n_folds}-fold cross-validation needs at least {n_folds} examples of every class, but "
                            + ", ".join(f"class '{k}' has {v}" for k, v in rare.items())
                            + f". Use at most {counts.min()} folds, or merge or drop the rare class(es).")
        splits = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(np.zeros(n), labels)
    for fold, (_, held_out) in enumerate(splits):
        folds[held_out] = fold
    return folds


def _pool(config: Config) -> tuple[pd.DataFrame, list, TextDataModule]:
    """Every training example (after train_subset) as a frame with the text and label columns."""
    dm = TextDataModule(config=replace(config.data, val_subset=None), model_name=config.model.backbone,
                        seed=config.train.seed)
    frames = dm._frames()
    train, source = frames["train"]
    dm._check(train, source)
    if config.data.train_subset and config.data.train_subset < len(train):
        from workbench.data import _stratified_take

        train, _ = _stratified_take(train, config.data.train_subset, dm._strata(dm._labels_of(train, source)),
                                    config.train.seed)
    labels = dm._labels_of(train, source)
    return train.reset_index(drop=True), labels, dm


def cross_validate(config: Config, n_folds: int = 5, resume: bool = True, echo=print) -> CVResult:
    """Train one run per fold and gather out-of-fold probabilities and mean ± std metrics.

    Args:
        config: the experiment; its training data is split into folds (a given validation split is not used).
        n_folds: number of folds.
        resume: reuse folds that already finished under the same folder (same folds file).
    """
    from workbench.runs import load_run
    from workbench.trainer import SUMMARY_METRICS, train

    folder = Path(config.run.root) / config.run.name / "cv"
    folder.mkdir(parents=True, exist_ok=True)
    pool, labels, dm = _pool(config)
    text_column, label_column = dm.text_column, dm.label_column
    multi = dm.multi_label
    delimiter = config.data.label_delimiter
    flat_labels = [delimiter.join(x) for x in labels] if multi else labels
    folds_file = folder / "folds.parquet"
    folds = fold_assignments(labels, n_folds, multi, config.train.seed)
    table = pd.DataFrame({"text": pool[text_column].astype(str), "label": flat_labels, "fold": folds})
    if config.data.text_pair_column:
        table["text_pair"] = pool[config.data.text_pair_column].astype(str)
    if folds_file.exists() and resume:
        previous = pd.read_parquet(folds_file)
        if not previous.equals(table):
            raise DataError(f"{folds_file} holds a different split (other data, seed or fold count). Use another "
                            "run.name, or delete that folder to start the cross-validation again.")
    table.to_parquet(folds_file)
    test_file = None
    if config.data.dataset and config.data.test_split:
        test_frame = dm._catalog_frame(config.data.test_split)
        test = pd.DataFrame({"text": test_frame[text_column].astype(str)})
        test["label"] = [delimiter.join(x) if isinstance(x, list) else x for x in test_frame[label_column]]
        test_file = folder / "test.parquet"
        test.to_parquet(test_file)
    elif config.data.test_file:
        test_file = config.data.test_file
    rows, oof_parts = [], []
    for fold in range(n_folds):
        fold_dir = folder / f"fold_{fold}"
        done = sorted(fold_dir.glob("version_*/metrics.json")) if resume else []
        if done:
            run = load_run(done[-1].parent)
            echo(f"fold {fold + 1}/{n_folds}: finished before, reading {run.path}")
        else:
            table[table["fold"] != fold].to_parquet(fold_dir.with_suffix(".train.parquet"))
            table[table["fold"] == fold].to_parquet(fold_dir.with_suffix(".val.parquet"))
            data = replace(config.data, dataset=None, train_file=str(fold_dir.with_suffix(".train.parquet")),
                           val_file=str(fold_dir.with_suffix(".val.parquet")), test_file=str(test_file) if test_file else None,
                           text_column="text", label_column="label", text_pair_column="text_pair" if config.data.text_pair_column else None,
                           multi_label=multi, train_subset=None, val_subset=None)
            fold_config = replace(config, data=data, run=replace(config.run, root=str(folder), name=f"fold_{fold}"))
            echo(f"fold {fold + 1}/{n_folds}: training on {int((folds != fold).sum())}, validating on {int((folds == fold).sum())}")
            run = load_run(train(fold_config).run_dir)
        rows.append({"fold": fold, "run_dir": str(run.path),
                     **{k: run.metrics["validation"].get(k) for k in SUMMARY_METRICS if run.metrics["validation"].get(k) is not None},
                     **{f"test_{k}": run.metrics["test"].get(k) for k in SUMMARY_METRICS
                        if "test" in run.metrics and run.metrics["test"].get(k) is not None}})
        oof_file = run.path / "oof.parquet"
        if not oof_file.exists():
            model = run.model()
            val_dm = TextDataModule.for_model(model, text_column="text", label_column="label")
            encoded = val_dm.encode_file(fold_dir.with_suffix(".val.parquet"))
            proba = model.predict_proba_features(encoded)
            part = pd.DataFrame(proba, columns=[f"proba_{n}" for n in model.label_names])
            part.insert(0, "index", np.flatnonzero(folds == fold))  # the fold's file keeps the pool's order
            part.to_parquet(oof_file)
        oof_parts.append(pd.read_parquet(oof_file))
    per_fold = pd.DataFrame(rows)
    metrics = [c for c in per_fold.columns if c not in ("fold", "run_dir")]
    summary = {"n_folds": n_folds, "examples": len(table), "multi_label": multi, "label_delimiter": delimiter,
               "folds": rows, "mean": per_fold[metrics].mean().to_dict(), "std": per_fold[metrics].std(ddof=1).to_dict()}
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    oof = pd.concat(oof_parts).sort_values("index").set_index("index")
    result = CVResult(folder, summary, table.join(oof.fillna(0.0)))
    names, probabilities = result.label_names, result.proba
    result.oof["predicted"] = [names[j] for j in probabilities.argmax(1)] if not multi else [
        delimiter.join(n for n, p in zip(names, row) if p >= 0.5) for row in probabilities]
    result.oof.to_parquet(folder / "oof.parquet")
    return result
