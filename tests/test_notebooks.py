"""Every notebook runs under papermill on tiny parameters, and its own final checks pass."""

import json
import re
from pathlib import Path

import papermill
import pytest

from workbench.reports import declared_parameters, run_experiments

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_the_tiny_experiments_file_runs_every_notebook(tiny_reports):
    state = json.loads((tiny_reports / "state.json").read_text())
    ran = {nb for e in state["experiments"].values() for nb in e["notebooks"]}
    assert ran == {p.stem for p in NOTEBOOKS}  # every notebook in notebooks/ is exercised
    for name, experiment in state["experiments"].items():
        for notebook, record in experiment["notebooks"].items():
            assert record["status"] == "ok", (name, notebook, record.get("error"))  # includes its final asserts
            assert (tiny_reports / "reports" / record["html"]).stat().st_size > 10_000
    lr = state["experiments"]["trec_tiny__lr-0.0003"]["notebooks"]
    assert lr["02_train"]["results"]["run_dir"] == lr["03_evaluate"]["results"]["run_dir"]  # evaluated what it trained
    assert lr["01_data"]["results"]["labels"] == 6  # TREC coarse
    assert (
        state["experiments"]["leaderboard"]["notebooks"]["09_compare_runs"]["results"]["runs"] == 5
    )  # + behavior_tiny's 2
    inspect = state["experiments"]["trec_tiny_inspect"]["notebooks"]
    assert inspect["04_error_analysis"]["results"]["run_dir"] == inspect["02_train"]["results"]["run_dir"]
    assert inspect["04_error_analysis"]["results"]["examples"] == 100
    assert inspect["05_explain"]["results"]["explained"] == 4  # two chosen texts, two mistakes
    exported = inspect["11_export"]["results"]
    assert len(exported["exports"]) == 6 and all(e["status"] == "exported" or e["reason"] for e in exported["exports"])
    assert all(e["status"] == "exported" for e in exported["exports"] if not e["quantized"])  # fp32: never refused
    assert [e["engine"] for e in exported["engines"]] == ["torch", "onnx", "onnx-int8"]
    assert exported["service"]["engine"] == "onnx-int8" and len(exported["service"]["model_version"]) == 16
    assert state["experiments"]["trec_tiny_cv"]["notebooks"]["06_cross_validation"]["results"]["examples"] == 300
    augment = state["experiments"]["augment_tiny"]["notebooks"]["08_augment"]["results"]
    assert augment["examples"] == augment["variants"] == 200 and augment["padding_ratio"] < 1.2
    distilled = state["experiments"]["distill_tiny"]["notebooks"]["12_distill"]["results"]
    assert distilled["transfer_set"] == {"train": 200, "augmented": 0, "unlabelled": 0}
    assert distilled["student_parameters_m"] == distilled["teacher_parameters_m"] > 0  # one tiny backbone for both
    assert 0.0 <= distilled["agreement"] <= 1.0 and [s["model"] for s in distilled["speed"]] == ["teacher", "student"]
    few = state["experiments"]["few_shot_tiny"]["notebooks"]["13_few_shot"]["results"]
    assert few["runs"] == 8 and set(few["accuracy"]) == {"setfit/4", "finetune/4", "frozen/4", "zero-shot/0"}
    learned = state["experiments"]["active_tiny"]["notebooks"]["14_active_learning"]["results"]
    assert learned["rounds"] == 3 and learned["labelled_in_labeller"] == 12 and learned["queued_after_retrain"] == 6
    behaved = state["experiments"]["behavior_tiny"]["notebooks"]["15_behavior"]["results"]
    assert behaved["suite"] == "questions" and behaved["tests"] == len(behaved["failure_rates"]) == 16
    assert behaved["run_dir"].startswith("runs/tiny/") and 0.0 <= behaved["failure_rate"] <= 1.0
    study = state["experiments"]["tune_tiny"]["notebooks"]["10_tune"]
    assert study["results"]["trials"] == 3 and Path(tiny_reports, study["results"]["run_dir"]).is_dir()
    html = (tiny_reports / "reports" / study["html"]).read_text()
    assert html.count("data:image/png") >= 4  # history, importances, slices, the best trial's curves: static images


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_follow_the_house_style(path):
    import nbformat

    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", []), "the first code cell is tagged parameters"
    assert all(isinstance(p["default"], str) for p in declared_parameters(path).values())
    assert "assert" in code[-1].source, "the last cell checks what the notebook produced"
    for cell in code:
        assert not re.search(r"^\s*(def|class) ", cell.source, re.MULTILINE), "logic belongs in workbench/"
        assert not cell.get("outputs"), "notebooks are committed without outputs"


