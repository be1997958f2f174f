"""The batch runner: experiments files, grids, failures, dead kernels, --resume and the index page."""

import json
import textwrap
from pathlib import Path

import nbformat
import pytest
import yaml

from workbench import cli
from workbench.reports import ExperimentsError, expand_grid, load_experiments, run_experiments, to_html


def write_notebook(path: Path, parameters: str, *cells: str) -> Path:
    nb = nbformat.v4.new_notebook(
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    )
    nb.cells.append(nbformat.v4.new_code_cell(textwrap.dedent(parameters).strip(), metadata={"tags": ["parameters"]}))
    nb.cells += [nbformat.v4.new_code_cell(textwrap.dedent(c).strip()) for c in cells]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


@pytest.fixture
def mini_notebooks(tmp_path) -> Path:
    """Three fast notebooks without any model: one that reports x, one that fails when x == 2, one after it."""
    folder = tmp_path / "nbs"
    save = (
        "from workbench.reports import save_results\n"
        "save_results(output_dir, '{name}', {{'value': x * 10, 'run_dir': 'runs/x{{}}'.format(x)}})"
    )
    write_notebook(folder / "10_report.ipynb", "x = 1\noutput_dir = None", save.format(name="10_report"))
    write_notebook(
        folder / "20_maybe_fail.ipynb",
        "x = 1\nrun_dir = None\noutput_dir = None",
        "print('got', run_dir)",
        "if x == 2:\n    raise ValueError(f'x={x} is not allowed here')",
        save.format(name="20_maybe_fail"),
    )
    write_notebook(folder / "30_after.ipynb", "output_dir = None", "print('after')")
    write_notebook(folder / "40_die.ipynb", "output_dir = None", "print('about to die')", "import os\nos._exit(1)")
    return folder


def experiments_file(tmp_path, body: dict) -> Path:
    path = tmp_path / "experiments.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def test_grid_expands_to_every_combination():
    expanded = expand_grid("sst2", {"epochs": 1}, {"lr": [2e-5, 5e-5], "pooling": ["cls", "mean"]})
    assert [name for name, _, _ in expanded] == [
        "sst2__lr-2e-05__pooling-cls",
        "sst2__lr-2e-05__pooling-mean",
        "sst2__lr-5e-05__pooling-cls",
        "sst2__lr-5e-05__pooling-mean",
    ]
    assert expanded[1][1] == {"epochs": 1, "lr": 2e-5, "pooling": "mean"}
    assert expand_grid("plain", {"a": 1}, None) == [("plain", {"a": 1}, {})]


@pytest.mark.parametrize(
    "body, message",
    [
        ({"experiments": [{"name": "e", "notebooks": ["10_report"]}], "colour": 1}, "unknown key(s) colour"),
        (
            {"experiments": [{"name": "e", "notebooks": ["10_report"], "paramters": {}}]},
            "experiment 'e': unknown key(s) paramters",
        ),
        (
            {"experiments": [{"name": "e", "notebooks": ["99_missing"]}]},
            "experiment 'e': notebook '99_missing' not found",
        ),
        (
            {"experiments": [{"name": "e", "notebooks": ["10_report"], "parameters": {"y": 1}}]},
            "experiment 'e': parameter 'y' is declared by none of its notebooks (10_report)",
        ),
        (
            {"experiments": [{"name": "e", "notebooks": [{"notebook": "30_after", "parameters": {"x": 1}}]}]},
            "experiment 'e', notebook 30_after: parameter 'x' is not declared",
        ),
        (
            {"experiments": [{"name": "e", "notebooks": ["10_report"], "grid": {"x": []}}]},
            "grid key 'x' has no values, so the grid expands to nothing",
        ),
        (
            {"experiments": [{"name": "e", "notebooks": ["10_report"]}, {"name": "e", "notebooks": ["10_report"]}]},
            "appear more than once",
        ),
        ({"experiments": []}, "needs a top-level 'experiments:' list"),
    ],
)
def test_bad_experiments_files_are_explained(tmp_path, mini_notebooks, body, message):
    path = experiments_file(tmp_path, {"notebooks_dir": str(mini_notebooks), **body})
    with pytest.raises(ExperimentsError) as error:
        load_experiments(path)
    assert message in str(error.value)


