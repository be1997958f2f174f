"""Hyperparameter search with Optuna: every trial is an ordinary run, the study is an Optuna study.

The experiment YAML holds the search space in its ``tune`` section (keys are dotted config keys; see
:data:`workbench.config.SEARCH_DISTRIBUTIONS`), and the rest of the config is each trial's starting point::

    tune:
      space:
        train.lr: {log_uniform: [1.0e-5, 3.0e-4]}
        data.batch_size: {choice: [16, 32, 64]}
      trials: 20
      pruner: median

Optuna's TPE sampler (seeded with ``train.seed``) proposes values; each trial trains a normal run into
``<run.root>/<run.name>/trial_<n>/version_0`` (so the leaderboard, ``workbench evaluate`` and the notebooks
work on trials unchanged); the objective is the monitored validation metric at the trial's *best*
evaluation. A pruner sees every evaluation and stops trials that trail the others. Failed and pruned trials
are recorded with their reason and never stop the study. The study lives in ``study.db`` (SQLite) in the
study's folder unless ``storage`` names another Optuna storage (e.g. a PostgreSQL URL); running the same
study name again continues it. The best trial is marked by ``best_trial.json`` and a ``best_trial`` link::

    result = tune(load_config("configs/trec.yaml", ["tune.trials=20"]))
    result.best["value"], result.best["params"], result.trials_table()
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
import pandas as pd
import sqlalchemy.exc
from transformers import TrainerCallback

from workbench.config import DEFAULT_SEARCH_SPACE, Config, check_search_space
from workbench.data import TextDataModule
from workbench.errors import ConfigError, WorkbenchError
from workbench.metrics import greater_is_better, monitored_metric
from workbench.runs import RunDir, point_link
from workbench.trainer import train

log = logging.getLogger(__name__)
STUDY_DB, BEST_FILE, BEST_LINK, RETRAIN_FILE = "study.db", "best_trial.json", "best_trial", "retrain.json"
TRIAL_PREFIX = "trial_"
# A running trial writes a heartbeat this often; one silent for GRACE_S (its process was killed) is marked
# failed when the study next runs, so a study killed with SIGKILL continues cleanly.
HEARTBEAT_S, GRACE_S = 10, 60


def suggest(trial: optuna.Trial, space: dict) -> dict:
    """One value per search-space key, drawn by ``trial``: ``{"train.lr": 3.1e-05, ...}``."""
    values = {}
    for key, spec in space.items():
        kind, args = next(iter(spec.items()))
        if kind == "log_uniform":
            values[key] = trial.suggest_float(key, args[0], args[1], log=True)
        elif kind == "uniform":
            values[key] = trial.suggest_float(key, args[0], args[1])
        elif kind == "int":
            values[key] = trial.suggest_int(key, int(args[0]), int(args[1]))
        else:
            values[key] = trial.suggest_categorical(key, args)
    return values


class PruningCallback(TrainerCallback):
    """Reports each evaluation's monitored metric to the Optuna trial and stops the trial when the pruner says so."""

    def __init__(self, trial: optuna.Trial, metric: str):
        self.trial, self.key = trial, f"eval_{metric}"

    def on_train_begin(self, args, state, control, **kwargs):
        self.trial.set_user_attr("run_dir", str(RunDir.of_checkpoints(args.output_dir).path.resolve()))

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not metrics or self.key not in metrics:
            return
        self.trial.report(float(metrics[self.key]), step=state.global_step)
        if self.trial.should_prune():
            message = f"pruned at step {state.global_step}: {self.key} = {metrics[self.key]:.4f}"
            self.trial.set_user_attr("reason", message)
            raise optuna.TrialPruned(message)


def _pruner(name: str) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


def trial_config(config: Config, values: dict, folder: Path, number: int) -> Config:
    """The config of trial ``number``: ``config`` with the suggested ``values``, its run in ``folder``."""
    return config.updated({**values, "run.root": str(folder), "run.name": f"{TRIAL_PREFIX}{number}"})


@dataclass
class TuneResult:
    """A finished (or stopped) study: the Optuna study, its folder and the best trial (None if none completed)."""

    study: optuna.Study
    folder: Path
    best: dict | None

    def trials_table(self) -> pd.DataFrame:
        """One row per trial: number, state, value, the suggested parameters, seconds, run directory, reason."""
        rows = []
        for t in self.study.trials:
            seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else None
            rows.append({"trial": t.number, "state": t.state.name, "value": t.value, **t.params, "seconds": seconds,
                         "run_dir": t.user_attrs.get("run_dir"), "reason": t.user_attrs.get("reason")})
        return pd.DataFrame(rows)


