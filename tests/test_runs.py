"""Run directories: their layout, reading runs back, leaderboard, evaluation on a split, and clear errors."""

from pathlib import Path

import pytest

from workbench import TextClassificationModel, TextDataModule, Trainer
from workbench.errors import ModelLoadError, WorkbenchError
from workbench.evaluation import evaluate_run
from workbench.runs import (
    RunDir,
    RunNotFoundError,
    environment_info,
    leaderboard,
    load_run,
    machine_info,
    mark_complete,
    metrics_table,
    model_folder,
    resume_point,
    save_best,
)
from workbench.trainer import ensure_run


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
    again = evaluate_run(run, "validation", model=evaluation.model)  # a loaded model is used as it is, not reloaded
    assert again.model is evaluation.model and (again.proba == evaluation.proba).all()
    with pytest.raises(WorkbenchError, match="no test split"):
        evaluate_run(run, "test")


def test_run_dir_layout_numbers_versions_and_finds_checkpoints(tmp_path, caplog):
    assert RunDir.latest(tmp_path, "x") is None
    made = [RunDir.next_version(tmp_path, "x").path.name for _ in range(12)]
    assert made == [f"version_{i}" for i in range(12)]
    (tmp_path / "x" / "version_notes").mkdir()  # not a version
    assert [r.path.name for r in RunDir.versions(tmp_path, "x")][-3:] == ["version_9", "version_10", "version_11"]
    assert RunDir.latest(tmp_path, "x") is None  # none finished or holds a whole checkpoint: nothing to resume
    for name in RunDir.FINISHED:
        (tmp_path / "x" / "version_9" / name).write_text("{}")
    assert RunDir.latest(tmp_path, "x").path.name == "version_9"  # by number, not by name; the failed 10, 11 skipped
    run = RunDir(tmp_path / "x" / "version_3")
    assert run.latest_checkpoint() is None and not run.is_finished()
    for step, complete in ((50, True), (100, True), (150, False)):  # 150 was cut off while saving
        folder = run.checkpoints / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "trainer_state.json").write_text("{}")
        if complete:
            mark_complete(folder)
    assert run.latest_checkpoint().name == "checkpoint-100" and "Skipping" in caplog.text
    (run.checkpoints / "checkpoint-100" / "trainer_state.json").write_text("{} ")  # changed since it was written
    assert run.latest_checkpoint().name == "checkpoint-50"
    (run.checkpoints / "checkpoint-100" / "trainer_state.json").write_text("{}")
    run.link_last()
    assert (run / RunDir.LAST).resolve() == (run.checkpoints / "checkpoint-100").resolve()
    resumed, checkpoint = resume_point(run.path)
    assert resumed.path == run.path and checkpoint == run.checkpoints / "checkpoint-100"
    assert resume_point(checkpoint)[0].path == run.path  # a checkpoint folder resumes its own run
    with pytest.raises(ModelLoadError, match="checkpoint-150: it is incomplete"):
        resume_point(run.checkpoints / "checkpoint-150")
    with pytest.raises(ModelLoadError, match="no whole checkpoint to resume from"):
        resume_point(tmp_path / "x" / "version_4")
    assert model_folder(run.path) == run.path  # no best/ yet: the path as it is
    run.best.mkdir()
    assert model_folder(run.path) == run.best


def test_best_is_swapped_in_whole_and_restored_after_a_crash_between_renames(tmp_path):
    class Saved:
        def __init__(self, text):
            self.text = text

        def save_pretrained(self, folder):
            Path(folder).mkdir(parents=True)
            (Path(folder) / "model.txt").write_text(self.text)

    run = RunDir(tmp_path / "run")
    save_best(Saved("one"), run.best)
    save_best(Saved("two"), run.best)
    assert (run.best / "model.txt").read_text() == "two" and sorted(p.name for p in run.path.iterdir()) == ["best"]
    run.best.rename(run.path / ".best.old")  # killed between the two renames: only the old one is left
    assert model_folder(run.path) == run.best and (run.best / "model.txt").read_text() == "two"
    run.best.rename(run.path / ".best.old")
    save_best(Saved("three"), run.best)  # the next save puts the old one back first, then replaces it
    assert (run.best / "model.txt").read_text() == "three" and sorted(p.name for p in run.path.iterdir()) == ["best"]


def test_missing_and_unfinished_runs_are_explained(tmp_path):
    with pytest.raises(RunNotFoundError, match="Run directory nowhere does not exist"):
        load_run("nowhere")
    (tmp_path / "half" / "version_0").mkdir(parents=True)
    (tmp_path / "half" / "version_0" / "config.yaml").write_text("train: {lr: 0.001}\n")
    with pytest.raises(RunNotFoundError, match="not a finished run: metrics.json missing"):
        load_run(tmp_path / "half")
    with pytest.raises(RunNotFoundError):
        ensure_run("nowhere")  # a given run directory is never replaced by training a new one
    assert leaderboard(tmp_path / "empty").empty


def test_machine_info_names_the_cpu_that_every_time_is_measured_on():
    info = machine_info()
    assert set(info) == {"platform", "cpu", "cpu_bf16_matrix_units", "cpu_count", "torch_threads", "gpu"}
    assert info["cpu_bf16_matrix_units"] == (
        Path("/proc/cpuinfo").exists() and "amx_bf16" in Path("/proc/cpuinfo").read_text()
    )
    if Path("/proc/cpuinfo").exists():  # Linux: the model name as /proc/cpuinfo gives it
        model = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
        assert info["cpu"] == model.split(":", 1)[1].strip() and info["cpu"]
    assert set(info) <= set(environment_info(seed=3)) and environment_info(seed=3)["seed"] == 3