def test_evaluate_trains_a_small_run_when_given_none(tiny_bert, sentiment_files, tmp_path):
    small = {
        "data.train_file": str(sentiment_files["train"]),
        "data.val_file": str(sentiment_files["val"]),
        "model.backbone": tiny_bert,
        "train.epochs": 1,
        "run.name": "small",
        "run.root": str(tmp_path / "runs"),
    }
    papermill.execute_notebook(
        str(REPO / "notebooks" / "03_evaluate.ipynb"),
        str(tmp_path / "out.ipynb"),
        parameters={"small_run": small, "output_dir": str(tmp_path / "out")},
        cwd=str(tmp_path),
        progress_bar=False,
    )
    results = json.loads((tmp_path / "out" / "03_evaluate.json").read_text())
    assert results["run_dir"].endswith("runs/small/version_0") and results["examples"] == 16


def test_data_notebook_reads_files_and_finds_duplicates(tiny_bert, sentiment_files, tmp_path):
    papermill.execute_notebook(
        str(REPO / "notebooks" / "01_data.ipynb"),
        str(tmp_path / "out.ipynb"),
        parameters={
            "dataset": None,
            "train_file": str(sentiment_files["train"]),
            "val_file": str(sentiment_files["val"]),
            "model": tiny_bert,
            "output_dir": str(tmp_path / "out"),
        },
        cwd=str(tmp_path),
        progress_bar=False,
    )
    results = json.loads((tmp_path / "out" / "01_data.json").read_text())
    assert results["train_examples"] == 64 and results["duplicated_texts"] == 8  # 8 sentences, repeated
    assert results["conflicting_labels"] == 0


def test_a_missing_run_directory_fails_with_the_cell_named(tmp_path):
    from workbench.reports import run_experiments

    path = tmp_path / "e.yaml"
    path.write_text(
        f"notebooks_dir: {REPO / 'notebooks'}\n"
        "experiments:\n  - name: ghost\n    notebooks: [{notebook: 03_evaluate, parameters: {run_dir: runs/nope}}]\n"
    )
    state = run_experiments(path, progress=False)
    error = state["experiments"]["ghost"]["notebooks"]["03_evaluate"]["error"]
    assert error.startswith("experiment 'ghost', notebook 03_evaluate, cell In [")
    assert "RunNotFoundError: Run directory runs/nope does not exist" in error


@pytest.mark.slow
def test_the_tiny_experiments_file_runs_every_notebook_with_the_real_backbone(tmp_path, data_folder):
    """The batch command as its file documents it: all-MiniLM-L6-v2, one epoch on 200 TREC questions (a ~40%-accurate
    model with many near ties), every notebook succeeding (issue 20): 11_export reports a refused export as a row."""
    state = run_experiments(REPO / "experiments" / "tiny.yaml", progress=False)  # in tmp_path (conftest)
    records = {
        (name, notebook): record
        for name, experiment in state["experiments"].items()
        for notebook, record in experiment["notebooks"].items()
    }
    assert len(records) == 19 and {nb for _, nb in records} == {p.stem for p in NOTEBOOKS}
    failed = {key: record.get("error") for key, record in records.items() if record["status"] != "ok"}
    assert not failed
    exports = records["trec_tiny_inspect", "11_export"]["results"]["exports"]
    # fp32 engines always export; an int8 engine may be refused, as a row with its reason, never for near ties
    # flipping (agreement is judged on clearly decided examples, an accuracy fall only when beyond chance)
    assert all(e["status"] == "exported" for e in exports if not e["quantized"]), exports
    refused = [e for e in exports if e["status"] == "refused"]
    assert all(e["reason"] and e["accuracy_drop_p"] < 0.05 for e in refused), refused
    assert all(e["agreement_clear"] is None or e["agreement_clear"] >= 0.9 for e in exports)
    engines = records["trec_tiny_inspect", "11_export"]["results"]["engines"]
    assert [e["status"] for e in engines] == ["ok"] * 3 and engines[0]["accuracy"] > 0.2  # 6 classes
