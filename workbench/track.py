"""Experiment tracking: TensorBoard, Weights & Biases and MLflow, switched on per run by ``run.track``.

The run directory stays the record of every run; a tracker receives a copy. Training reports through
transformers' own callbacks (``TensorBoardCallback``, ``WandbCallback``, ``MLflowCallback``), which this module
builds and points at the right place before training starts:

- **tensorboard**: event files in ``<run dir>/tensorboard`` (``workbench ui tensorboard runs``).
- **wandb**: offline unless a key is configured (``WANDB_API_KEY``, or ``wandb login``'s ``~/.netrc`` entry; or
  set ``WANDB_MODE``); files in ``<run dir>/wandb``. ``wandb sync <run dir>/wandb/offline-run-*`` uploads one
  later. The project is ``$WANDB_PROJECT`` or ``workbench``.
- **mlflow**: the store is ``run.mlflow_uri``, else ``$MLFLOW_TRACKING_URI``, else SQLite ``<run.root>/mlflow.db``
  with artifacts in ``<run.root>/mlartifacts`` (``workbench ui mlflow runs``). The experiment is
  ``$MLFLOW_EXPERIMENT_NAME`` or ``workbench``. Tuning trials are child runs of their study's run.

Each tracker gets the full resolved config (flattened dotted keys), the seed, the git commit and a
description of the data as params/tags, every logged step and evaluation, and the final metrics. The
trackers' run ids are kept in ``<run dir>/tracking.json``, so a resumed run reports to the same runs and
``workbench register`` finds the MLflow run of a run directory::

    train(load_config("configs/trec.yaml", ["run.track=[tensorboard,mlflow]"]))
"""

from __future__ import annotations

import importlib.util
import json
import logging
import netrc
import os
from dataclasses import dataclass
from pathlib import Path

import yaml
from transformers import TrainerCallback

from workbench.config import Config
from workbench.errors import ConfigError, ModelLoadError
from workbench.runs import RunDir

log = logging.getLogger(__name__)
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}  # tracker -> what to pip install
EXPERIMENT = "workbench"
MLFLOW_DB, MLFLOW_ARTIFACTS = "mlflow.db", "mlartifacts"
REGISTRY_PREFIX = "models:/"
REGISTERED_ARTIFACT = "model"  # the key of the saved model folder among a registered pyfunc model's artifacts


def check_installed(trackers: list[str]) -> None:
    """Raise a one-line :class:`ConfigError` for a tracker whose package is missing."""
    for name in trackers:
        if importlib.util.find_spec(PACKAGES[name]) is None:
            raise ConfigError(
                f"run.track names {name}, which is not installed: pip install {PACKAGES[name]} "
                f"(or remove {name} from run.track)."
            )


def mlflow_uri(root: str | Path = "runs", uri: str | None = None) -> str:
    """The MLflow tracking URI: ``uri``, else ``$MLFLOW_TRACKING_URI``, else SQLite ``<root>/mlflow.db``."""
    chosen = uri or os.environ.get("MLFLOW_TRACKING_URI")
    return chosen or f"sqlite:///{(Path(root) / MLFLOW_DB).resolve()}"


def mlflow_experiment(uri: str) -> str:
    """Point MLflow at ``uri`` and return the id of the experiment runs go to (created on first use, with its
    artifacts in ``mlartifacts`` beside a SQLite store)."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri[len("sqlite:///") :]).parent / MLFLOW_ARTIFACTS).resolve().as_uri()
    try:
        return mlflow.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:  # another process created it first
        return mlflow.get_experiment_by_name(name).experiment_id


def _params(config: Config, environment: dict, data: str) -> tuple[dict, dict]:
    """(params, tags): the flattened config plus the seed; the commit, the data description, the run's place."""
    params = {
        key: json.dumps(value) if isinstance(value, (list, dict)) else value for key, value in config.flat().items()
    }
    params["seed"] = config.train.seed
    tags = {"git_commit": str(environment.get("git_commit")), "data": data, "workbench.run": config.run.name}
    return params, tags


