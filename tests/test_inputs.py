"""Bad input, table-driven: every case through the real command line (or the Python API) must end in one line
that names the file, row, column or key and the fix, exit status 2, no traceback, and nothing lost. Valid but
unusual files (byte-order marks, quoted newlines, gzip, Windows line ends, 1 MB texts) must just work."""

import gzip
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import NEGATIVE, POSITIVE

from workbench.cli import main

GOOD_ROWS = [(t, "pos") for t in POSITIVE] * 4 + [(t, "neg") for t in NEGATIVE] * 4


def _csv(text: str, name: str = "bad.csv"):
    def write(folder: Path) -> Path:
        (folder / name).write_text(text)
        return folder / name

    return write


def _bytes(data: bytes, name: str):
    def write(folder: Path) -> Path:
        (folder / name).write_bytes(data)
        return folder / name

    return write


def _good(folder: Path) -> Path:
    pd.DataFrame(GOOD_ROWS, columns=["text", "label"]).to_csv(folder / "good.csv", index=False)
    return folder / "good.csv"


GOOD_CSV = pd.DataFrame(GOOD_ROWS, columns=["text", "label"]).to_csv(index=False)

# (case id, how to make the training file, extra overrides, what the one-line message must contain)
TRAIN_CASES = [
    ("missing file", lambda f: f / "nowhere.csv", [], "nowhere.csv"),
    ("a folder", lambda f: f, [], "is a folder"),
    ("empty file", _csv(""), [], "is empty"),
    ("header only", _csv("text,label\n"), [], "has a header but no rows"),
    ("binary", _bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8, "bad.csv"), [], "bad.csv"),
    ("latin-1", _bytes(GOOD_CSV.replace("good", "g\xf6od").encode("latin-1"), "bad.csv"), [], "UTF-8"),
    (
        "broken JSONL line",
        _csv(
            "".join(json.dumps({"text": t, "label": label}) + "\n" for t, label in GOOD_ROWS[:6])
            + '{"text": "cut off\n',
            "bad.jsonl",
        ),
        [],
        "bad.jsonl",
    ),
    (
        "JSONL line not an object",
        _csv(json.dumps({"text": "a", "label": "pos"}) + "\n[1, 2]\n", "bad.jsonl"),
        [],
        "bad.jsonl",
    ),
    ("ragged rows", _csv(GOOD_CSV + "one,two,three,four\n"), [], "line 34"),
    ("semicolons in a .csv", _csv(GOOD_CSV.replace(",", ";")), [], "delimiter"),
    ("missing label column", _csv(GOOD_CSV.replace("text,label", "text,target")), [], "no column 'label'"),
    ("empty labels", _csv(GOOD_CSV + "a film,\n"), [], "no label"),
    (
        "a single class",
        _csv(pd.DataFrame({"text": POSITIVE * 4, "label": "pos"}).to_csv(index=False)),
        [],
        "only the label",
    ),
    ("blank texts", _csv(GOOD_CSV + '"   ",pos\n'), [], "empty or missing text"),
    ("unknown text column", _good, ["data.text_column=review"], "no column 'review'"),
    ("unknown dataset", None, ["data.dataset=sst5"], "Unknown dataset 'sst5'"),
    ("unknown backbone", _good, ["model.backbone=no-such-org/no-such-model"], "no-such-org/no-such-model"),
    ("wrong value type", _good, ["train.lr=fast"], "train.lr"),
    ("out of range", _good, ["data.val_fraction=1.5"], "data.val_fraction"),
    (
        "max_length beyond the backbone",
        _good,
        ["data.max_length=4096", "data.max_tokens=8192"],
        "longer than the 130 positions",
    ),
    ("unknown key", _good, ["train.learning_rate=0.1"], "train.learning_rate"),
    ("unknown choice", _good, ["model.pooling=max"], "model.pooling"),
    ("multi-label cell that is not a list", _csv('text,label\na,"[""x"", "\nb,y\n'), ["data.multi_label=true"], "row"),
]


