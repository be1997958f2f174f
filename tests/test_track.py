"""Tracking and the model registry, read back from the real stores: MLflow through MlflowClient and a
loopback `mlflow server`, TensorBoard through its event reader, W&B through its offline run folder."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from workbench import TextClassificationModel, load_config
from workbench.cli import main
from workbench.runs import RunDir, load_run
from workbench.track import resolve_model_path
from workbench.trainer import train
from workbench.tune import tune

ALL = ["tensorboard", "wandb", "mlflow"]


def tracked_config(tiny_bert, files, **changes):
    overrides = {
        "data.train_file": str(files["train"]),
        "data.val_file": str(files["val"]),
        "model.backbone": tiny_bert,
        "model.freeze_embeddings": False,
        "train.epochs": 2,
        "train.log_every": 1,
        "train.lr": 1e-3,
        "run.name": "tracked",
        "run.track": ALL,
        **changes,
    }
    return load_config(overrides=overrides)


@pytest.fixture
def tracked_run(tiny_bert, sentiment_files, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")  # also what a machine without a W&B key gets
    return train(tracked_config(tiny_bert, sentiment_files))


def test_mlflow_holds_the_config_every_step_and_the_final_metrics(tracked_run):
    run = load_run(tracked_run.run_dir)
    ids = json.loads((tracked_run.run_dir / RunDir.TRACKING).read_text())
    client = mlflow.MlflowClient(f"sqlite:///{Path('runs/mlflow.db').resolve()}")
    [found] = client.search_runs([client.get_experiment_by_name("workbench").experiment_id])
    assert found.info.run_id == ids["mlflow_run_id"] and found.info.status == "FINISHED"
    assert found.info.run_name == "tracked/version_0"
    params, tags = found.data.params, found.data.tags
    assert (
        float(params["train.lr"]) == 1e-3
        and params["seed"] == "42"
        and params["model.backbone"] == run.config.model.backbone
    )
    assert json.loads(params["run.track"]) == ALL
    assert tags["git_commit"] == str(run.env["git_commit"]) and tags["data"].endswith(
        "train.csv: 64 train / 16 validation, 2 labels"
    )
    assert tags["workbench.run_dir"] == str(Path(tracked_run.run_dir).resolve())
    losses = client.get_metric_history(found.info.run_id, "loss")
    assert len(losses) == run.log["loss"].notna().sum() >= 2  # every logged step
    evaluations = client.get_metric_history(found.info.run_id, "eval_accuracy")
    assert [m.value for m in evaluations] == pytest.approx(run.log["eval_accuracy"].dropna().tolist())
    final = client.get_metric_history(found.info.run_id, "final.validation.accuracy")
    assert [m.value for m in final] == [pytest.approx(run.metrics["validation"]["accuracy"])]
    experiment = client.get_experiment_by_name("workbench")
    assert experiment.artifact_location == Path("runs/mlartifacts").resolve().as_uri()  # beside the store


def test_tensorboard_and_wandb_hold_the_run(tracked_run):
    run = load_run(tracked_run.run_dir)
    events = EventAccumulator(str(tracked_run.run_dir / RunDir.TENSORBOARD))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "eval/accuracy", "eval/loss", "final/validation.accuracy"} <= scalars
    assert [e.value for e in events.Scalars("eval/accuracy")] == pytest.approx(
        run.log["eval_accuracy"].dropna().tolist()
    )
    assert "config" in "".join(events.Tags()["tensors"])  # the config as text

    ids = json.loads((tracked_run.run_dir / RunDir.TRACKING).read_text())
    [folder] = (tracked_run.run_dir / "wandb").glob("offline-run-*")
    records = (folder / f"run-{ids['wandb_run_id']}.wandb").read_bytes()  # what `wandb sync` would upload
    assert records.startswith(b":W&B")
    # protobuf keeps strings as they are: the run's name, our config and transformers' arguments, the logged
    # steps and evaluations, and the final metrics are all in the offline run
    for key in (
        "tracked/version_0",
        "train.lr",
        "learning_rate",
        "train/loss",
        "eval/accuracy",
        "final/validation.accuracy",
    ):
        assert key.encode() in records, key


def test_a_trackers_absence_is_a_one_line_error(tiny_bert, sentiment_files, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    args = [
        "train",
        "data.train_file=" + str(sentiment_files["train"]),
        "data.val_file=" + str(sentiment_files["val"]),
        f"model.backbone={tiny_bert}",
        "run.track=[wandb]",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("workbench train: error: run.track names wandb, which is not installed: pip install wandb")
    assert len(err.splitlines()) == 1 and not Path("runs").exists()  # before anything was loaded or written
    assert main([*args[:-1], "run.track=[neptune]"]) == 2
    assert "run.track='neptune' is not one of tensorboard, wandb, mlflow" in capsys.readouterr().err


def test_tuning_trials_are_child_runs_of_the_study(tiny_bert, sentiment_files, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = tracked_config(
        tiny_bert,
        sentiment_files,
        **{
            "run.name": "study",
            "run.track": ["mlflow"],
            "train.epochs": 1,
            "tune.trials": 2,
            "tune.pruner": "none",
            "tune.space": {"train.lr": {"log_uniform": [1e-4, 1e-3]}},
        },
    )
    result = tune(config)
    client = mlflow.MlflowClient(f"sqlite:///{Path('runs/mlflow.db').resolve()}")  # runs/, not runs/study/
    runs = client.search_runs([client.get_experiment_by_name("workbench").experiment_id])
    [parent] = [r for r in runs if r.data.tags.get("workbench.study") == "study"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.info.run_name for r in children) == ["trial_0/version_0", "trial_1/version_0"]
    assert {float(r.data.params["train.lr"]) for r in children} == set(result.trials_table()["train.lr"])
    assert parent.data.metrics["best.accuracy"] == result.best["value"] and parent.info.status == "FINISHED"
    assert json.loads(parent.data.tags["best_params"]) == result.best["params"]
    assert {r.info.status for r in children} == {"FINISHED"}


def test_a_pruned_trial_is_a_killed_child_run_with_its_reason(tiny_bert, sentiment_files, monkeypatch):
    import optuna

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr("workbench.tune._pruner", lambda name: optuna.pruners.ThresholdPruner(lower=1.1))
    config = tracked_config(
        tiny_bert,
        sentiment_files,
        **{
            "run.name": "pruned",
            "run.track": ["mlflow"],
            "train.epochs": 2,
            "tune.trials": 1,
            "tune.space": {"train.lr": {"log_uniform": [1e-4, 1e-3]}},
        },
    )
    assert tune(config).trials_table()["state"].tolist() == ["PRUNED"]
    client = mlflow.MlflowClient(f"sqlite:///{Path('runs/mlflow.db').resolve()}")
    [child] = [
        r
        for r in client.search_runs([client.get_experiment_by_name("workbench").experiment_id])
        if r.info.run_name == "trial_0/version_0"
    ]
    assert child.info.status == "KILLED" and child.data.tags["workbench.pruned"].startswith("pruned at step")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _serve(args: list[str], url: str, timeout: float = 120) -> subprocess.Popen:
    """Start ``workbench ui ...`` and wait until ``url`` answers."""
    server = subprocess.Popen(
        [sys.executable, "-m", "workbench.cli", "ui", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=5)
            return server
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                os.killpg(server.pid, signal.SIGKILL)
                pytest.fail(f"`workbench ui {' '.join(args)}` did not answer {url}: {server.stderr.read()[-2000:]}")
            time.sleep(0.5)


def test_workbench_ui_serves_the_stores_on_loopback(tracked_run):
    port = _free_port()
    server = _serve(["mlflow", "runs", "--port", str(port)], f"http://127.0.0.1:{port}/health")
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/search",
            data=json.dumps({"experiment_ids": ["1"]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        answer = json.loads(urllib.request.urlopen(request, timeout=30).read())
        [found] = answer["runs"]
        assert found["info"]["run_name"] == "tracked/version_0"
        assert {"key": "train.lr", "value": "0.001"} in found["data"]["params"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    port = _free_port()
    server = _serve(["tensorboard", "runs", "--port", str(port)], f"http://127.0.0.1:{port}/data/runs")
    try:
        deadline = time.monotonic() + 60
        while not (runs := json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs").read())):
            assert time.monotonic() < deadline  # tensorboard scans the folder in the background
            time.sleep(1)
        assert runs == ["tracked/version_0/tensorboard"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_register_a_run_and_load_it_back_by_alias(tiny_bert, sentiment_files, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = train(tracked_config(tiny_bert, sentiment_files, **{"run.track": ["mlflow"]}))
    meta = result.run_dir / "best" / "workbench_model.json"
    saved = json.loads(meta.read_text())
    meta.write_text(json.dumps({**saved, "temperature": 3.0}))  # as calibration would leave it
    assert main(["register", str(result.run_dir), "--name", "sentiment", "--alias", "champion"]) == 0
    assert "models:/sentiment@champion (version 1)" in capsys.readouterr().out

    client = mlflow.MlflowClient(f"sqlite:///{Path('runs/mlflow.db').resolve()}")
    version = client.get_model_version_by_alias("sentiment", "champion")
    ids = json.loads((result.run_dir / RunDir.TRACKING).read_text())
    assert (
        str(version.version) == "1" and version.run_id == ids["mlflow_run_id"]
    )  # logged into the run's own MLflow run

    texts = ["a gripping, funny film", "dull and far too long"]
    local = TextClassificationModel.from_pretrained(result.run_dir)
    expected = local.predict_proba(texts)
    pyfunc = mlflow.pyfunc.load_model("models:/sentiment@champion")
    table = pyfunc.predict(pd.DataFrame({"text": texts}))
    assert table["label"].tolist() == local.labels_from_proba(expected)
    assert np.allclose(table[[f"prob_{n}" for n in local.label_names]].to_numpy(), expected, atol=1e-5)
    registered = TextClassificationModel.from_pretrained(resolve_model_path("models:/sentiment@champion"))
    assert registered.temperature == 3.0 and np.allclose(registered.predict_proba(texts), expected, atol=1e-5)

    pd.DataFrame({"text": texts}).to_csv("texts.csv", index=False)
    assert main(["predict", "models:/sentiment@champion", "--file", "texts.csv"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [line["label"] for line in lines] == table["label"].tolist()

    assert main(["register", str(result.run_dir), "--name", "sentiment", "--alias", "champion"]) == 0
    assert str(client.get_model_version_by_alias("sentiment", "champion").version) == "2"  # the alias moved
    assert main(["predict", "models:/sentiment@nobody", "--file", "texts.csv"]) == 2
    err = capsys.readouterr().err
    assert "models:/sentiment@nobody is not in the model registry" in err and "workbench register" in err


def test_a_resumed_run_reports_to_the_same_tracker_runs(tiny_bert, sentiment_files, monkeypatch):
    from transformers import TrainerCallback

    class Interrupt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    config = tracked_config(tiny_bert, sentiment_files, **{"train.epochs": 3, "train.eval_every": 2, "run.name": "cut"})
    with pytest.raises(KeyboardInterrupt, match="resume with"):
        train(config, callbacks=[Interrupt()])
    client = mlflow.MlflowClient(f"sqlite:///{Path('runs/mlflow.db').resolve()}")
    first = json.loads(Path("runs/cut/version_0", RunDir.TRACKING).read_text())
    assert client.get_run(first["mlflow_run_id"]).info.status == "KILLED"
    resumed = train(config, resume=True)
    assert json.loads((resumed.run_dir / RunDir.TRACKING).read_text()) == first  # the same MLflow and W&B runs
    run = client.get_run(first["mlflow_run_id"])
    assert run.info.status == "FINISHED" and "final.validation.accuracy" in run.data.metrics
    steps = [m.step for m in client.get_metric_history(first["mlflow_run_id"], "loss")]
    assert min(steps) == 1 and max(steps) == resumed.metrics["train"]["optimizer_steps"]  # both halves, one run
    assert len(client.search_runs([run.info.experiment_id])) == 1
