"""The model registry: a finished run's model logged to MLflow as a pyfunc model and registered under a name.

``workbench register RUN_DIR --name trec --alias champion`` logs the run's best model into the run's MLflow
run (the one ``run.track: [mlflow]`` made, else a new one), registers it as a new version of ``trec`` and
points the alias at that version (aliases, not MLflow's deprecated stages). Back again::

    mlflow.pyfunc.load_model("models:/trec@champion").predict(pd.DataFrame({"text": ["Who wrote Dracula?"]}))
    TextClassificationModel.from_pretrained(resolve_model_path("models:/trec@champion"))  # workbench.track
    workbench predict models:/trec@champion

The pyfunc model predicts with the saved model's decision rule, thresholds and temperature included; it
carries the ``workbench`` package with it (``code_paths``) and pins what that package imports
(:data:`MODEL_REQUIREMENTS`).
The registry is ``$MLFLOW_TRACKING_URI``, else SQLite ``runs/mlflow.db`` under the working folder: the store
that ``models:/`` URIs load from (see :mod:`workbench.track`). A run tracked in that store gets the model in
its own MLflow run.
"""

from __future__ import annotations

import logging
from importlib import metadata
from pathlib import Path

import mlflow
import mlflow.pyfunc
import pandas as pd

from workbench.errors import WorkbenchError
from workbench.models import TextClassificationModel
from workbench.runs import RunDir, load_run
from workbench.track import REGISTERED_ARTIFACT as ARTIFACT
from workbench.track import check_installed, mlflow_experiment, mlflow_uri, tracked_ids

log = logging.getLogger(__name__)
# what `import workbench` and loading a model need (the third-party imports of the modules below trainer)
MODEL_REQUIREMENTS = (
    "torch",
    "transformers",
    "accelerate",
    "safetensors",
    "tokenizers",
    "scikit-learn",
    "numpy",
    "pandas",
    "pyyaml",
    "mlflow",
)


class TextClassifierPyfunc(mlflow.pyfunc.PythonModel):
    """A saved :class:`TextClassificationModel` as an MLflow pyfunc model.

    ``predict`` takes a DataFrame with a ``text`` column (or a single column of texts, or a list of strings)
    and returns a DataFrame with ``label`` (a list of labels for multi-label models) and ``prob_<label>`` per class.
    """

    def load_context(self, context):
        self.model = TextClassificationModel.from_pretrained(context.artifacts[ARTIFACT])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        if isinstance(model_input, pd.DataFrame):
            column = "text" if "text" in model_input.columns else model_input.columns[0]
            texts = model_input[column].astype(str).tolist()
        else:
            texts = [str(text) for text in model_input]
        proba = self.model.predict_proba(texts)  # (N, K), temperature applied
        out = pd.DataFrame({"label": self.model.labels_from_proba(proba)})
        for index, name in enumerate(self.model.label_names):
            out[f"prob_{name}"] = proba[:, index]
        return out


def register_run(run_dir: str | Path, name: str, alias: str | None = None) -> dict:
    """Log a finished run's best model to MLflow as a pyfunc model and register it as a new version of ``name``.

    Args:
        run_dir: a finished run directory (``runs/<name>/version_N``).
        name: the registered model's name.
        alias: an alias to point at the new version, e.g. ``champion`` (moved from any older version).

    Returns:
        ``{"name", "version", "alias", "model_uri", "run_id", "tracking_uri"}``.

    Example:
        >>> register_run("runs/trec/version_0", "trec", alias="champion")["model_uri"]
        'models:/trec@champion'
    """
    check_installed(["mlflow"])
    check_model_name(name)
    run = load_run(run_dir)  # raises RunNotFoundError for a missing or unfinished run
    model = TextClassificationModel.from_pretrained(run.path)  # a corrupt model fails here, not in the registry
    uri = mlflow_uri()  # the registry that models:/ URIs load from: $MLFLOW_TRACKING_URI, else runs/mlflow.db
    experiment = mlflow_experiment(uri)
    run_id = tracked_ids(run.path).get("mlflow_run_id")
    if run_id is not None and _run_missing(run_id):
        run_id = None  # the run was tracked in another store: log the model into a new run of this one
    example = pd.DataFrame({"text": ["an example text to classify"]})
    requirements = [f"{package}=={metadata.version(package)}" for package in MODEL_REQUIREMENTS]
    with mlflow.start_run(
        run_id=run_id,
        experiment_id=None if run_id else experiment,
        run_name=None if run_id else f"{run.config.run.name}/{Path(run.path).name}",
        tags=None if run_id else {"workbench.run_dir": str(Path(run.path).resolve())},
    ) as active:
        info = mlflow.pyfunc.log_model(
            name=ARTIFACT,
            python_model=TextClassifierPyfunc(),
            artifacts={ARTIFACT: str(RunDir(run.path).best)},
            code_paths=[str(Path(__file__).resolve().parent)],
            input_example=example,
            pip_requirements=requirements,
            registered_model_name=name,
            metadata={
                "labels": model.label_names,
                "multi_label": model.multi_label,
                "workbench_run_dir": str(Path(run.path).resolve()),
            },
        )
        run_id = active.info.run_id
    version = str(info.registered_model_version)
    if alias:
        try:
            mlflow.MlflowClient(uri).set_registered_model_alias(name, alias, version)
        except mlflow.exceptions.MlflowException as exc:
            raise WorkbenchError(
                f"Version {version} of {name} is registered, but the alias {alias!r} was refused: "
                f"{str(exc).splitlines()[0]}"
            ) from None
    return {
        "name": name,
        "version": version,
        "alias": alias,
        "run_id": run_id,
        "tracking_uri": uri,
        "model_uri": f"models:/{name}@{alias}" if alias else f"models:/{name}/{version}",
    }


def _run_missing(run_id: str) -> bool:
    try:
        mlflow.get_run(run_id)
        return False
    except mlflow.exceptions.MlflowException:
        return True


def check_model_name(name: str) -> None:
    """A registered model name is non-empty and has no slash or @ (they delimit ``models:/NAME@alias``)."""
    if not name or any(c in name for c in "/@"):
        raise WorkbenchError(f"--name {name!r}: a registered model name must be non-empty, without '/' or '@'.")