def final_scalars(metrics: dict) -> dict[str, float]:
    """The numbers of a run's ``metrics.json`` worth a chart, e.g.
    ``{"validation.accuracy": 0.91, "test.macro_f1": ...}``."""
    out = {}
    for split in ("validation", "test"):
        for key, value in (metrics.get(split) or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[f"{split}.{key}"] = float(value)
    for key in ("best_metric",):
        if isinstance(metrics.get(key), (int, float)):
            out[key] = float(metrics[key])
    return out


def _wandb_mode() -> str:
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        return "online" if netrc.netrc().authenticators("api.wandb.ai") else "offline"
    except (OSError, netrc.NetrcParseError):
        return "offline"


def tracked_ids(run_dir: str | Path) -> dict:
    """The tracker run ids a run directory recorded (``tracking.json``): ``{"mlflow_run_id": ..., ...}``, or {}."""
    path = RunDir(run_dir) / RunDir.TRACKING
    return json.loads(path.read_text()) if path.exists() else {}


@dataclass(frozen=True)
class StudyRun:
    """The tuning study a trial belongs to: its name (the W&B group) and its MLflow run (the trial's parent)."""

    name: str
    mlflow_run_id: str | None = None


class Tracking:
    """The trackers of one run: started before training, given the final metrics after it.

    Args:
        config: the run's resolved config (``run.track`` names the trackers).
        run: its run directory.
        environment: what ``env.json`` records (the git commit is taken from it).
        data: one line describing the data, e.g. ``"trec: 4906 train / 545 validation / 500 test, 6 labels"``.
        study: the tuning study this run is a trial of, if any.

    Example:
        >>> tracking = Tracking(config, run_dir, environment, "trec: ...")
        >>> callbacks = tracking.start()        # pass to transformers.Trainer
        >>> tracking.finish(metrics)            # or tracking.finish(None) when training failed
    """

    def __init__(self, config: Config, run: RunDir, environment: dict, data: str, study: StudyRun | None = None):
        check_installed(config.run.track)
        self.config, self.run, self.data, self.study = config, run, data, study
        self.params, self.tags = _params(config, environment, data)
        self.ids = tracked_ids(run.path)
        self._wandb = self._mlflow = self._writer = None

    @property
    def label(self) -> str:
        return f"{self.config.run.name}/{self.run.path.name}"

    def start(self) -> list[TrainerCallback]:
        """Open each tracker's run (or reopen it, for a resumed run) and return the callbacks that feed it."""
        from transformers.integrations import MLflowCallback, TensorBoardCallback, WandbCallback

        callbacks: list[TrainerCallback] = []
        track = self.config.run.track
        if "tensorboard" in track:
            self._writer = self._tensorboard_writer()
            self._writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in self.params.items()))
            self._writer.add_text("data", self.data)
            callbacks.append(TensorBoardCallback(tb_writer=self._writer))
        if "wandb" in track:
            import wandb

            self._wandb = wandb.init(
                project=os.environ.get("WANDB_PROJECT", EXPERIMENT),
                dir=str(self.run.path.resolve()),
                name=self.label,
                id=self.ids.get("wandb_run_id"),
                resume="allow",
                mode=_wandb_mode(),
                config=self.params,
                tags=[f"data:{self.config.data.dataset or 'files'}"],
                notes=self.data,
                group=self.study.name if self.study else None,
                reinit="finish_previous",
                settings=wandb.Settings(console="off", silent=True),
            )
            self.ids["wandb_run_id"] = self._wandb.id
            callbacks.append(WandbCallback())
        if "mlflow" in track:
            import mlflow

            experiment = mlflow_experiment(mlflow_uri(self.config.run.root, self.config.run.mlflow_uri))
            run_id = self.ids.get("mlflow_run_id")
            self._mlflow = mlflow.start_run(  # under the user's own active run, if a notebook has one open
                run_id=run_id,
                experiment_id=None if run_id else experiment,
                run_name=self.label,
                nested=mlflow.active_run() is not None,
                parent_run_id=None if run_id or not self.study else self.study.mlflow_run_id,
                tags=None if run_id else {**self.tags, "workbench.run_dir": str(self.run.path.resolve())},
            )
            if not run_id:
                mlflow.log_params(self.params)
            self.ids["mlflow_run_id"] = self._mlflow.info.run_id
            callbacks.append(MLflowCallback())
        self.run.write_json(RunDir.TRACKING, self.ids)
        return callbacks

    def _tensorboard_writer(self):
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(log_dir=str(self.run / RunDir.TENSORBOARD))

    def finish(self, metrics: dict | None, status: str = "FAILED") -> None:
        """Send the final metrics (validation, test, best) to each tracker and close its run; without metrics
        (training raised, or was pruned or interrupted) the runs end with ``status`` (MLflow's FAILED or KILLED)."""
        scalars = final_scalars(metrics) if metrics else {}
        step = (metrics or {}).get("train", {}).get("optimizer_steps", 0)
        if self._writer is not None:
            self._writer.close()  # transformers closes it only when training ends normally; closing twice is fine
        if self._writer is not None and scalars:
            writer = self._tensorboard_writer()
            for key, value in scalars.items():
                writer.add_scalar(f"final/{key}", value, step)
            writer.close()
        if self._wandb is not None:
            self._wandb.summary.update({f"final/{key}": value for key, value in scalars.items()})
            self._wandb.finish(exit_code=0 if metrics else 1)
        if self._mlflow is not None:
            import mlflow

            mlflow.flush_async_logging()  # transformers' callback logs asynchronously
            if scalars:
                mlflow.log_metrics({f"final.{key}": value for key, value in scalars.items()}, step=step)
            mlflow.end_run("FINISHED" if metrics else status)


