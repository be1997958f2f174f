"""Reading runs back: load, leaderboard, evaluation on a split, and clear errors for missing runs."""

import pytest

from workbench import TextClassificationModel, TextDataModule, Trainer
from workbench.runs import RunNotFoundError, ensure_run, evaluate_run, leaderboard, load_run, metrics_table


def fit(tiny_bert, files, name, lr):
    dm = TextDataModule(str(files["train"]), str(files["val"]), model_name=tiny_bert, batch_size=8)
    model = TextClassificationModel(tiny_bert, num_classes=2, freeze_embeddings=False)
    return Trainer(max_epochs=4, lr=lr, run_name=name, checkpoint_dir=None).fit(model, dm)


def test_load_leaderboard_and_evaluate(tiny_bert, sentiment_files):
    first = fit(tiny_bert, sentiment_files, "a", 2e-3)
    fit(tiny_bert, sentiment_files, "b", 1e-5)
    run = load_run(first.run_dir)
    assert run.name == "a/version_0" and run.config.train.lr == 2e-3
    assert {"step", "loss"} <= set(run.log.columns)
    assert load_run("runs/a").path == run.path  # a run name opens its newest version
    board = leaderboard("runs")
    assert list(board["run"]) == ["a/version_0", "b/version_0"]  # best validation accuracy first
    assert "train.lr" in board.columns and "data.batch_size" not in board.columns  # only what differs
    assert board.loc[0, "val_accuracy"] == 1.0 and board.loc[0, "samples_per_s"] > 0
    evaluation = evaluate_run(run, "validation")
    assert evaluation.proba.shape == (16, 2) and evaluation.metrics["accuracy"] == run.metrics["validation"]["accuracy"]
    assert list(evaluation.report().index) == ["neg", "pos"]
    assert list(metrics_table(run).index) == ["validation"]
    with pytest.raises(Exception, match="no test split"):
        evaluate_run(run, "test")


def test_missing_and_unfinished_runs_are_explained(tmp_path):
    with pytest.raises(RunNotFoundError, match="Run directory nowhere does not exist"):
        load_run("nowhere")
    (tmp_path / "half" / "version_0").mkdir(parents=True)
    (tmp_path / "half" / "version_0" / "config.yaml").write_text("train: {lr: 0.001}\n")
    with pytest.raises(RunNotFoundError, match="not a finished run: metrics.json missing"):
        load_run(tmp_path / "half")
    with pytest.raises(RunNotFoundError):
        ensure_run("nowhere")
    assert leaderboard(tmp_path / "empty").empty
