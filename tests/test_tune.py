"""Hyperparameter search: the space is validated, each trial is a run, the objective is the best evaluation,
pruned and failed trials are recorded, a study continues under its name, and the best trial is marked."""

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from conftest import missing_prerequisite

from workbench import load_config
from workbench.cli import main
from workbench.errors import ConfigError
from workbench.runs import RunDir, load_run
from workbench.tune import _alive, open_study, storage_of, tune

SPACE = {"train.lr": {"log_uniform": [1.0e-4, 3.0e-3]}, "data.batch_size": {"choice": [8, 16]}}


def study_config(tiny_bert, files, **changes):
    overrides = {
        "data.train_file": str(files["train"]),
        "data.val_file": str(files["val"]),
        "model.backbone": tiny_bert,
        "model.freeze_embeddings": False,
        "train.epochs": 2,
        "run.name": "study",
        "tune.space": SPACE,
        "tune.trials": 3,
        **changes,
    }
    return load_config(overrides=overrides)


def experiment_file(folder, tiny_bert, files, train: dict, tune: dict, **sections) -> Path:
    """An experiment YAML (JSON is YAML) for the command-line tests."""
    path = folder / "tune.yaml"
    path.write_text(
        json.dumps(
            {
                "data": {"train_file": str(files["train"]), "val_file": str(files["val"])},
                "model": {"backbone": tiny_bert, "freeze_embeddings": False},
                "train": train,
                "tune": {"space": SPACE, "pruner": "none", **tune},
                **sections,
            }
        )
    )
    return path


@pytest.mark.parametrize(
    "space, message",
    [
        ({"train.lrr": {"uniform": [0, 1]}}, "'train.lrr' is not a config key that can be searched"),
        ({"run.name": {"choice": ["a", "b"]}}, "'run.name' is not a config key that can be searched"),
        ({"train.lr": {"log_uniform": [0, 1e-3]}}, "log_uniform needs a positive low end"),
        ({"train.lr": {"uniform": [1e-3, 1e-4]}}, "low 0.001 must be below high 0.0001"),
        ({"train.epochs": {"int": [1.5, 3]}}, "int needs whole numbers"),
        ({"train.lr": {"normal": [0, 1]}}, "must be one of {log_uniform: ..., uniform: ..., int: ..., choice: ...}"),
        ({"data.batch_size": {"choice": []}}, "choice needs a list"),
    ],
)
def test_a_bad_search_space_names_the_key(space, message):
    pattern = f"tune.space\\['{next(iter(space))}'\\].*" + message.replace("{", ".").replace("}", ".")
    with pytest.raises(ConfigError, match=pattern):
        load_config(overrides={"tune.space": space})


def test_each_trial_is_a_run_and_the_best_evaluation_is_the_objective(tiny_bert, sentiment_files):
    result = tune(study_config(tiny_bert, sentiment_files, **{"tune.pruner": "none"}))
    table = result.trials_table()
    assert list(table["trial"]) == [0, 1, 2] and (table["state"] == "COMPLETE").all()
    for _, row in table.iterrows():
        run = load_run(row["run_dir"])  # an ordinary finished run: trial_<n>/version_0
        assert Path(row["run_dir"]).parts[-3:] == ("study", f"trial_{row['trial']}", "version_0")
        assert run.config.train.lr == pytest.approx(row["train.lr"])
        assert run.config.data.batch_size == row["data.batch_size"]
        evaluations = run.log["eval_accuracy"].dropna()
        assert len(evaluations) == 2 and row["value"] == pytest.approx(evaluations.max())  # the best, not the last
    best = json.loads(Path("runs/study/best_trial.json").read_text())
    assert best["value"] == table["value"].max() and best["metric"] == "accuracy" and best["direction"] == "maximize"
    assert Path("runs/study/best_trial").resolve() == Path(best["run_dir"]).resolve()
    assert best["params"] == {k: v for k, v in table.set_index("trial").loc[best["trial"]].items() if k in SPACE}