def data_description(name: str | None, sizes: dict[str, int], labels: list[str]) -> str:
    """``"trec: 4906 train / 545 validation / 500 test, 6 labels"``."""
    parts = " / ".join(f"{n} {split}" for split, n in sizes.items() if n)
    return f"{name or 'data files'}: {parts}, {len(labels)} labels"


# -- a tuning study's parent run ----------------------------------------------------------------


def study_parent_run(config: Config, existing: str | None, space: dict, metric: str) -> str:
    """The MLflow run of a tuning study (created when ``existing`` is None), under which trials are child runs."""
    import mlflow

    check_installed(["mlflow"])
    experiment = mlflow_experiment(mlflow_uri(config.run.root, config.run.mlflow_uri))
    client = mlflow.MlflowClient()
    if existing:
        try:
            client.get_run(existing)
            return existing
        except mlflow.exceptions.MlflowException:  # the store was replaced: a new parent run
            log.warning(
                "The study's MLflow run %s is not in %s; starting a new one.", existing, mlflow.get_tracking_uri()
            )
    run = client.create_run(
        experiment,
        run_name=f"study {config.run.name}",
        tags={"workbench.study": config.run.name, "data": config.data.dataset or "data files"},
    )
    client.log_param(run.info.run_id, "space", json.dumps(space))
    client.log_param(run.info.run_id, "metric", metric)
    return run.info.run_id


def close_study_run(config: Config, run_id: str, best: dict | None) -> None:
    """Record the study's best value and settings on its MLflow run and mark it finished."""
    import mlflow

    client = mlflow.MlflowClient(mlflow_uri(config.run.root, config.run.mlflow_uri))
    if best:
        client.log_metric(run_id, f"best.{best['metric']}", best["value"])
        client.set_tag(run_id, "best_trial", str(best["trial"]))
        client.set_tag(run_id, "best_params", json.dumps(best["params"]))
    client.set_terminated(run_id)


def mark_pruned(run_dir: str | Path, reason: str) -> None:
    """Mark a trial's MLflow run KILLED with the pruner's reason (training ended it as FAILED)."""
    import mlflow

    run_id = tracked_ids(run_dir).get("mlflow_run_id")
    if run_id:
        client = mlflow.MlflowClient()  # the store tracking set
        client.set_tag(run_id, "workbench.pruned", reason)
        client.set_terminated(run_id, "KILLED")


# -- the model registry ------------------------------------------------------------------------


def resolve_model_path(path: str | Path) -> Path:
    """Where a model named by a user lies: a registered model (``models:/NAME@alias`` or ``models:/NAME/VERSION``)
    is fetched and its saved model folder returned; any other path is returned as it is. Call it before
    :meth:`~workbench.models.TextClassificationModel.from_pretrained`, which reads folders only.

    Example:
        >>> TextClassificationModel.from_pretrained(resolve_model_path("models:/trec@champion"))  # doctest: +SKIP
    """
    return registered_model_folder(str(path)) if str(path).startswith(REGISTRY_PREFIX) else Path(path)


def registered_model_folder(uri: str, tracking_uri: str | None = None) -> Path:
    """Download a registered model (``models:/NAME@alias`` or ``models:/NAME/VERSION``) and return its saved
    model folder.

    Raises:
        ModelLoadError: when MLflow is missing, or the name, version or alias was never registered.
    """
    check_installed(["mlflow"])
    import mlflow

    tracking = mlflow_uri(uri=tracking_uri)
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, tracking_uri=tracking, registry_uri=tracking)
    except mlflow.exceptions.MlflowException as exc:
        raise ModelLoadError(
            f"{uri} is not in the model registry at {tracking} ({str(exc).splitlines()[0]}). "
            "Register a run first: workbench register RUN_DIR --name NAME --alias ALIAS "
            "(or set MLFLOW_TRACKING_URI to the registry that holds it)."
        ) from None
    try:  # the MLmodel file says where the pyfunc model keeps its artifacts
        flavor = yaml.safe_load((Path(local) / "MLmodel").read_text())["flavors"]["python_function"]
        return Path(local) / flavor["artifacts"][REGISTERED_ARTIFACT]["path"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        raise ModelLoadError(
            f"{uri} was not registered by workbench (its MLmodel in {local} names no "
            f"'{REGISTERED_ARTIFACT}' artifact). Register it with workbench register."
        ) from None
