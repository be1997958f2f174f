"""Reading finished runs back: metrics, the step log, evaluation on a split, and a leaderboard of many runs.

A run directory is what :meth:`workbench.Trainer.fit` writes (``runs/<name>/version_N/``): ``config.yaml``,
``metrics.json``, ``log.jsonl``, ``env.json``, ``labels.json`` and the ``best/`` model. Notebooks and
reports read runs only through this module, so a missing or half-written run gives one clear error.

Example::

    run = load_run("runs/sst2/version_0")
    run.log.tail()                                # one row per logged step (train and eval)
    evaluation = evaluate_run(run, split="validation")
    board = leaderboard("runs")                   # one row per finished run
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from workbench.config import Config, config_from_dict, load_config
from workbench.errors import WorkbenchError

RUN_FILES = ("config.yaml", "metrics.json")


class RunNotFoundError(WorkbenchError, FileNotFoundError):
    """A run directory does not exist or is not a finished run."""


@dataclass
class Run:
    """One finished run directory and what it recorded."""

    path: Path
    config: Config
    metrics: dict
    env: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}"

    @cached_property
    def log(self) -> pd.DataFrame:
        """The step log: one row per logged event with ``step``, ``epoch`` and ``loss`` or ``eval_*`` columns."""
        return read_log(self.path)

    def model(self):
        """The best model of the run (a :class:`workbench.TextClassificationModel`)."""
        from workbench.models import TextClassificationModel

        return TextClassificationModel.from_pretrained(self.path / "best")


def load_run(run_dir: str | Path) -> Run:
    """Open a finished run directory, or raise :class:`RunNotFoundError` saying what is missing.

    Args:
        run_dir: ``runs/<name>/version_N`` (a run name folder ``runs/<name>`` opens its newest version).
    """
    path = Path(run_dir)
    if not path.exists():
        raise RunNotFoundError(f"Run directory {path} does not exist. Give a folder written by `workbench train` "
                               "(runs/<name>/version_N), or leave run_dir empty to train a small run first.")
    if not (path / "config.yaml").exists():
        from workbench.trainer import latest_version_dir

        path = latest_version_dir(path.parent, path.name) or path
    missing = [name for name in RUN_FILES if not (path / name).exists()]
    if missing:
        raise RunNotFoundError(f"{path} is not a finished run: {', '.join(missing)} missing. The run may still be "
                               "training or was interrupted; resume it with `workbench train --resume " f"{path}`.")
    config = config_from_dict(yaml.safe_load((path / "config.yaml").read_text()))
    env = json.loads((path / "env.json").read_text()) if (path / "env.json").exists() else {}
    return Run(path, config, json.loads((path / "metrics.json").read_text()), env)


def read_log(run_dir: str | Path) -> pd.DataFrame:
    """The run's ``log.jsonl`` as a table (empty if nothing was logged)."""
    path = Path(run_dir) / "log.jsonl"
    if not path.exists():
        return pd.DataFrame(columns=["step", "epoch"])
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return pd.DataFrame(rows)


def list_runs(root: str | Path = "runs") -> list[Path]:
    """Every finished run directory under ``root``, oldest first."""
    root = Path(root)
    if not root.exists():
        return []
    found = [p.parent for p in root.rglob("metrics.json") if (p.parent / "config.yaml").exists()]
    return sorted(found, key=lambda p: (p / "metrics.json").stat().st_mtime)


