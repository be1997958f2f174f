"""The workbench command line, run as a user would (in-process through main, and once as a real process)."""

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from workbench import TextClassificationModel
from workbench.cli import main

REPO = Path(__file__).resolve().parents[1]


def train(tiny_bert, files, *extra):
    overrides = [
        f"model.backbone={tiny_bert}",
        f"data.train_file={files['train']}",
        f"data.val_file={files['val']}",
        "data.batch_size=8",
        "train.epochs=3",
        "train.lr=2e-3",
        "model.freeze_embeddings=false",
        "run.name=cli",
        *extra,
    ]
    return main(["train", *overrides])


def test_train_evaluate_predict(tiny_bert, sentiment_files, capsys, monkeypatch, tmp_path):
    assert train(tiny_bert, sentiment_files) == 0
    out = capsys.readouterr().out
    assert "run directory: runs/cli/version_0" in out and "| validation |" in out
    run = Path("runs/cli/version_0")
    assert json.loads((run / "metrics.json").read_text())["validation"]["accuracy"] == 1.0

    assert main(["evaluate", str(run), "--file", str(sentiment_files["val"]), "--out", "eval.json"]) == 0
    assert "accuracy=1.0000" in capsys.readouterr().out
    assert json.loads(Path("eval.json").read_text())["confusion_matrix"]

    assert main(["predict", str(run), "--file", str(sentiment_files["val"]), "--proba"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 16 and set(lines[0]["probabilities"]) == {"neg", "pos"}

    monkeypatch.setattr(sys, "stdin", io.StringIO("a good and great film\n\na bad and awful film\n"))
    assert main(["predict", str(run / "best")]) == 0
    assert [json.loads(line)["label"] for line in capsys.readouterr().out.splitlines()] == ["pos", "neg"]


def test_resume_from_the_cli(tiny_bert, sentiment_files, capsys):
    assert train(tiny_bert, sentiment_files, "train.epochs=1") == 0
    # Asking for more epochs on the same run continues from its last checkpoint.
    assert train(tiny_bert, sentiment_files, "train.epochs=2", "--resume") == 0
    metrics = json.loads(Path("runs/cli/version_0/metrics.json").read_text())
    assert metrics["train"]["resumed_from_epoch"] == 1.0 and metrics["train"]["epochs"] == 2.0


def test_errors_are_one_clear_line(tiny_bert, sentiment_files, capsys, tmp_path):
    assert main(["train", "train.lrr=1"]) == 2
    assert "error: Unknown config key 'train.lrr'" in capsys.readouterr().err
    assert train(tiny_bert, sentiment_files, "data.text_column=review") == 2
    assert "has no column 'review'" in capsys.readouterr().err
    assert train(tiny_bert, sentiment_files, "data.truncation=windows", "data.stride=64", "data.max_length=64") == 2
    assert "data.stride=64 must be below half of data.max_length=64" in capsys.readouterr().err
    assert not Path("runs").exists()  # refused before a run folder was made
    assert main(["evaluate", str(tmp_path / "nothing"), "--file", "x.csv"]) == 2
    assert "is not a saved model folder" in capsys.readouterr().err


def test_unknown_label_at_evaluation(tiny_bert, sentiment_files, capsys, tmp_path):
    assert train(tiny_bert, sentiment_files, "train.epochs=1") == 0
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\ngood film,pos\nso-so film,neutral\n")
    assert main(["evaluate", "runs/cli/version_0", "--file", str(bad)]) == 2
    assert "'neutral' (row 3)" in capsys.readouterr().err


@pytest.mark.usefixtures("data_folder")
def test_datasets_lists_the_catalog(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert "sst2" in out and "67,349" in out and "reuters" in out and "120,000-row train split is absent" in out


def test_config_command_prints_resolved_values(capsys):
    assert main(["config", "--config", str(REPO / "configs" / "sst2.yaml"), "train.lr=3e-5"]) == 0
    out = capsys.readouterr().out
    assert "lr = 3e-05" in out and 'dataset = "sst2"' in out


@pytest.mark.usefixtures("data_folder")  # configs/tiny.yaml reads SST-2
def test_console_script_runs_as_a_process(tiny_bert, sentiment_files):
    """The README's `workbench train --config ...` form, as a real subprocess with the installed entry point."""
    exe = Path(sys.executable).with_name("workbench")
    proc = subprocess.run(
        [
            str(exe),
            "train",
            "--config",
            str(REPO / "configs" / "tiny.yaml"),
            f"model.backbone={tiny_bert}",
            "data.train_subset=64",
            "data.val_subset=32",
            "run.name=proc",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert Path("runs/proc/version_0/best/model.safetensors").exists()


def test_cv_prints_mean_and_std_writes_its_files_and_resumes(tiny_bert, sentiment_files, capsys):
    command = [
        "cv",
        f"model.backbone={tiny_bert}",
        f"data.train_file={sentiment_files['train']}",
        "data.batch_size=8",
        "train.epochs=1",
        "train.lr=2e-3",
        "model.freeze_embeddings=false",
        "run.name=cli_cv",
        "--folds",
        "2",
    ]
    assert main(command) == 0
    out = capsys.readouterr().out
    folder = Path("runs/cli_cv/cv")
    summary = json.loads((folder / "summary.json").read_text())
    per_fold = pd.DataFrame(summary["folds"])
    assert summary["n_folds"] == 2 and len(per_fold) == 2
    for key in ("accuracy", "macro_f1"):
        mean, std = per_fold[key].mean(), per_fold[key].std(ddof=1)  # sample std over the folds
        assert f"{key:20s} {mean:.4f} ± {std:.4f}" in out.splitlines()
    oof = pd.read_parquet(folder / "oof.parquet")
    assert len(oof) == 64 and sorted(oof["fold"].value_counts()) == [32, 32]
    assert np.allclose(oof[["proba_neg", "proba_pos"]].sum(1), 1.0)
    for fold, rows in oof.groupby("fold"):  # each example was predicted by the model that held it out
        assert (rows["predicted"] == rows["label"]).mean() == per_fold.loc[fold, "accuracy"]
    assert f"out-of-fold probabilities: {folder / 'oof.parquet'}" in out

    assert main(command) == 0  # again: both folds are read back, not retrained
    again = capsys.readouterr().out
    assert again.count("finished before") == 2 and "training on" not in again
    assert sorted(p.relative_to(folder).as_posix() for p in folder.glob("fold_*/version_*")) == [
        "fold_0/version_0",
        "fold_1/version_0",
    ]
    assert [line for line in again.splitlines() if "±" in line] == [line for line in out.splitlines() if "±" in line]

    assert main([*command, "--restart"]) == 0  # --restart trains every fold again, as new versions
    assert capsys.readouterr().out.count("training on") == 2
    versions = sorted(p.relative_to(folder).as_posix() for p in folder.glob("fold_*/version_*"))
    assert versions == ["fold_0/version_0", "fold_0/version_1", "fold_1/version_0", "fold_1/version_1"]


def test_speed_times_a_saved_model(tiny_bert, sentiment_files, capsys):
    model = TextClassificationModel(tiny_bert, labels=["neg", "pos"])
    model.save_pretrained("model")
    assert (
        main(
            [
                "speed",
                "model",
                "--file",
                str(sentiment_files["val"]),
                "--batch-sizes",
                "1",
                "4",
                "--seq-lengths",
                "natural",
                "16",
                "--repeats",
                "2",
                "--out",
                "speed.csv",
                "--plot",
                "speed.png",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    table = pd.read_csv("speed.csv")
    assert list(zip(table["seq_length"].astype(str), table["batch_size"], strict=True)) == [
        ("natural", 1),
        ("natural", 4),
        ("16", 1),
        ("16", 4),
    ]
    assert (table["timed_calls"] == 2 * 10).all()  # --repeats passes over 10 batches each
    # the validation file holds two texts of one length each: natural batches are exactly that long
    natural = {len(model.tokenizer(text)["input_ids"]) for text in pd.read_csv(sentiment_files["val"])["text"]}
    assert len(natural) == 1
    assert table["mean_tokens"].tolist() == [*natural, *natural, 16.0, 16.0]
    assert ((table["p50_ms"] <= table["p95_ms"]) & (table["p95_ms"] <= table["p99_ms"])).all()
    assert (table["examples_per_s"] > 0).all()
    printed = out.splitlines()
    header = next(i for i, line in enumerate(printed) if line.split()[:3] == ["engine", "seq_length", "batch_size"])
    assert [line.split()[1:3] for line in printed[header + 1 : header + 5]] == [
        ["natural", "1"],
        ["natural", "4"],
        ["16", "1"],
        ["16", "4"],
    ]
    assert all(f"{v:.2f}" in line for v, line in zip(table["p50_ms"], printed[header + 1 : header + 5], strict=True))
    assert Path("speed.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert main(["speed", "model"]) == 2
    assert "Give exactly one of --file FILE or --dataset NAME" in capsys.readouterr().err
    assert main(["speed", "model", "--file", str(sentiment_files["val"]), "--text-column", "review"]) == 2
    assert "has no column 'review'. Its columns are: text, label. Pass --text-column" in capsys.readouterr().err


def test_predict_and_evaluate_stream_a_file_in_pieces(tiny_bert, sentiment_files, capsys, tmp_path):
    """Pieces of 3 rows give the same lines and metrics as the whole file at once; errors name the file's row."""
    from workbench.data import TextDataModule
    from workbench.evaluation import evaluate_model
    from workbench.models import TextClassificationModel

    assert train(tiny_bert, sentiment_files) == 0
    run = Path(capsys.readouterr().out.strip().splitlines()[-1].split(": ")[1])
    outputs = {}
    for rows in (3, 10_000):
        assert (
            main(
                [
                    "predict",
                    str(run),
                    "--file",
                    str(sentiment_files["val"]),
                    "--proba",
                    "--chunk-rows",
                    str(rows),
                    "--out",
                    f"p{rows}.jsonl",
                ]
            )
            == 0
        )
        outputs[rows] = Path(f"p{rows}.jsonl").read_text()
    assert outputs[3] == outputs[10_000] and len(outputs[3].splitlines()) == 16
    assert main(["evaluate", str(run), "--file", str(sentiment_files["val"]), "--out", "streamed.json"]) == 0
    model = TextClassificationModel.from_pretrained(run)
    whole = evaluate_model(model, TextDataModule.for_model(model).encode_file(sentiment_files["val"]))
    streamed = json.loads(Path("streamed.json").read_text())
    assert streamed["accuracy"] == whole["accuracy"] and streamed["n"] == 16
    frame = pd.read_csv(sentiment_files["val"])
    frame.loc[11, "text"] = " "
    frame.to_csv(tmp_path / "blank.csv", index=False)
    capsys.readouterr()
    assert (
        main(["predict", str(run), "--file", str(tmp_path / "blank.csv"), "--chunk-rows", "3", "--out", "x.jsonl"]) == 2
    )
    assert "1 row(s) have empty or missing text in column 'text' (rows 13)" in capsys.readouterr().err