def _one_line_error(capsys, command: str, expected: str) -> str:
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.startswith(f"workbench {command}: error:")]
    assert len(lines) == 1 and captured.err.rstrip().splitlines()[-1] == lines[0], captured.err[-3000:]
    assert "Traceback" not in captured.err, captured.err[-3000:]
    assert expected.lower() in lines[0].lower(), lines[0]
    return lines[0]


@pytest.mark.parametrize("case, make_file, overrides, expected", TRAIN_CASES, ids=[c[0] for c in TRAIN_CASES])
def test_bad_training_input_is_one_line_and_loses_nothing(
    case, make_file, overrides, expected, tiny_bert, tmp_path, capsys
):
    data = tmp_path / "data"
    data.mkdir()
    earlier = Path("runs/bad/version_0")  # an earlier run of the same name that must survive untouched
    earlier.mkdir(parents=True)
    (earlier / "config.yaml").write_text("kept: true\n")
    argv = ["train", f"model.backbone={tiny_bert}", "run.name=bad", "train.epochs=1", *overrides]
    if make_file is not None:
        argv.append(f"data.train_file={make_file(data)}")
    assert main(argv) == 2
    _one_line_error(capsys, "train", expected)
    assert sorted(p.name for p in Path("runs/bad").iterdir()) == ["version_0"]  # no half-made run
    assert (earlier / "config.yaml").read_text() == "kept: true\n"