def test_a_failure_is_reported_the_rest_go_on_and_resume_skips_what_succeeded(tmp_path, mini_notebooks, capsys):
    path = experiments_file(
        tmp_path,
        {
            "notebooks_dir": str(mini_notebooks),
            "experiments": [
                {"name": "grid", "notebooks": ["10_report", "20_maybe_fail", "30_after"], "grid": {"x": [1, 2, 3]}},
            ],
        },
    )
    assert cli.main(["run", str(path), "--no-progress"]) == 1  # non-zero: a notebook failed
    state = json.loads((tmp_path / "reports" / "index.json").read_text())["experiments"]
    statuses = {name: {nb: r["status"] for nb, r in e["notebooks"].items()} for name, e in state.items()}
    assert statuses == {
        "grid__x-1": {"10_report": "ok", "20_maybe_fail": "ok", "30_after": "ok"},
        "grid__x-2": {"10_report": "ok", "20_maybe_fail": "failed", "30_after": "skipped"},
        "grid__x-3": {"10_report": "ok", "20_maybe_fail": "ok", "30_after": "ok"},  # went on after the failure
    }
    failure = state["grid__x-2"]["notebooks"]["20_maybe_fail"]["error"]
    assert failure.startswith(
        "experiment 'grid__x-2', notebook 20_maybe_fail, cell In [4]: ValueError: x=2 is not allowed"
    )
    assert state["grid__x-1"]["notebooks"]["10_report"]["results"]["value"] == 10
    # the run_dir a notebook saved is handed to the next one that declares run_dir
    assert state["grid__x-3"]["notebooks"]["20_maybe_fail"]["parameters"]["run_dir"] == "runs/x3"
    failed_page = (tmp_path / "reports" / "grid__x-2" / "20_maybe_fail.html").read_text()
    assert "x=2 is not allowed here" in failed_page  # the failed notebook still has its page, with the error
    index = (tmp_path / "reports" / "index.html").read_text()
    assert index.count('class="status ok"') == 7 and index.count('class="status failed"') == 1
    assert index.count('class="status skipped"') == 1 and "x=2 is not allowed here" in index
    assert "[5/9] grid__x-2 / 20_maybe_fail: FAILED" in capsys.readouterr().out

    ok_notebook = tmp_path / "reports" / "grid__x-1" / "10_report.ipynb"
    before = ok_notebook.stat().st_mtime_ns
    state = run_experiments(path, resume=True, progress=False)
    notebooks = state["experiments"]["grid__x-1"]["notebooks"]
    assert all(r.get("kept") for r in notebooks.values()) and ok_notebook.stat().st_mtime_ns == before
    assert state["experiments"]["grid__x-2"]["notebooks"]["20_maybe_fail"]["status"] == "failed"  # retried
    assert not state["experiments"]["grid__x-2"]["notebooks"]["20_maybe_fail"].get("kept")
    assert state["failed"] == 1


def test_resume_reruns_a_notebook_whose_parameters_changed(tmp_path, mini_notebooks):
    body = {
        "notebooks_dir": str(mini_notebooks),
        "experiments": [{"name": "one", "notebooks": ["10_report"], "parameters": {"x": 1}}],
    }
    path = experiments_file(tmp_path, body)
    run_experiments(path, progress=False)
    state = run_experiments(path, resume=True, progress=False, overrides={"x": 4})
    record = state["experiments"]["one"]["notebooks"]["10_report"]
    assert not record.get("kept") and record["results"]["value"] == 40


def test_run_set_reaches_the_notebooks_that_declare_it(tmp_path, mini_notebooks):
    path = experiments_file(
        tmp_path,
        {
            "notebooks_dir": str(mini_notebooks),
            "experiments": [{"name": "one", "notebooks": ["10_report", "30_after"], "parameters": {"x": 1}}],
        },
    )
    assert cli.main(["run", str(path), "--no-progress", "--set", "x=3"]) == 0
    notebooks = json.loads((tmp_path / "reports" / "index.json").read_text())["experiments"]["one"]["notebooks"]
    assert notebooks["10_report"]["parameters"]["x"] == 3  # replaces the file's x=1
    assert notebooks["10_report"]["results"]["value"] == 30  # read as the number 3 (the string '3' gives '3333333333')
    assert "x" not in notebooks["30_after"]["parameters"]  # a notebook that does not declare x is left alone


def test_run_set_of_a_parameter_no_notebook_declares_is_an_error(tmp_path, mini_notebooks, capsys):
    path = experiments_file(
        tmp_path, {"notebooks_dir": str(mini_notebooks), "experiments": [{"name": "one", "notebooks": ["10_report"]}]}
    )
    assert cli.main(["run", str(path), "--no-progress", "--set", "epochz=3"]) == 2
    assert "'epochz'" in capsys.readouterr().err
    assert not (tmp_path / "reports" / "one" / "10_report.ipynb").exists()  # refused before anything ran


def test_a_dead_kernel_is_reported_with_its_cell(tmp_path, mini_notebooks):
    path = experiments_file(
        tmp_path,
        {
            "notebooks_dir": str(mini_notebooks),
            "experiments": [
                {"name": "dies", "notebooks": ["40_die", "30_after"]},
                {"name": "lives", "notebooks": ["30_after"]},
            ],
        },
    )
    state = run_experiments(path, progress=False)
    record = state["experiments"]["dies"]["notebooks"]["40_die"]
    assert record["status"] == "failed"
    assert record["error"].startswith("experiment 'dies', notebook 40_die, cell #4: the kernel died")
    assert state["experiments"]["dies"]["notebooks"]["30_after"]["status"] == "skipped"
    assert state["experiments"]["lives"]["notebooks"]["30_after"]["status"] == "ok"
    page = (tmp_path / "reports" / "dies" / "40_die.html").read_text()
    assert "_exit" in page and "DeadKernelError" in page  # the page shows the cell that killed the kernel


def test_html_pages_fetch_nothing_from_the_network(tmp_path, mini_notebooks):
    path = experiments_file(
        tmp_path, {"notebooks_dir": str(mini_notebooks), "experiments": [{"name": "one", "notebooks": ["10_report"]}]}
    )
    run_experiments(path, progress=False)
    page = to_html(tmp_path / "reports" / "one" / "10_report.ipynb").read_text()
    assert "<script src=" not in page and "cdnjs" not in page and "unpkg" not in page
