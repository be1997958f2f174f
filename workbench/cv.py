"""k-fold cross-validation: one training run per fold, out-of-fold probabilities, mean ± std of the metrics.

Folds are stratified by label (scikit-learn's ``StratifiedKFold``) or, for multi-label data, by iterative
stratification (``iterative-stratification``'s ``MultilabelStratifiedKFold``). Each fold trains a normal
run, with its held-out fold as the validation data, under ``<run.root>/<run.name>/cv/``::

    cv/folds.parquet        text, label and fold of every example (the split, fixed by the seed)
    cv/test.parquet         the test split, when the config names one (every fold model is scored on it)
    cv/fold_0/version_0/    a full run directory per fold (config, metrics, best model, log)
    cv/oof.parquet          every example's out-of-fold probabilities, predicted and true label
    cv/summary.json         per-fold metrics and their mean and standard deviation

Each example is labelled by the model of the fold that held it out, with that model's decision rule
(:func:`workbench.metrics.labels_from_proba`; for multi-label data, its own tuned thresholds). An
interrupted cross-validation resumes: folds whose run finished are read back, not retrained.

Example::

    result = cross_validate(load_config("configs/trec.yaml"), n_folds=5)
    result.summary["mean"]["accuracy"], result.summary["std"]["accuracy"]
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.cluster import Executor
from workbench.config import Config
from workbench.data import LabelledRows, TextDataModule
from workbench.errors import DataError, WorkbenchError
from workbench.labels import LabelMap
from workbench.metrics import SUMMARY_METRICS, labels_from_proba
from workbench.models import TextClassificationModel
from workbench.runs import Run, RunDir, load_run
from workbench.track import mlflow_uri
from workbench.trainer import train

FOLDS_FILE, TEST_FILE, OOF_FILE, SUMMARY_FILE = "folds.parquet", "test.parquet", "oof.parquet", "summary.json"


@dataclass
class CVResult:
    """A finished cross-validation: its folder, per-fold and mean ± std metrics, and out-of-fold predictions."""

    folder: Path
    summary: dict
    # one row per example: text, label, fold, predicted, proba_<label> (and, multi-label, threshold_<label>)
    oof: pd.DataFrame

    @property
    def label_names(self) -> list[str]:
        return [c.removeprefix("proba_") for c in self.oof.columns if c.startswith("proba_")]

    @property
    def proba(self) -> np.ndarray:
        """Out-of-fold probabilities ``(N, K)``, in the order of ``oof``."""
        return self.oof[[f"proba_{name}" for name in self.label_names]].to_numpy()

    @property
    def thresholds(self) -> np.ndarray | None:
        """Multi-label decision thresholds ``(N, K)``: each example's fold model's own; None for single-label."""
        if not self.multi_label:
            return None
        return self.oof[[f"threshold_{name}" for name in self.label_names]].to_numpy()

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
    if not (folder / SUMMARY_FILE).exists() or not (folder / OOF_FILE).exists():
        raise WorkbenchError(
            f"{folder} is not a finished cross-validation ({SUMMARY_FILE} and {OOF_FILE} are written "
            "when the last fold ends). Run `workbench cv` (it resumes) or give the cv folder."
        )
    return CVResult(folder, json.loads((folder / SUMMARY_FILE).read_text()), pd.read_parquet(folder / OOF_FILE))


def fold_assignments(
    labels: list, n_folds: int, multi_label: bool = False, seed: int = 42, label_names: list[str] | None = None
) -> np.ndarray:
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
            raise DataError(
                f"{n_folds}-fold cross-validation needs at least {n_folds} examples of every class, but "
                + ", ".join(f"class '{k}' has {v}" for k, v in rare.items())
                + f". Use at most {counts.min()} folds, or merge or drop the rare class(es)."
            )
        splits = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(np.zeros(n), labels)
    for fold, (_, held_out) in enumerate(splits):
        folds[held_out] = fold
    return folds


def _flat(labels: list, multi_label: bool, delimiter: str) -> list:
    """Labels as one string per row (a multi-label row joined by the delimiter), as the fold files hold them."""
    return [delimiter.join(x) for x in labels] if multi_label else list(labels)


def _as_table(rows: LabelledRows, delimiter: str) -> pd.DataFrame:
    table = pd.DataFrame({"text": rows.texts, "label": _flat(rows.labels, rows.multi_label, delimiter)})
    if rows.pairs is not None:
        table["text_pair"] = rows.pairs
    return table


def split_folds(config: Config, n_folds: int, folder: Path, resume: bool = True) -> tuple[pd.DataFrame, LabelMap]:
    """Assign every example of the training pool a fold and write ``folds.parquet`` (text, label, fold).

    Returns:
        The fold table and the label map of the whole pool, which every fold model predicts.

    Raises:
        DataError: when resuming into a folder that holds a different split.
    """
    dm = TextDataModule(
        config=config.data,
        model_name=config.model.backbone,
        trust_remote_code=config.model.trust_remote_code,
        seed=config.train.seed,
    )
    pool = dm.training_pool()
    table = _as_table(pool, config.data.label_delimiter)
    table.insert(2, "fold", fold_assignments(pool.labels, n_folds, pool.multi_label, config.train.seed))
    folds_file = folder / FOLDS_FILE
    if folds_file.exists() and resume:
        previous = pd.read_parquet(folds_file)
        if not previous.equals(table):
            raise DataError(
                f"{folds_file} holds a different split (other data, seed or fold count). Use another "
                "run.name, or delete that folder to start the cross-validation again."
            )
    table.to_parquet(folds_file)
    return table, LabelMap.from_labels(pool.labels, pool.multi_label)


def train_fold(
    config: Config,
    table: pd.DataFrame,
    fold: int,
    folder: Path,
    *,
    label_map: LabelMap,
    test_file: Path | None = None,
    resume: bool = True,
    echo: Callable[[str], None] | None = print,
) -> Run:
    """Train (or, resuming, read back) the run of one fold: trained on the other folds, validated on this one,
    predicting every label of ``label_map`` (the whole pool's, so all fold models share one label set)."""
    echo = echo or (lambda line: None)
    name = f"fold_{fold}"
    done = [run for run in RunDir.versions(folder, name) if run.is_finished()] if resume else []
    if done:
        echo(f"fold {fold + 1}/{table['fold'].nunique()}: finished before, reading {done[-1].path}")
        return load_run(done[-1].path)
    train_file, val_file = folder / f"{name}.train.parquet", folder / f"{name}.val.parquet"
    table[table["fold"] != fold].to_parquet(train_file)
    table[table["fold"] == fold].to_parquet(val_file)
    data = replace(
        config.data,
        dataset=None,
        train_file=str(train_file),
        val_file=str(val_file),
        test_file=str(test_file) if test_file else None,
        text_column="text",
        label_column="label",
        text_pair_column="text_pair" if "text_pair" in table else None,
        multi_label=label_map.multi_label,
        train_subset=None,
        val_subset=None,
    )
    # the folds report to the MLflow store of the experiment's run.root, not one inside the CV folder
    store = mlflow_uri(config.run.root, config.run.mlflow_uri) if "mlflow" in config.run.track else None
    fold_config = replace(config, data=data, run=replace(config.run, root=str(folder), name=name, mlflow_uri=store))
    echo(
        f"fold {fold + 1}/{table['fold'].nunique()}: training on {int((table['fold'] != fold).sum())}, "
        f"validating on {int((table['fold'] == fold).sum())}"
    )
    return load_run(train(fold_config, label_map=label_map).run_dir)


def fold_predictions(
    run: Run, table: pd.DataFrame, fold: int, folder: Path, *, label_delimiter: str = "|"
) -> pd.DataFrame:
    """The fold model's probabilities (and multi-label thresholds) on its held-out examples, indexed by
    their position in the pool; cached as ``oof.parquet`` in the fold's run directory."""
    cached = run.path / OOF_FILE
    if cached.exists():
        return pd.read_parquet(cached)
    model = TextClassificationModel.from_pretrained(run.model_dir)
    encoded = TextDataModule.for_model(
        model, text_column="text", label_column="label", label_delimiter=label_delimiter
    ).encode_file(folder / f"fold_{fold}.val.parquet")
    part = pd.DataFrame(model.predict_proba_features(encoded), columns=[f"proba_{n}" for n in model.label_names])
    if model.multi_label:
        for name, threshold in zip(model.label_names, model.thresholds, strict=True):
            part[f"threshold_{name}"] = float(threshold)
    part.insert(0, "index", np.flatnonzero(table["fold"].to_numpy() == fold))  # the fold's file keeps the pool's order
    part.to_parquet(cached)
    return part


def _fold_row(fold: int, run: Run) -> dict:
    row = {"fold": fold, "run_dir": str(run.path)}
    for split, prefix in (("validation", ""), ("test", "test_")):
        values = run.metrics.get(split, {})
        row.update({f"{prefix}{k}": values[k] for k in SUMMARY_METRICS if values.get(k) is not None})
    return row


@dataclass
class _FoldJob:
    """One fold's training and held-out predictions: what a task of :meth:`Executor.map` receives."""

    config: Config
    table: pd.DataFrame
    fold: int
    folder: Path
    label_map: LabelMap
    test_file: Path | None
    resume: bool
    echo: Callable[[str], None] | None


def _print_line(line: str) -> None:
    print(line, flush=True)


def _run_fold(job: _FoldJob) -> tuple[dict, pd.DataFrame]:
    """Train (or read back) one fold and predict its held-out examples: its summary row and its probabilities."""
    run = train_fold(
        job.config,
        job.table,
        job.fold,
        job.folder,
        label_map=job.label_map,
        test_file=job.test_file,
        resume=job.resume,
        echo=job.echo,
    )
    part = fold_predictions(run, job.table, job.fold, job.folder, label_delimiter=job.config.data.label_delimiter)
    return _fold_row(job.fold, run), part


def cross_validate(
    config: Config,
    n_folds: int = 5,
    resume: bool = True,
    echo: Callable[[str], None] | None = print,
    executor: Executor | None = None,
) -> CVResult:
    """Train one run per fold and gather out-of-fold probabilities and mean ± std metrics.

    Args:
        config: the experiment; its training data is split into folds (a given validation split is not used).
        n_folds: number of folds.
        resume: reuse folds that already finished under the same folder (same folds file).
        echo: where progress lines go (``print``; None to silence them). Folds trained as Ray tasks print on
            their workers, which Ray forwards here.
        executor: where the folds train: None (or ``local``) one after another here; an entered
            :class:`~workbench.cluster.Executor` of kind ``ray``, one task of one CPU per fold. The folds, seeds and
            results are the same either way.
    """
    folder = Path(config.run.root) / config.run.name / "cv"
    folder.mkdir(parents=True, exist_ok=True)
    table, label_map = split_folds(config, n_folds, folder, resume)
    multi, delimiter = label_map.multi_label, config.data.label_delimiter
    test = TextDataModule(config=config.data, model_name=config.model.backbone).read_split("test", stream=False)
    test_file = folder / TEST_FILE if test is not None else None
    if test is not None:
        _as_table(test, delimiter).to_parquet(test_file)
    executor = executor or Executor()
    if executor.distributed and echo is not None:
        echo = _print_line  # a task prints on its worker (Ray forwards the lines here); the caller's echo stays here
    jobs = [_FoldJob(config, table, fold, folder, label_map, test_file, resume, echo) for fold in range(n_folds)]
    nodes: dict[int, str] = {}
    done = executor.map(
        _run_fold,
        jobs,
        names=[f"fold_{fold}" for fold in range(n_folds)],
        on_result=lambda fold, result, node: nodes.update({fold: node} if node else {}),
    )
    rows = [{**row, "node": nodes[fold]} if fold in nodes else row for fold, (row, _) in enumerate(done)]
    parts = [part for _, part in done]
    per_fold = pd.DataFrame(rows)
    metrics = [c for c in per_fold.columns if c not in ("fold", "run_dir", "node")]
    summary = {
        "n_folds": n_folds,
        "examples": len(table),
        "multi_label": multi,
        "label_delimiter": delimiter,
        "folds": rows,
        "mean": per_fold[metrics].mean().to_dict(),
        "std": per_fold[metrics].std(ddof=1).to_dict(),
    }
    (folder / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str))
    oof = pd.concat(parts).sort_values("index").set_index("index")
    result = CVResult(folder, summary, table.join(oof))
    predicted = labels_from_proba(result.proba, result.label_names, multi_label=multi, thresholds=result.thresholds)
    result.oof["predicted"] = _flat(predicted, multi, delimiter)
    result.oof.to_parquet(folder / OOF_FILE)
    return result