def test_bad_config_files(tmp_path, capsys):
    (tmp_path / "broken.yaml").write_text("train:\n  lr: [1e-3\n")
    assert main(["train", "--config", str(tmp_path / "broken.yaml")]) == 2
    assert "broken.yaml" in _one_line_error(capsys, "train", "yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    assert main(["config", "--config", str(tmp_path / "list.yaml")]) == 2
    _one_line_error(capsys, "config", "list.yaml")
    assert main(["config", "--config", str(tmp_path / "missing.yaml")]) == 2
    _one_line_error(capsys, "config", "missing.yaml")
    (tmp_path / "types.yaml").write_text("data:\n  batch_size: many\n")
    assert main(["config", "--config", str(tmp_path / "types.yaml")]) == 2
    _one_line_error(capsys, "config", "data.batch_size")


def test_bad_model_folders_and_files_for_evaluate_and_predict(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, symlinks=True)
    good = _good(tmp_path)
    assert main(["evaluate", str(tmp_path / "nowhere"), "--file", str(good)]) == 2
    _one_line_error(capsys, "evaluate", "nowhere")
    assert main(["predict", str(tmp_path), "--file", str(good)]) == 2  # a folder from nowhere
    _one_line_error(capsys, "predict", "is not a complete saved model")
    weights = run / "best" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    assert main(["evaluate", str(run), "--file", str(good)]) == 2
    _one_line_error(capsys, "evaluate", "model.safetensors is corrupt or truncated")
    shutil.rmtree(run)
    shutil.copytree(tiny_run, run, symlinks=True)
    (run / "best" / "workbench_model.json").write_text("{not json")
    assert main(["predict", str(run), "--file", str(good)]) == 2
    _one_line_error(capsys, "predict", "corrupt")
    shutil.rmtree(run)
    shutil.copytree(tiny_run, run, symlinks=True)
    assert main(["evaluate", str(run), "--file", str(_csv("text,label\ngood,meh\n")(tmp_path))]) == 2
    _one_line_error(capsys, "evaluate", "'meh' (row 2)")
    assert main(["predict", str(run), "--file", str(_csv("review\ngood\n", "reviews.csv")(tmp_path))]) == 2
    _one_line_error(capsys, "predict", "no column 'text'")
    assert main(["predict", str(run), "--file", str(_bytes(bytes(range(256)) * 4, "blob.csv")(tmp_path))]) == 2
    _one_line_error(capsys, "predict", "blob.csv")
    assert main(["predict", str(run), "--file", str(tmp_path / "absent.csv")]) == 2
    _one_line_error(capsys, "predict", "absent.csv")
    assert main(["evaluate", str(run), "--file", str(_csv("text,label\n,pos\n", "blank.csv")(tmp_path))]) == 2
    _one_line_error(capsys, "evaluate", "blank.csv")


def test_bad_cross_validation_and_experiment_files(tiny_bert, tmp_path, capsys):
    good = _good(tmp_path)
    assert main(["cv", f"model.backbone={tiny_bert}", f"data.train_file={good}", "--folds", "1"]) == 2
    _one_line_error(capsys, "cv", "fold")
    assert main(["cv", f"model.backbone={tiny_bert}", f"data.train_file={good}", "--folds", "50"]) == 2
    _one_line_error(capsys, "cv", "fold")
    (tmp_path / "exp.yaml").write_text("experiments:\n  - name: x\n    notebooks: [99_nothing]\n")
    assert main(["run", str(tmp_path / "exp.yaml")]) == 2
    _one_line_error(capsys, "run", "99_nothing")
    (tmp_path / "exp2.yaml").write_text("experiments: [\n")
    assert main(["run", str(tmp_path / "exp2.yaml")]) == 2
    _one_line_error(capsys, "run", "exp2.yaml")


def test_bad_input_through_the_python_api(tiny_bert, tmp_path):
    from workbench import TextClassificationModel, TextDataModule
    from workbench.errors import DataError, ModelLoadError, WorkbenchError

    with pytest.raises(DataError, match="nowhere.csv"):
        TextDataModule(train_file=str(tmp_path / "nowhere.csv"), model_name=tiny_bert).setup()
    with pytest.raises(WorkbenchError, match="batch_sise"):
        TextDataModule(train_file=str(_good(tmp_path)), model_name=tiny_bert, batch_sise=8)
    with pytest.raises(ModelLoadError, match="not a saved model folder"):
        TextClassificationModel.from_pretrained(tmp_path / "nothing")
    with pytest.raises(WorkbenchError, match="max_length=500 is longer than the 130 positions"):
        from workbench import Trainer

        model = TextClassificationModel(tiny_bert, num_classes=2)
        Trainer(max_epochs=1).fit(
            model,
            TextDataModule(train_file=str(_good(tmp_path)), model_name=tiny_bert, max_length=500, max_tokens=8192),
        )


VALID_BUT_UNUSUAL = [
    ("byte-order mark", lambda f: _bytes(b"\xef\xbb\xbf" + GOOD_CSV.encode(), "bom.csv")(f)),
    ("Windows line ends", lambda f: _bytes(GOOD_CSV.replace("\n", "\r\n").encode(), "crlf.csv")(f)),
    ("quoted newlines", lambda f: _csv(GOOD_CSV + '"a good\nand great film",pos\n', "quoted.csv")(f)),
    ("gzip", lambda f: _bytes(gzip.compress(GOOD_CSV.encode()), "rows.csv.gz")(f)),
    ("a 1 MB text", lambda f: _csv(GOOD_CSV + f'"{"great fun " * 100_000}",pos\n', "long.csv")(f)),
    (
        "TSV with BOM",
        lambda f: _bytes(
            b"\xef\xbb\xbf" + pd.DataFrame(GOOD_ROWS, columns=["text", "label"]).to_csv(index=False, sep="\t").encode(),
            "rows.tsv",
        )(f),
    ),
]


@pytest.mark.parametrize("case, make_file", VALID_BUT_UNUSUAL, ids=[c[0] for c in VALID_BUT_UNUSUAL])
def test_valid_but_unusual_files_just_work(case, make_file, tiny_bert, tmp_path, capsys):
    path = make_file(tmp_path)
    assert (
        main(["train", f"model.backbone={tiny_bert}", f"data.train_file={path}", "train.epochs=1", "run.name=unusual"])
        == 0
    ), capsys.readouterr().err[-2000:]
    metrics = json.loads(Path("runs/unusual/version_0/metrics.json").read_text())
    assert metrics["train"]["examples"] + metrics["validation"]["n"] == len(GOOD_ROWS) + (
        case in ("quoted newlines", "a 1 MB text")
    )