def _storage(url: str, attempts: int = 4) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage with heartbeats. Workers that start together on a new database race to create
    its tables; the losers see a duplicate-object error and find the tables on their next try."""
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():  # heartbeats are marked experimental in Optuna
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))


def open_study(config: Config, storage: str | None = None) -> tuple[optuna.Study, Path]:
    """Create the study named ``run.name`` (or load it to continue), checking it searches the same space.

    Raises:
        ConfigError: when the storage cannot be opened, or the existing study has another space or objective.
    """
    folder = Path(config.run.root) / config.run.name
    folder.mkdir(parents=True, exist_ok=True)
    space = config.tune.space or DEFAULT_SEARCH_SPACE
    check_search_space(space)
    multi_label = TextDataModule(config=config.data).multi_label
    metric = monitored_metric(config.train.monitor, multi_label=multi_label)
    direction = "maximize" if greater_is_better(metric) else "minimize"
    url = storage or _sqlite_url(folder / STUDY_DB)
    try:
        rdb = _storage(url)
        study = optuna.create_study(study_name=config.run.name, storage=rdb, direction=direction, load_if_exists=True,
                                    sampler=optuna.samplers.TPESampler(seed=config.train.seed),
                                    pruner=_pruner(config.tune.pruner))
    except ValueError as exc:  # an existing study with another direction
        raise ConfigError(f"Study '{config.run.name}' in {url} cannot be continued: {exc}. "
                          "Use another run.name.") from None
    except Exception as exc:  # SQLAlchemy's errors for an unreachable or garbled storage
        raise ConfigError(f"Cannot open the study storage {url}: {str(exc).splitlines()[0]}. Check the URL "
                          "(e.g. postgresql://user@127.0.0.1:5432/db), or leave --storage out for SQLite.") from None
    recorded = study.user_attrs.get("space")
    if recorded is None:
        study.set_user_attr("space", space)
        study.set_user_attr("metric", metric)
    elif recorded != space or study.user_attrs.get("metric") != metric:
        raise ConfigError(f"Study '{config.run.name}' in {url} searched {json.dumps(recorded)} for "
                          f"{study.user_attrs.get('metric')}; this config asks for {json.dumps(space)} for {metric}. "
                          "Use another run.name for a new search, or the same space to continue it.")
    return study, folder


def tune(config: Config, storage: str | None = None) -> TuneResult:
    """Run the study of ``config`` until it holds ``tune.trials`` finished trials (or ``tune.timeout`` passes).

    Args:
        config: the experiment; ``tune`` holds the space, trial count, timeout and pruner, and ``run.name``
            names the study (its folder is ``<run.root>/<run.name>``).
        storage: an Optuna storage URL; default SQLite in the study's folder.

    Returns:
        A :class:`TuneResult`; ``best_trial.json`` and the ``best_trial`` link are written in the study's folder.
    """
    study, folder = open_study(config, storage)
    space, metric = study.user_attrs["space"], study.user_attrs["metric"]

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        try:
            trial_cfg = trial_config(config, suggest(trial, space), folder, trial.number)
            result = train(trial_cfg, callbacks=[PruningCallback(trial, metric)])
        except WorkbenchError as exc:
            trial.set_user_attr("reason", str(exc))
            raise
        return float(result.metrics["best_metric"])

    # trials that ran to an end count, those of every worker on the study; failed ones (a bad combination,
    # a killed process) are tried again
    counted = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    remaining = config.tune.trials - sum(t.state in counted for t in study.trials)
    if remaining > 0:
        study.optimize(objective, n_trials=remaining, timeout=config.tune.timeout, catch=(WorkbenchError,),
                       callbacks=[optuna.study.MaxTrialsCallback(config.tune.trials, states=counted)],
                       gc_after_trial=True)
    return TuneResult(study, folder, mark_best(study, folder))


def mark_best(study: optuna.Study, folder: Path) -> dict | None:
    """Write ``best_trial.json`` and point the ``best_trial`` link at its run; None when no trial completed."""
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        log.warning("Study %s has no completed trial yet.", study.study_name)
        return None
    best = study.best_trial
    record = {"study": study.study_name, "trial": best.number, "value": best.value,
              "metric": study.user_attrs.get("metric"), "direction": study.direction.name.lower(),
              "params": best.params, "run_dir": best.user_attrs.get("run_dir"),
              "completed": len(completed), "trials": len(study.trials)}
    (folder / BEST_FILE).write_text(json.dumps(record, indent=2))
    point_link(folder / BEST_LINK, Path(record["run_dir"]).resolve())
    return record


def retrain_best(config: Config, best: dict, seeds: int = 3) -> dict:
    """Retrain the best trial's settings and the untuned ``config`` on ``seeds`` seeds each, side by side.

    Seeds are ``train.seed``, ``train.seed + 1``, ... ; runs go to ``<study folder>/retrain/{tuned,untuned}_seed<s>``.
    Each run is scored on its test split when the config has one, else on validation, by the monitored metric.

    Returns:
        ``{"metric", "split", "runs": [{config, seed, value, run_dir}], "tuned": {mean, std}, "untuned": {...}}``,
        also written to ``retrain.json`` in the study's folder.
    """
    folder = Path(config.run.root) / config.run.name
    metric = best["metric"]
    rows = []
    for offset in range(seeds):
        seed = config.train.seed + offset
        for name, changes in (("tuned", best["params"]), ("untuned", {})):
            result = train(config.updated({**changes, "train.seed": seed, "run.root": str(folder / "retrain"),
                                           "run.name": f"{name}_seed{seed}"}))
            split = "test" if "test" in result.metrics else "validation"
            rows.append({"config": name, "seed": seed, "split": split, "value": result.metrics[split].get(metric),
                         "run_dir": str(result.run_dir)})
    table = pd.DataFrame(rows)
    summary = {"metric": metric, "split": rows[0]["split"], "seeds": seeds, "params": best["params"], "runs": rows}
    for name, group in table.groupby("config"):
        summary[name] = {"mean": float(group["value"].mean()),
                         "std": float(group["value"].std(ddof=1)) if seeds > 1 else 0.0}
    (folder / RETRAIN_FILE).write_text(json.dumps(summary, indent=2))
    return summary


def storage_url(target: str | Path) -> str:
    """The storage URL of a study: a study folder (its ``study.db``), a ``.db`` file, or a URL as it is.

    Raises:
        ConfigError: for a folder or file that holds no study.
    """
    text = str(target)
    if "://" in text:
        return text
    path = Path(text)
    database = path / STUDY_DB if path.is_dir() else path
    if not database.is_file():
        raise ConfigError(f"{path} holds no study ({STUDY_DB} missing). Give a study folder written by "
                          "`workbench tune` (runs/<study>), its study.db, or a storage URL.")
    return _sqlite_url(database)


def _sqlite_url(database: Path) -> str:
    return f"sqlite:///{database.resolve()}"