def test_a_study_continues_under_its_name_and_refuses_another_space(tiny_bert, sentiment_files):
    config = study_config(tiny_bert, sentiment_files, **{"tune.trials": 2, "train.epochs": 1})
    first = tune(config).trials_table()
    again = tune(study_config(tiny_bert, sentiment_files, **{"tune.trials": 3, "train.epochs": 1})).trials_table()
    assert list(again["trial"]) == [0, 1, 2]  # one new trial; the first two are the same ones, not rerun
    assert again["value"].iloc[:2].tolist() == first["value"].tolist()
    assert sorted(p.name for p in Path("runs/study").glob("trial_*")) == ["trial_0", "trial_1", "trial_2"]
    other = study_config(tiny_bert, sentiment_files, **{"tune.space": {"train.lr": {"uniform": [1e-4, 1e-3]}}})
    with pytest.raises(ConfigError, match="Study 'study' .* searched .*train.lr.*log_uniform"):
        open_study(other)


def test_pruned_and_failed_trials_are_recorded_and_the_study_goes_on(tiny_bert, sentiment_files, monkeypatch):
    # every trial reports accuracy <= 1, so a threshold of 1.1 prunes each one at its first evaluation
    with monkeypatch.context() as patch:
        patch.setattr("workbench.tune._pruner", lambda name: optuna.pruners.ThresholdPruner(lower=1.1))
        result = tune(study_config(tiny_bert, sentiment_files, **{"tune.trials": 2}))
    table = result.trials_table()
    assert list(table["state"]) == ["PRUNED", "PRUNED"] and result.best is None
    assert table["reason"].str.match(r"pruned at step \d+: eval_accuracy = ").all()
    assert not any(Path(d, "metrics.json").exists() for d in table["run_dir"])  # stopped before finishing
    bad = study_config(
        tiny_bert,
        sentiment_files,
        **{"run.name": "broken", "tune.trials": 2, "tune.space": {"data.max_length": {"choice": [10000]}}},
    )
    table = tune(bad).trials_table()  # max_length above max_tokens fails every trial, one by one
    assert list(table["state"]) == ["FAIL", "FAIL"] and table["reason"].str.contains("data.max_tokens").all()


@pytest.mark.parametrize("warmup_epochs, pruned_at", [(0.0, 1), (0.5, 4)])  # 8 steps an epoch, evaluated each step
def test_the_pruner_waits_for_its_warm_up_and_trials_save_the_model_only(
    tiny_bert, sentiment_files, monkeypatch, warmup_epochs, pruned_at
):
    with monkeypatch.context() as patch:  # prunes at every evaluation it is asked about
        patch.setattr("workbench.tune._pruner", lambda name: optuna.pruners.ThresholdPruner(lower=1.1))
        result = tune(
            study_config(
                tiny_bert,
                sentiment_files,
                **{
                    "tune.trials": 1,
                    "tune.space": {"train.lr": {"log_uniform": [1e-4, 3e-3]}},
                    "data.batch_size": 8,
                    "train.eval_every": 1,
                    "tune.pruner_warmup_epochs": warmup_epochs,
                },
            )
        )
    trial = result.study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.user_attrs["reason"].startswith(f"pruned at step {pruned_at}:")
    assert sorted(trial.intermediate_values) == list(range(1, pruned_at + 1))  # the warm-up's evaluations count
    run = RunDir(trial.user_attrs["run_dir"])
    assert load_config(run / RunDir.CONFIG).train.save_only_model  # trials never resume: no optimizer state on disk
    saved = {p.name for folder in run.checkpoint_folders() for p in folder.iterdir()}
    assert len(run.checkpoint_folders()) == min(pruned_at - 1, 2)  # the steps before the pruned one, the last two
    assert not saved & {"optimizer.pt", "scheduler.pt", "rng_state.pth"}
    assert saved == set() or {"model.safetensors", RunDir.COMPLETE} <= saved


def test_the_pruner_warm_up_cannot_be_negative():
    with pytest.raises(ConfigError, match=r"tune.pruner_warmup_epochs=-0.5 must not be negative \(0 = no warm-up\)"):
        load_config(overrides={"tune.pruner_warmup_epochs": -0.5})


def test_workbench_tune_command(tiny_bert, sentiment_files, capsys, tmp_path):
    config = experiment_file(tmp_path, tiny_bert, sentiment_files, train={"epochs": 1}, tune={})
    assert main(["tune", "--config", str(config), "--trials", "2", "--study", "cli"]) == 0
    out = capsys.readouterr().out
    best = json.loads(Path("runs/cli/best_trial.json").read_text())
    assert f"best: trial {best['trial']}, accuracy = {best['value']:.4f}" in out and "COMPLETE" in out
    assert main(["tune", "--config", str(config), "--storage", "postgresql://nobody@127.0.0.1:1/none"]) == 2
    assert "Cannot open the study storage postgresql://nobody@127.0.0.1:1/none" in capsys.readouterr().err