def _flatten(values: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value if not isinstance(value, list) else str(value)
    return flat


def config_differences(configs: list[Config]) -> pd.DataFrame:
    """The config keys whose values differ between runs, one row per config (``run.*`` keys left out)."""
    flat = pd.DataFrame([_flatten(c.to_dict()) for c in configs])
    varying = [c for c in flat.columns if not c.startswith("run.") and flat[c].astype(str).nunique() > 1]
    return flat[varying]


def leaderboard(root: str | Path = "runs", metric: str | None = None) -> pd.DataFrame:
    """One row per finished run under ``root``: the settings that differ, scores, training time and speed.

    Args:
        root: the runs root (``run.root``).
        metric: the score to sort by (default: each run's monitored metric, e.g. accuracy or micro_f1).

    Returns:
        A DataFrame sorted best first with columns ``run``, ``dataset``, the differing config keys,
        ``val_<metric>`` / ``test_<metric>`` for the summary metrics, ``train_s``, ``samples_per_s``,
        ``epochs`` and ``finished``. Empty when there are no runs.
    """
    from workbench.trainer import SUMMARY_METRICS

    runs = [load_run(p) for p in list_runs(root)]
    if not runs:
        return pd.DataFrame(columns=["run", "dataset", "train_s", "samples_per_s"])
    rows = []
    for run in runs:
        m, train = run.metrics, run.metrics.get("train", {})
        row = {"run": run.name, "path": str(run.path),
               "dataset": run.config.data.dataset or Path(run.config.data.train_file or "?").name,
               "monitor": m.get("monitor")}
        for split, short in (("validation", "val"), ("test", "test")):
            for key in SUMMARY_METRICS:
                if m.get(split, {}).get(key) is not None:
                    row[f"{short}_{key}"] = m[split][key]
        row.update({"train_s": train.get("runtime_s"), "samples_per_s": train.get("samples_per_s"),
                    "epochs": train.get("epochs"),
                    "finished": pd.Timestamp((run.path / "metrics.json").stat().st_mtime, unit="s").floor("s")})
        rows.append(row)
    table = pd.DataFrame(rows)
    differences = config_differences([r.config for r in runs]).drop(columns=["data.dataset"], errors="ignore")
    table = pd.concat([table.iloc[:, :3], differences.reset_index(drop=True), table.iloc[:, 3:]], axis=1)
    metric = metric or f"val_{table['monitor'].mode().iloc[0]}"
    if metric not in table:
        raise WorkbenchError(f"No run recorded '{metric}'. Available: "
                             f"{', '.join(c for c in table.columns if c.startswith(('val_', 'test_')))}.")
    return table.sort_values(metric, ascending="loss" in metric, na_position="last").reset_index(drop=True)


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
    thresholds: np.ndarray | None = None  # (K,) multi-label decision thresholds of the model

    def report(self) -> pd.DataFrame:
        """The per-class precision / recall / F1 / support table."""
        return pd.DataFrame(self.metrics["per_class"]).T if "per_class" in self.metrics else pd.DataFrame()


def _datamodule_for(run: Run, model):
    """The run's data, split and encoded exactly as in training, with the trained model's labels."""
    from workbench.data import LabelMap, TextDataModule

    dm = TextDataModule(config=run.config.data, model_name=str(run.path / "best"), tokenizer=model.tokenizer,
                        seed=run.config.train.seed)
    return dm.setup(label_map=LabelMap(model.label_names, model.multi_label))


def evaluate_run(run: Run | str | Path, split: str = "validation") -> Evaluation:
    """Score a run's best model on its own validation or test split (rebuilt from the saved data config).

    Args:
        run: a :class:`Run` or a run directory.
        split: ``validation`` or ``test``.
    """
    from workbench.trainer import Trainer

    run = run if isinstance(run, Run) else load_run(run)
    if split not in ("validation", "test"):
        raise WorkbenchError(f"split={split!r}: choose 'validation' or 'test'.")
    model = run.model()
    dm = _datamodule_for(run, model)
    dataset = dm.val_dataset if split == "validation" else dm.test_dataset
    if dataset is None:
        raise WorkbenchError(f"Run {run.path} has no test split: its data config names no test_file or test_split. "
                             "Use split='validation'.")
    proba = model.predict_proba_features(dataset)
    labels = np.asarray([f["labels"] for f in dataset.features])
    if model.multi_label:
        predicted = (proba >= model.thresholds).astype(int)
    else:
        predicted = proba.argmax(1)
    metrics = Trainer(checkpoint_dir=None).evaluate(model, dataset, proba)
    return Evaluation(split, list(model.label_names), model.multi_label, list(dataset.texts), labels, proba, predicted,
                      metrics, model.thresholds)


def ensure_run(run_dir: str | Path | None, **small_run: object) -> Run:
    """The run at ``run_dir``; when ``run_dir`` is None, train a small run first and return it.

    Args:
        run_dir: a finished run directory, or None.
        small_run: dotted config keys for the small run, e.g. ``{"data.dataset": "trec", "train.epochs": 1}``
            (``config`` may name a YAML file to start from).
    """
    if run_dir:
        return load_run(run_dir)
    from workbench.trainer import train

    overrides = dict(small_run)
    config_file = overrides.pop("config", None)
    result = train(load_config(config_file, {k: v for k, v in overrides.items()}))
    return load_run(result.run_dir)


def metrics_table(run: Run) -> pd.DataFrame:
    """The run's headline metrics: one row per split (validation, test), one column per summary metric."""
    from workbench.trainer import SUMMARY_METRICS

    rows = {split: {k: run.metrics[split].get(k) for k in SUMMARY_METRICS if run.metrics[split].get(k) is not None}
            for split in ("validation", "test") if split in run.metrics}
    return pd.DataFrame(rows).T


def training_facts(run: Run) -> dict:
    """Time, speed and the best checkpoint of a run, as one flat dict for display and reports."""
    train = run.metrics.get("train", {})
    return {"run_dir": str(run.path), "monitor": run.metrics.get("monitor"), "best_metric": run.metrics.get("best_metric"),
            "train_s": train.get("runtime_s"), "samples_per_s": train.get("samples_per_s"),
            "epochs": train.get("epochs"), "optimizer_steps": train.get("optimizer_steps"),
            "device": run.metrics.get("device"), "precision": run.metrics.get("precision")}


def calibrate_run(run: Run | str | Path, save: bool = True) -> dict:
    """Fit temperature scaling on the run's validation split and (by default) save it with the best model.

    Writes ``calibration.json`` (temperature, ECE / Brier / NLL before and after) into the run directory
    and re-saves ``best/`` with the temperature, so later predictions are calibrated.
    """
    from workbench.calibration import calibrate_model

    run = run if isinstance(run, Run) else load_run(run)
    model = run.model()
    report = calibrate_model(model, _datamodule_for(run, model).val_dataset)
    if save:
        model.save_pretrained(run.path / "best")
        (run.path / "calibration.json").write_text(json.dumps(report, indent=2))
    return report
