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
evaluation. A pruner sees every evaluation and, after ``tune.pruner_warmup_epochs``, stops trials that trail
the others. Failed and pruned trials are recorded with their reason and never stop the study. Trials never
resume, so their checkpoints hold the model only (``train.save_only_model``). The study lives in ``study.db``
(SQLite) in the study's folder unless ``storage`` names another Optuna storage (e.g. a PostgreSQL URL); running
the same study name again continues it. Several worker processes on one machine (``workers=2``) share Optuna's
journal file ``study.journal`` instead, since SQLite must not be shared; several machines share a PostgreSQL
URL. The best trial is marked by ``best_trial.json`` and a ``best_trial`` link::

    result = tune(load_config("configs/trec.yaml", ["tune.trials=20"]))
    result.best["value"], result.best["params"], result.trials_table()
"""

from __future__ import annotations

import json
import logging
import multiprocessing
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
from workbench.track import StudyRun, close_study_run, mark_pruned, mlflow_uri, study_parent_run
from workbench.trainer import train

log = logging.getLogger(__name__)
STUDY_DB, STUDY_JOURNAL = "study.db", "study.journal"
BEST_FILE, BEST_LINK, RETRAIN_FILE = "best_trial.json", "best_trial", "retrain.json"
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
    """Reports each evaluation's monitored metric to the Optuna trial and stops the trial when the pruner says so,
    from ``warmup_epochs`` on.

    Reports are numbered by optimizer step, so trials of different batch sizes reach an epoch at different steps;
    the warm-up is therefore counted here in epochs (``state.epoch``), not as the pruner's ``n_warmup_steps``.
    """

    def __init__(self, trial: optuna.Trial, metric: str, warmup_epochs: float = 0.0):
        self.trial, self.key, self.warmup_epochs = trial, f"eval_{metric}", warmup_epochs

    def on_train_begin(self, args, state, control, **kwargs):
        self.trial.set_user_attr("run_dir", str(RunDir.of_checkpoints(args.output_dir).path.resolve()))

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not metrics or self.key not in metrics:
            return
        self.trial.report(float(metrics[self.key]), step=state.global_step)
        if (state.epoch or 0.0) >= self.warmup_epochs and self.trial.should_prune():
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
    """The config of trial ``number``: ``config`` with the suggested ``values``, its run in ``folder``; its
    checkpoints hold the model only, since a trial is never resumed (a failed one is tried afresh)."""
    return config.updated(
        {**values, "run.root": str(folder), "run.name": f"{TRIAL_PREFIX}{number}", "train.save_only_model": True}
    )


@dataclass
class TuneResult:
    """A finished (or stopped) study: the Optuna study, its folder and the best trial (None if none completed)."""

    study: optuna.Study
    folder: Path
    best: dict | None

    def trials_table(self) -> pd.DataFrame:
        """One row per trial: number, state, value, the suggested parameters, the evaluations it reported and the
        last of them, seconds, run directory and the reason it was pruned or failed."""
        rows = []
        for t in self.study.trials:
            seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else None
            reported = [t.intermediate_values[step] for step in sorted(t.intermediate_values)]
            rows.append(
                {
                    "trial": t.number,
                    "state": t.state.name,
                    "value": t.value,
                    **t.params,
                    "evaluations": len(reported),
                    "last_value": reported[-1] if reported else None,
                    "seconds": seconds,
                    "run_dir": t.user_attrs.get("run_dir"),
                    "reason": t.user_attrs.get("reason"),
                }
            )
        return pd.DataFrame(rows)

    def importances(self) -> dict[str, float]:
        """Each searched parameter's importance to the objective (Optuna's fANOVA evaluator), summing to 1;
        empty while fewer than two completed trials differ in their parameters."""
        try:
            return optuna.importance.get_param_importances(self.study)
        except (ValueError, RuntimeError):  # too few completed trials, or nothing varies
            return {}


def storage_of(url: str, attempts: int = 4) -> optuna.storages.BaseStorage:
    """The Optuna storage behind ``url``: a journal file (a path, no ``://``), or an RDB with heartbeats.
    Workers that start together on a new database race to create its tables; the losers see a
    duplicate-object error and find the tables on their next try."""
    if "://" not in url and url.endswith(".db"):  # a SQLite file named by its path, as `storage_url` accepts
        url = _sqlite_url(Path(url))
    if "://" not in url:
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(url))
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():  # heartbeats are marked experimental in Optuna
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))


def _default_storage(folder: Path, workers: int) -> str:
    """SQLite in the study's folder for one worker; the journal file for several (or one that continues them)."""
    journal, database = folder / STUDY_JOURNAL, folder / STUDY_DB
    if workers > 1 and database.exists():
        raise ConfigError(
            f"Study '{folder.name}' lives in {database} (SQLite), which several processes must not "
            "share. Continue it with --workers 1, or start a new study name for --workers "
            f"{workers} (a journal file), or give --storage postgresql://..."
        )
    return str(journal) if workers > 1 or journal.exists() else _sqlite_url(database)


def _sampler(config: Config, worker: int = 0, workers: int = 1) -> optuna.samplers.BaseSampler:
    # each worker draws its own stream; the constant liar keeps parallel workers off the points in flight
    return optuna.samplers.TPESampler(seed=config.train.seed + worker, constant_liar=workers > 1)


def open_study(config: Config, storage: str | None = None, workers: int = 1) -> tuple[optuna.Study, Path]:
    """Create the study named ``run.name`` (or load it to continue), checking it searches the same space.

    Args:
        config: the experiment (``run.root``/``run.name`` is the study's folder).
        storage: an Optuna storage URL, or a journal file path; default: see :func:`tune`.
        workers: worker processes that will share the study (more than one needs a shareable storage).

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
    url = storage or _default_storage(folder, workers)
    try:
        study = optuna.create_study(
            study_name=config.run.name,
            storage=storage_of(url),
            direction=direction,
            load_if_exists=True,
            sampler=_sampler(config, 0, workers),
            pruner=_pruner(config.tune.pruner),
        )
    except ValueError as exc:  # an existing study with another direction
        raise ConfigError(
            f"Study '{config.run.name}' in {url} cannot be continued: {exc}. Use another run.name."
        ) from None
    except Exception as exc:  # SQLAlchemy's errors for an unreachable or garbled storage
        raise ConfigError(
            f"Cannot open the study storage {url}: {str(exc).splitlines()[0]}. Check the URL "
            "(e.g. postgresql://user@127.0.0.1:5432/db), or leave --storage out for SQLite."
        ) from None
    recorded = study.user_attrs.get("space")
    if recorded is None:
        study.set_user_attr("space", space)
        study.set_user_attr("metric", metric)
    elif recorded != space or study.user_attrs.get("metric") != metric:
        raise ConfigError(
            f"Study '{config.run.name}' in {url} searched {json.dumps(recorded)} for "
            f"{study.user_attrs.get('metric')}; this config asks for {json.dumps(space)} for {metric}. "
            "Use another run.name for a new search, or the same space to continue it."
        )
    return study, folder


def release_dead_trials(study: optuna.Study, storage: optuna.storages.BaseStorage) -> list[int]:
    """Mark failed the trials left running by a process of this machine that no longer exists (a kill -9).

    RDB storages also notice this through heartbeats after ``GRACE_S``; a journal file has no heartbeat, so
    without this a killed worker's trial would stay RUNNING for ever. Returns the numbers of the trials marked.
    """
    host, released = socket.gethostname(), []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker_host, _, pid = str(trial.user_attrs.get("worker", "")).rpartition(":")
        if worker_host == host and pid.isdigit() and not _alive(int(pid)):
            trial_id = storage.get_trial_id_from_study_id_trial_number(
                storage.get_study_id_from_name(study.study_name), trial.number
            )
            storage.set_trial_user_attr(trial_id, "reason", f"worker {pid} died mid-trial")
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            released.append(trial.number)
    if released:
        log.warning("Trials %s were left running by a process that died; marked failed.", released)
    return released


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    try:  # a killed worker whose parent died too stays a zombie until init reaps it
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


COUNTED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def _optimize(study: optuna.Study, config: Config, folder: Path, n_trials: int, study_run: StudyRun) -> None:
    """Run trials of ``study`` in this process until the study holds ``tune.trials`` counted ones."""
    space, metric = study.user_attrs["space"], study.user_attrs["metric"]

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        try:
            trial_cfg = trial_config(config, suggest(trial, space), folder, trial.number)
            result = train(
                trial_cfg, callbacks=[PruningCallback(trial, metric, config.tune.pruner_warmup_epochs)], study=study_run
            )
        except WorkbenchError as exc:
            trial.set_user_attr("reason", str(exc))
            raise
        except optuna.TrialPruned as exc:  # its trackers closed the run as failed; say what happened
            if "mlflow" in config.run.track and trial.user_attrs.get("run_dir"):
                mark_pruned(trial.user_attrs["run_dir"], str(exc))
            raise
        # the pruning callback names the run as training starts; a SetFit trial (no transformers Trainer) here
        trial.set_user_attr("run_dir", str(Path(result.run_dir).resolve()))
        return float(result.metrics["best_metric"])

    # trials that ran to an end count, those of every worker on the study; failed ones (a bad combination,
    # a killed process) are tried again
    study.optimize(
        objective,
        n_trials=n_trials,
        timeout=config.tune.timeout,
        catch=(WorkbenchError,),
        callbacks=[optuna.study.MaxTrialsCallback(config.tune.trials, states=COUNTED)],
        gc_after_trial=True,
    )


def _worker(config: Config, url: str, worker: int, workers: int, n_trials: int, study_run: StudyRun) -> None:
    """One of ``workers`` processes of :func:`tune`: its share of the machine's cores, its own sampler seed."""
    logging.basicConfig(level=logging.INFO, format=f"[worker {worker}] %(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    study = optuna.load_study(
        study_name=config.run.name,
        storage=storage_of(url),
        sampler=_sampler(config, worker, workers),
        pruner=_pruner(config.tune.pruner),
    )
    _optimize(study, config, Path(config.run.root) / config.run.name, n_trials, study_run)


def tune(config: Config, storage: str | None = None, workers: int = 1) -> TuneResult:
    """Run the study of ``config`` until it holds ``tune.trials`` finished trials (or ``tune.timeout`` passes).

    Args:
        config: the experiment; ``tune`` holds the space, trial count, timeout and pruner, and ``run.name``
            names the study (its folder is ``<run.root>/<run.name>``).
        storage: an Optuna storage URL (e.g. ``postgresql://user@host/db`` for workers on several machines);
            default: ``study.db`` (SQLite) in the study's folder, or ``study.journal`` with several workers.
        workers: processes on this machine filling the study together, each with an equal share of the
            cores. They may finish up to ``workers - 1`` trials beyond ``tune.trials`` (each checks the count
            when its trial ends).

    Returns:
        A :class:`TuneResult`; ``best_trial.json`` and the ``best_trial`` link are written in the study's folder.

    Example:
        >>> tune(load_config("configs/trec.yaml", ["tune.trials=20"]), workers=2).best["params"]
    """
    if workers < 1:
        raise ConfigError(f"--workers {workers} must be at least 1.")
    url = storage or _default_storage(Path(config.run.root) / config.run.name, workers)
    if workers > 1 and (url.startswith("sqlite:") or url.endswith(".db")):
        raise ConfigError(
            f"--workers {workers} cannot share the SQLite study {url}; leave --storage out (a journal "
            "file) or give a PostgreSQL URL."
        )
    study, folder = open_study(config, url, workers)
    release_dead_trials(study, storage_of(url))
    study_run = StudyRun(config.run.name)
    if "mlflow" in config.run.track:  # one MLflow run for the study, in the store of runs/, trials its children
        config = config.updated({"run.mlflow_uri": mlflow_uri(config.run.root, config.run.mlflow_uri)})
        if workers > 1 and config.run.mlflow_uri.startswith("sqlite:"):
            raise ConfigError(
                f"--workers {workers} with run.track=[mlflow] would have {workers} processes write one "
                f"SQLite file ({config.run.mlflow_uri}). Start `workbench ui mlflow` (an MLflow server) "
                "and set run.mlflow_uri=http://127.0.0.1:5000, or use one worker."
            )
        parent = study_parent_run(
            config, study.user_attrs.get("mlflow_run_id"), study.user_attrs["space"], study.user_attrs["metric"]
        )
        study.set_user_attr("mlflow_run_id", parent)
        study_run = StudyRun(config.run.name, parent)
    best = None
    try:
        remaining = config.tune.trials - sum(t.state in COUNTED for t in study.trials)
        if remaining > 0 and workers == 1:
            _optimize(study, config, folder, remaining, study_run)
        elif remaining > 0:
            context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch thread pools
            processes = [
                context.Process(
                    target=_worker,
                    args=(config, url, index, workers, remaining, study_run),
                    name=f"tune-worker-{index}",
                )
                for index in range(workers)
            ]
            for process in processes:
                process.start()
            for process in processes:
                process.join()
            failed = [p.name for p in processes if p.exitcode != 0]
            if failed:
                log.warning("Workers %s stopped with an error; the study keeps what they finished.", failed)
        best = mark_best(study, folder)
    finally:  # also on Ctrl-C: the study's MLflow run is not left RUNNING
        if study_run.mlflow_run_id:
            close_study_run(config, study_run.mlflow_run_id, best)
    return TuneResult(study, folder, best)


def mark_best(study: optuna.Study, folder: Path) -> dict | None:
    """Write ``best_trial.json`` and point the ``best_trial`` link at its run; None when no trial completed."""
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        log.warning("Study %s has no completed trial yet.", study.study_name)
        return None
    best = study.best_trial
    record = {
        "study": study.study_name,
        "trial": best.number,
        "value": best.value,
        "metric": study.user_attrs.get("metric"),
        "direction": study.direction.name.lower(),
        "params": best.params,
        "run_dir": best.user_attrs.get("run_dir"),
        "completed": len(completed),
        "trials": len(study.trials),
    }
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
    if "mlflow" in config.run.track:  # the retrained runs report to the store of runs/, like the trials
        config = config.updated({"run.mlflow_uri": mlflow_uri(config.run.root, config.run.mlflow_uri)})
    rows = []
    for offset in range(seeds):
        seed = config.train.seed + offset
        for name, changes in (("tuned", best["params"]), ("untuned", {})):
            result = train(
                config.updated(
                    {
                        **changes,
                        "train.seed": seed,
                        "run.root": str(folder / "retrain"),
                        "run.name": f"{name}_seed{seed}",
                    }
                )
            )
            split = "test" if "test" in result.metrics else "validation"
            rows.append(
                {
                    "config": name,
                    "seed": seed,
                    "split": split,
                    "value": result.metrics[split].get(metric),
                    "run_dir": str(result.run_dir),
                }
            )
    table = pd.DataFrame(rows)
    summary = {"metric": metric, "split": rows[0]["split"], "seeds": seeds, "params": best["params"], "runs": rows}
    for name, group in table.groupby("config"):
        summary[name] = {
            "mean": float(group["value"].mean()),
            "std": float(group["value"].std(ddof=1)) if seeds > 1 else 0.0,
        }
    (folder / RETRAIN_FILE).write_text(json.dumps(summary, indent=2))
    return summary


def storage_url(target: str | Path) -> str:
    """The storage of a study: a study folder (its ``study.journal`` or ``study.db``), one of those files, or a
    URL as it is. The result opens with :func:`storage_of`.

    Raises:
        ConfigError: for a folder or file that holds no study.
    """
    text = str(target)
    if "://" in text:
        return text
    path = Path(text)
    if path.is_dir():
        path = path / STUDY_JOURNAL if (path / STUDY_JOURNAL).is_file() else path / STUDY_DB
    if not path.is_file():
        raise ConfigError(
            f"{path} holds no study ({STUDY_DB} or {STUDY_JOURNAL} missing). Give a study folder "
            "written by `workbench tune` (runs/<study>), its study file, or a storage URL."
        )
    return str(path) if path.name.endswith(".journal") else _sqlite_url(path)


def study_exists(config: Config, storage: str | None = None) -> bool:
    """Whether the study ``run.name`` already exists in ``storage`` (default: the study's folder)."""
    try:
        url = storage or storage_url(Path(config.run.root) / config.run.name)
        return config.run.name in optuna.study.get_all_study_names(storage_of(url))
    except ConfigError:
        return False
    except Exception as exc:  # an unreachable server
        raise ConfigError(
            f"Cannot open the study storage {storage or config.run.name}: {str(exc).splitlines()[0]}."
        ) from None


def _sqlite_url(database: Path) -> str:
    return f"sqlite:///{database.resolve()}"