def test_a_study_killed_mid_trial_continues(tiny_bert, sentiment_files, tmp_path, monkeypatch):
    """SIGKILL in the middle of a trial: the next run marks that trial failed (its heartbeat stopped) and
    still completes the study's count of trials."""
    config = experiment_file(
        tmp_path, tiny_bert, sentiment_files, train={"epochs": 30}, tune={"trials": 2}, run={"name": "killed"}
    )
    errors = tmp_path / "worker.err"
    worker = subprocess.Popen(
        [sys.executable, "-m", "workbench.cli", "tune", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=errors.open("w"),
    )
    started = tmp_path / "runs" / "killed" / "trial_0" / "version_0" / "log.jsonl"  # the first trial is training
    deadline = time.monotonic() + 120
    while not started.exists():  # (the study database is left alone: two processes creating its tables would race)
        assert time.monotonic() < deadline and worker.poll() is None, errors.read_text()[-2000:]
        time.sleep(0.2)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    monkeypatch.setattr("workbench.tune.GRACE_S", 1)  # the killed trial's last heartbeat is older than this
    time.sleep(2)
    table = tune(load_config(config, {"train.epochs": 1})).trials_table()
    assert table.loc[0, "state"] == "FAIL"  # the killed one
    assert (table["state"] == "COMPLETE").sum() == 2 and len(table) == 3


def _postgres_binary(name: str) -> str | None:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL cluster in a temp folder on a loopback port, run as the postgres user."""
    initdb, pg_ctl = _postgres_binary("initdb"), _postgres_binary("pg_ctl")
    runner = [] if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--"]  # the server refuses to run as root
    if not (initdb and pg_ctl) or (runner and shutil.which("runuser") is None):
        missing_prerequisite("PostgreSQL is not installed: `make postgres` installs it (apt-get install postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="workbench-pg-"))  # not under pytest's tmp_path: only root may enter that
    if runner:
        shutil.chown(folder, "postgres")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    subprocess.run(
        [*runner, initdb, "-D", str(folder / "data"), "-A", "trust", "-U", "workbench"], check=True, capture_output=True
    )
    subprocess.run(
        [
            *runner,
            pg_ctl,
            "-D",
            str(folder / "data"),
            "-l",
            str(folder / "log"),
            "-w",
            "start",
            "-o",
            f"-p {port} -k {folder} -c listen_addresses=127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    try:
        url = f"postgresql://workbench@127.0.0.1:{port}/postgres"
        yield url
    finally:
        subprocess.run([*runner, pg_ctl, "-D", str(folder / "data"), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def test_two_workers_fill_one_study_on_postgresql(tiny_bert, sentiment_files, tmp_path, postgres_url):
    config = experiment_file(
        tmp_path, tiny_bert, sentiment_files, train={"epochs": 2}, tune={"trials": 6}, run={"name": "shared"}
    )
    command = [sys.executable, "-m", "workbench.cli", "tune", "--config", str(config), "--storage", postgres_url]
    workers = [
        subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]  # started together: both create-or-load the study at once
    for worker in workers:
        assert worker.wait(timeout=300) == 0, worker.stderr.read()[-2000:]
    trials = optuna.load_study(study_name="shared", storage=postgres_url).trials
    numbers = [t.number for t in trials]
    assert len(set(numbers)) == len(numbers) and sorted(numbers) == list(range(len(numbers)))  # every number once
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert 6 <= len(complete) <= 7  # the count is the study's; a trial in flight when it is reached still ends
    assert len({t.user_attrs["worker"] for t in complete}) == 2  # both processes ran trials
    assert len({t.user_attrs["run_dir"] for t in complete}) == len(complete)
    assert all(load_run(t.user_attrs["run_dir"]).metrics["best_metric"] == t.value for t in complete)
    best = json.loads((tmp_path / "runs" / "shared" / "best_trial.json").read_text())
    assert best["value"] == max(t.value for t in complete)


def test_workers_on_one_machine_share_a_journal_file(tiny_bert, sentiment_files, tmp_path, capsys):
    config = experiment_file(
        tmp_path, tiny_bert, sentiment_files, train={"epochs": 1}, tune={"trials": 4}, run={"name": "pair"}
    )
    assert main(["tune", "--config", str(config), "--workers", "2"]) == 0
    folder = tmp_path / "runs" / "pair"
    assert (folder / "study.journal").is_file() and not (folder / "study.db").exists()
    trials = optuna.load_study(study_name="pair", storage=storage_of(str(folder / "study.journal"))).trials
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(len(numbers))) and 4 <= len(numbers) <= 5  # every number once
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # two processes, neither of them this one
    assert str(os.getpid()) not in {t.user_attrs["worker"].rpartition(":")[2] for t in trials}
    assert len({tuple(sorted(t.params.items())) for t in trials}) == len(trials)  # the workers draw apart
    assert (folder / "best_trial.json").is_file()
    (tmp_path / "runs" / "solo").mkdir()
    (tmp_path / "runs" / "solo" / "study.db").touch()  # a study kept in SQLite cannot take several workers
    assert main(["tune", "--config", str(config), "--study", "solo", "--workers", "2"]) == 2
    assert "which several processes must not share" in capsys.readouterr().err
    assert main(["tune", "--config", str(config), "--study", "none_yet", "--resume"]) == 2
    assert "--resume: no study 'none_yet'" in capsys.readouterr().err


def test_workers_killed_mid_trial_leave_no_trial_running(tiny_bert, sentiment_files, tmp_path):
    """A journal file has no heartbeat: the next run marks the trials of dead local workers failed."""
    config = experiment_file(
        tmp_path, tiny_bert, sentiment_files, train={"epochs": 3000}, tune={"trials": 2}, run={"name": "pair_killed"}
    )  # a trial lasts minutes: 30 epochs (3 s) let a worker finish before the other had started (CI, stop 29)
    tuner = subprocess.Popen(
        [sys.executable, "-m", "workbench.cli", "tune", "--config", str(config), "--workers", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    folder = tmp_path / "runs" / "pair_killed"
    deadline = time.monotonic() + 180
    while len(list(folder.glob("trial_*/version_0/log.jsonl"))) < 2:  # both workers are training
        assert time.monotonic() < deadline and tuner.poll() is None
        time.sleep(0.2)
    workers = [
        int(pid)
        for task in Path(f"/proc/{tuner.pid}/task").iterdir()
        for pid in (task / "children").read_text().split()
    ]
    os.killpg(tuner.pid, signal.SIGKILL)  # the command and its two workers
    tuner.wait()
    while any(_alive(pid) for pid in workers):  # a killed process takes a moment to exit; only then is it dead
        assert time.monotonic() < deadline
        time.sleep(0.1)
    table = tune(load_config(config, {"train.epochs": 1})).trials_table()  # one worker, the same journal
    assert (table.loc[:1, "state"] == "FAIL").all() and table.loc[:1, "reason"].str.contains("died mid-trial").all()
    assert (table["state"] == "COMPLETE").sum() == 2 and len(table) == 4


def test_retrain_best_compares_tuned_and_untuned_on_the_same_seeds(tiny_bert, sentiment_files, tmp_path, capsys):
    config = experiment_file(
        tmp_path,
        tiny_bert,
        sentiment_files,
        train={"epochs": 1, "lr": 1e-5},
        tune={"trials": 2, "space": {"train.lr": {"log_uniform": [1e-3, 3e-3]}}},
        run={"name": "again"},
    )
    assert main(["tune", "--config", str(config), "--retrain-best", "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(Path("runs/again/retrain.json").read_text())
    best = json.loads(Path("runs/again/best_trial.json").read_text())
    runs = {(r["config"], r["seed"]): load_run(r["run_dir"]) for r in summary["runs"]}
    assert sorted(runs) == [("tuned", 42), ("tuned", 43), ("untuned", 42), ("untuned", 43)]
    for (name, seed), run in runs.items():  # the tuned runs take the best trial's lr, the untuned the file's
        assert run.config.train.seed == seed
        assert run.config.train.lr == pytest.approx(best["params"]["train.lr"] if name == "tuned" else 1e-5)
    values = [r["value"] for r in summary["runs"] if r["config"] == "tuned"]
    assert summary["split"] == "validation" and summary["tuned"]["mean"] == pytest.approx(sum(values) / 2)
    assert f"tuned    accuracy on validation: {summary['tuned']['mean']:.4f} ± {summary['tuned']['std']:.4f}" in out
