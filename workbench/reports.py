"""The batch runner: execute notebooks with papermill, convert them to HTML, and index the results.

An experiments file lists experiments; each names the notebooks to run (``notebooks/NN_name.ipynb``),
their parameters and an optional grid::

    parameters: {dataset: trec}                  # for every experiment (optional)
    experiments:
      - name: trec_minilm
        notebooks: [01_data, 02_train, 03_evaluate]
        parameters: {epochs: 2}
        grid: {lr: [5e-5, 1e-4]}                 # -> trec_minilm__lr-5e-05, trec_minilm__lr-0.0001

An experiment may also say what its Ray task reserves and which experiments it reads the results of (both used
only under ``workbench run --executor ray``, where experiments run side by side; locally they run in file order)::

      - name: trec_leaderboard
        notebooks: [09_compare_runs]
        resources: {cpus: 1, gpus: 0}            # default one CPU; also a file-wide key
        after: [trec_minilm]                     # starts when every trec_minilm grid point has finished

``workbench run experiments/trec.yaml`` executes every notebook into
``reports/<experiment>/<NN_name>.ipynb``, converts it to a self-contained HTML page (images embedded, no
network needed) and writes ``reports/index.html`` with each notebook's status, key metrics, duration and
links. A failing notebook still gets its page (showing the error cell); the rest go on, and the command
exits non-zero. ``--resume`` skips notebooks that already succeeded with the same parameters.

Conventions between the runner and the notebooks:

- a parameter goes to each of the experiment's notebooks that declares it (in its ``parameters`` cell); a
  parameter that none of them declares is an error;
- ``output_dir`` (when declared) is set to ``reports/<experiment>``; a notebook saves its key results
  there with :func:`save_results`, and the index shows them;
- a ``run_dir`` that a notebook saved is passed on to the next notebooks of the same experiment that
  declare ``run_dir``, unless the experiment sets it.

The experiments-file parser, the runner, its resume state and the index page stay in this one module (about
490 lines) because they share one record per notebook (status, parameters fingerprint, results, duration):
splitting them would put that format in two places.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from workbench.cluster import Executor, Resources
from workbench.config import yaml_problem
from workbench.errors import ConfigError, WorkbenchError
from workbench.runs import write_atomic

FILE_KEYS = {"experiments", "parameters", "notebooks_dir", "reports_dir", "resources"}
EXPERIMENT_KEYS = {"name", "notebooks", "parameters", "grid", "resources", "after"}
NOTEBOOK_KEYS = {"notebook", "parameters"}
TEMPLATES = Path(__file__).resolve().parent / "templates"
STATE_FILE = "index.json"
EXPERIMENT_STATE_FILE = "experiment.json"  # one experiment's record, written by whichever process runs it


class ExperimentsError(WorkbenchError, ValueError):
    """An experiments file is malformed, or names a notebook or parameter that does not exist."""


@dataclass
class NotebookSpec:
    name: str  # the notebook's stem, e.g. 02_train
    path: Path
    parameters: dict = field(default_factory=dict)  # set for this notebook only
    declared: dict = field(default_factory=dict)  # what its parameters cell declares (papermill's inspection)


@dataclass
class Experiment:
    name: str
    notebooks: list[NotebookSpec]
    parameters: dict
    grid_point: dict = field(default_factory=dict)

    overrides: dict = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)  # what its Ray task reserves (workbench run --executor ray)
    after: list[str] = field(default_factory=list)  # experiments (expanded names) whose results it reads

    def parameters_for(self, spec: NotebookSpec) -> dict:
        """The parameters this notebook receives: the experiment's that it declares, its own, then overrides."""
        shared = {k: v for k, v in self.parameters.items() if k in spec.declared}
        forced = {k: v for k, v in self.overrides.items() if k in spec.declared}
        return {**shared, **spec.parameters, **forced}


@dataclass
class Plan:
    source: Path
    experiments: list[Experiment]
    reports_dir: Path


# --------------------------------------------------------------------------------------------------
# Reading and checking an experiments file


def _slug(value: Any) -> str:
    text = str(value)
    return "".join(c if c.isalnum() or c in ".-" else "_" for c in text)[:40]


def expand_grid(name: str, parameters: dict, grid: dict | None) -> list[tuple[str, dict, dict]]:
    """All combinations of a grid: ``[(experiment name, parameters, grid point), ...]``.

    Example:
        >>> [n for n, _, _ in expand_grid("sst2", {}, {"lr": [1e-4, 2e-5], "pooling": ["cls"]})]
        ['sst2__lr-0.0001__pooling-cls', 'sst2__lr-2e-05__pooling-cls']
    """
    if not grid:
        return [(name, dict(parameters), {})]
    if not isinstance(grid, dict):
        raise ExperimentsError(f"experiment '{name}': grid must map parameter names to lists of values, got {grid!r}.")
    for key, values in grid.items():
        if not isinstance(values, list):
            raise ExperimentsError(
                f"experiment '{name}': grid key '{key}' must be a list of values, e.g. {key}: [{values!r}]."
            )
        if not values:
            raise ExperimentsError(
                f"experiment '{name}': grid key '{key}' has no values, so the grid expands to "
                "nothing. Give at least one value or remove the key."
            )
    keys = list(grid)
    out = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        point = dict(zip(keys, combo, strict=True))
        suffix = "__".join(f"{k}-{_slug(v)}" for k, v in point.items())
        out.append((f"{name}__{suffix}", {**parameters, **point}, point))
    return out


def declared_parameters(path: Path) -> dict:
    """The parameters a notebook declares in its ``parameters`` cell (papermill's inspection)."""
    import papermill

    return papermill.inspect_notebook(str(path))


def _notebook_path(entry: str, notebooks_dir: Path, experiment: str) -> Path:
    path = Path(entry) if entry.endswith(".ipynb") else notebooks_dir / f"{entry}.ipynb"
    if not path.exists():
        available = ", ".join(sorted(p.stem for p in notebooks_dir.glob("*.ipynb"))) or "none"
        raise ExperimentsError(
            f"experiment '{experiment}': notebook '{entry}' not found at {path}. "
            f"Notebooks in {notebooks_dir}: {available}."
        )
    return path


def _find_notebooks_dir(folder: Path, source: Path) -> Path:
    """A relative notebooks folder is looked up from the working directory, then beside the experiments file
    and its parent (experiments/ and notebooks/ are siblings in a project)."""
    if folder.is_absolute():
        return folder
    for base in (Path.cwd(), source.resolve().parent, source.resolve().parent.parent):
        if (base / folder).is_dir():
            return base / folder
    return folder


def _mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ExperimentsError(f"{where} must be a mapping of name: value, got {value!r}.")
    return value


def _notebook_specs(entries, name: str, notebooks_dir: Path, declared_cache: dict) -> list[NotebookSpec]:
    """An experiment's ``notebooks:`` list as specs, each with the parameters its notebook declares (read once
    per notebook file into ``declared_cache``)."""
    if not isinstance(entries, list) or not entries:
        raise ExperimentsError(f"experiment '{name}': 'notebooks' must list at least one notebook, e.g. [02_train].")
    specs = []
    for nb in entries:
        if isinstance(nb, dict):
            bad = sorted(set(nb) - NOTEBOOK_KEYS)
            if bad or "notebook" not in nb:
                raise ExperimentsError(
                    f"experiment '{name}': a notebook entry takes 'notebook' and 'parameters'; got {sorted(nb)}."
                )
            spec = NotebookSpec(
                Path(str(nb["notebook"])).stem,
                _notebook_path(str(nb["notebook"]), notebooks_dir, name),
                _mapping(nb.get("parameters"), f"experiment '{name}', notebook {nb['notebook']}"),
            )
        else:
            spec = NotebookSpec(Path(str(nb)).stem, _notebook_path(str(nb), notebooks_dir, name))
        if spec.path not in declared_cache:
            declared_cache[spec.path] = declared_parameters(spec.path)
        spec.declared = declared_cache[spec.path]
        specs.append(spec)
    return specs


def _earlier_experiments(value: Any, name: str, experiments: list[Experiment]) -> list[str]:
    """``after: [a, b]`` as the expanded names of the earlier experiments it names (a grid's name means all of its
    points): an experiment that reads others' runs (a leaderboard) waits for them under Ray."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ExperimentsError(f"experiment '{name}': after must list experiment names, e.g. after: [trec_tiny].")
    names = []
    for wanted in value:
        matched = [e.name for e in experiments if e.name == wanted or e.name.startswith(wanted + "__")]
        if not matched:
            raise ExperimentsError(
                f"experiment '{name}': after names '{wanted}', which is not an experiment above it in the file. "
                f"Earlier ones: {', '.join(sorted({e.name.split('__')[0] for e in experiments})) or 'none'}."
            )
        names += [m for m in matched if m not in names]
    return names


def load_experiments(path: str | Path, reports_dir: str | Path | None = None, overrides: dict | None = None) -> Plan:
    """Read, check and expand an experiments file.

    ``overrides`` (e.g. ``{"epochs": 0.1}`` from ``workbench run --set epochs=0.1``) replace the file's values
    in every notebook that declares them.

    Raises:
        ExperimentsError: naming the experiment, notebook and key at fault (unknown key, missing notebook,
            undeclared parameter, empty grid, duplicate name).
    """
    source = Path(path)
    if not source.exists():
        raise ExperimentsError(f"Experiments file {source} does not exist.")
    try:
        raw = yaml.safe_load(source.read_text())
    except yaml.YAMLError as exc:
        raise ExperimentsError(f"{source} is not valid YAML: {yaml_problem(exc)}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("experiments"), list) or not raw["experiments"]:
        raise ExperimentsError(f"{source} needs a top-level 'experiments:' list (see workbench/reports.py).")
    unknown = sorted(set(raw) - FILE_KEYS)
    if unknown:
        raise ExperimentsError(f"{source}: unknown key(s) {', '.join(unknown)}. Valid: {', '.join(sorted(FILE_KEYS))}.")
    notebooks_dir = _find_notebooks_dir(Path(raw.get("notebooks_dir", "notebooks")), source)
    defaults = _mapping(raw.get("parameters"), f"{source}: parameters")
    experiments, declared_cache = [], {}  # each notebook file is inspected once
    for i, entry in enumerate(raw["experiments"], 1):
        if not isinstance(entry, dict) or "name" not in entry:
            raise ExperimentsError(f"{source}: experiment #{i} needs a name (and notebooks, parameters, grid).")
        name = str(entry["name"])
        unknown = sorted(set(entry) - EXPERIMENT_KEYS)
        if unknown:
            raise ExperimentsError(
                f"experiment '{name}': unknown key(s) {', '.join(unknown)}. "
                f"Valid: {', '.join(sorted(EXPERIMENT_KEYS))}."
            )
        if _slug(name) != name:
            raise ExperimentsError(
                f"experiment '{name}': use letters, digits, '.', '-' and '_' only (it names a folder)."
            )
        specs = _notebook_specs(entry.get("notebooks"), name, notebooks_dir, declared_cache)
        own = _mapping(entry.get("parameters"), f"experiment '{name}': parameters")
        grid = entry.get("grid")
        for spec in specs:
            for key in spec.parameters:
                if key not in spec.declared:
                    raise ExperimentsError(
                        f"experiment '{name}', notebook {spec.name}: parameter '{key}' is not declared "
                        f"in its parameters cell. Declared: {', '.join(spec.declared) or 'none'}."
                    )
        # the file-wide parameters go wherever they are declared; the experiment's own must be taken by a notebook
        for key in [*own, *(grid if isinstance(grid, dict) else {})]:
            if not any(key in s.declared for s in specs):
                raise ExperimentsError(
                    f"experiment '{name}': parameter '{key}' is declared by none of its notebooks "
                    f"({', '.join(s.name for s in specs)}). Check the spelling, or list the notebook "
                    "that takes it."
                )
        parameters = {**defaults, **own}
        try:
            resources = Resources.parse(entry.get("resources", raw.get("resources")), f"experiment '{name}'")
        except ConfigError as exc:
            raise ExperimentsError(str(exc)) from None
        after = _earlier_experiments(entry.get("after"), name, experiments)
        for expanded, values, point in expand_grid(name, parameters, grid):
            experiments.append(Experiment(expanded, specs, values, point, dict(overrides or {}), resources, after))
    declared_anywhere = {key for declared in declared_cache.values() for key in declared}
    undeclared = sorted(set(overrides or {}) - declared_anywhere)
    if undeclared:
        raise ExperimentsError(
            f"{source}: --set {', '.join(map(repr, undeclared))} is declared by none of the notebooks "
            f"this file runs. Declared: {', '.join(sorted(declared_anywhere))}."
        )
    names = [e.name for e in experiments]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ExperimentsError(f"{source}: experiment name(s) {', '.join(duplicates)} appear more than once.")
    return Plan(source, experiments, Path(reports_dir or raw.get("reports_dir", "reports")))


# --------------------------------------------------------------------------------------------------
# Notebook side: what a notebook calls


def save_results(output_dir: str | Path | None, notebook: str, values: dict) -> Path | None:
    """Write a notebook's key results to ``<output_dir>/<notebook>.json`` for the report index.

    ``values`` should be scalars (metrics, counts, seconds) plus paths such as ``run_dir``. Nothing is
    written when ``output_dir`` is None (a notebook opened by hand).
    """
    if output_dir is None:
        return None
    path = Path(output_dir) / f"{notebook}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(values, indent=2, default=str))
    return path


def notebook_setup() -> Path:
    """First call of every notebook: work from the project root and set up display. Returns the root.

    Paths in notebook parameters (``runs``, ``reports/...``, data files) are relative to the project root,
    both in JupyterLab (whose kernels start in ``notebooks/``) and under ``workbench run``.
    """
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "notebooks").is_dir() and ((folder / "pyproject.toml").exists() or (folder / ".git").exists()):
            os.chdir(folder)
            here = folder
            break
    import pandas as pd

    try:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is not None:  # figures from workbench.plots display as PNGs (also in the HTML reports)
            shell.run_line_magic("matplotlib", "inline")
    except ImportError:
        pass
    pd.set_option("display.max_colwidth", 200)
    pd.set_option("display.width", 160)
    return here


# --------------------------------------------------------------------------------------------------
# Running


def _fingerprint(path: Path, parameters: dict) -> str:
    digest = hashlib.sha256(path.read_bytes())
    digest.update(json.dumps(parameters, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def _load_state(reports: Path) -> dict:
    path = reports / STATE_FILE
    if path.exists():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return {"experiments": {}}
    return {"experiments": {}}


def to_html(ipynb: Path, target: Path | None = None) -> Path:
    """Convert an executed notebook into one self-contained HTML page (no scripts from the network)."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="offline", extra_template_basedirs=[str(TEMPLATES)])
    body, _ = exporter.from_notebook_node(nbformat.read(ipynb, as_version=4))
    target = target or ipynb.with_suffix(".html")
    target.write_text(body, encoding="utf-8")
    return target


def _last_started_cell(nb) -> int | None:
    """0-based index of the last cell papermill started in an output notebook (the one that failed or hung)."""
    started = [i for i, c in enumerate(nb.cells) if c.get("metadata", {}).get("papermill", {}).get("start_time")]
    return started[-1] if started else None


def _failed_cell(ipynb: Path) -> int | None:
    """1-based number of the cell that was running when execution stopped."""
    import nbformat

    if not ipynb.exists():
        return None
    index = _last_started_cell(nbformat.read(ipynb, as_version=4))
    return None if index is None else index + 1


def _mark_dead_kernel(ipynb: Path, message: str) -> int | None:
    """Add the kernel's death as an error output to the cell that was running, so the HTML page shows it."""
    import nbformat

    if not ipynb.exists():
        return None
    nb = nbformat.read(ipynb, as_version=4)
    index = _last_started_cell(nb)
    if index is None:
        return None
    nb.cells[index].outputs.append(
        nbformat.v4.new_output(
            "error", ename="DeadKernelError", evalue=message, traceback=[f"DeadKernelError: {message}"]
        )
    )
    nbformat.write(nb, ipynb)
    return index + 1


def _execute(
    spec: NotebookSpec,
    parameters: dict,
    target: Path,
    experiment: str,
    kernel_name: str | None,
    cell_timeout: float | None,
    progress: bool,
) -> str | None:
    """Run one notebook with papermill; returns None on success, else a message naming the cell."""
    import papermill
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    where = f"experiment '{experiment}', notebook {spec.name}"
    try:
        papermill.execute_notebook(
            str(spec.path),
            str(target),
            parameters=parameters,
            kernel_name=kernel_name,
            cwd=os.getcwd(),
            progress_bar=progress,
            request_save_on_cell_execute=True,
            execution_timeout=cell_timeout,
        )
    except papermill.PapermillExecutionError as exc:
        return f"{where}, cell In [{exc.exec_count}]: {exc.ename}: {exc.evalue}"
    except DeadKernelError as exc:
        cell = _mark_dead_kernel(target, f"The kernel died while running this cell ({exc}).")
        return (
            f"{where}, cell #{cell}: the kernel died while running it (out of memory, a crash in native code, "
            "or os._exit). Rerun the notebook alone to see what it printed last."
        )
    except CellTimeoutError:
        cell = _failed_cell(target)
        return f"{where}, cell #{cell}: timed out after {cell_timeout} s."
    except Exception as exc:  # papermill/nbclient raise many types (missing kernel, bad notebook JSON, ...)
        return f"{where}: {type(exc).__name__}: {exc}"
    return None


def _run_notebook(
    spec: NotebookSpec,
    parameters: dict,
    target: Path,
    experiment: str,
    record: dict,
    kernel_name: str | None,
    cell_timeout: float | None,
    progress: bool,
) -> str | None:
    """Execute one notebook into ``target``, fill ``record`` (status, duration, results, HTML problem) and return
    its error line, or None."""
    results_file = target.with_suffix(".json")
    results_file.unlink(missing_ok=True)
    began = time.monotonic()
    error = _execute(spec, parameters, target, experiment, kernel_name, cell_timeout, progress)
    record["duration_s"] = round(time.monotonic() - began, 1)
    record["finished"] = datetime.now().isoformat(timespec="seconds")
    record["status"] = "failed" if error else "ok"
    if error:
        record["error"] = error
    if results_file.exists():
        record["results"] = json.loads(results_file.read_text())
    if target.exists():
        try:
            to_html(target)
        except Exception as exc:  # a page that cannot be drawn must not hide the notebook's own status
            record["html_error"] = f"HTML conversion failed: {type(exc).__name__}: {exc}"
    return error


@dataclass
class _ExperimentJob:
    """One experiment's notebooks and what running them needs: the item of one task of :meth:`Executor.map`."""

    experiment: Experiment
    reports: Path
    resume: bool
    previous: dict  # its notebooks' records in the index (--resume), for reports older than experiment.json
    first: int  # the number of its first notebook among all (for the "[3/12]" progress headers)
    total: int
    attempt: str  # this invocation's id: a retried task (its node was lost) keeps what its first try finished
    kernel_name: str | None
    cell_timeout: float | None
    progress: bool


def _previous_records(job: _ExperimentJob) -> dict:
    """The notebook records to keep: with --resume, the experiment's last ones; else only those of a lost try of
    this same invocation (a Ray task retried after its node died goes on where the first try stopped)."""
    path = job.reports / job.experiment.name / EXPERIMENT_STATE_FILE
    try:
        own = json.loads(path.read_text()) if path.exists() else {}
    except json.JSONDecodeError:
        own = {}
    if own.get("attempt") == job.attempt or job.resume:
        return own.get("notebooks") or job.previous
    return {}


def _run_experiment(job: _ExperimentJob) -> dict:
    """Run one experiment's notebooks in order (here, or as a Ray task in the shared folder) and return its entry
    for the index; its record is also kept in ``<reports>/<experiment>/experiment.json`` after every notebook.

    Over 80 lines because the per-notebook decision (kept, skipped after a failure, run) and its progress line
    share one record; split, the record would be built in three places.
    """
    experiment, reports = job.experiment, job.reports
    folder = reports / experiment.name
    folder.mkdir(parents=True, exist_ok=True)
    previous = _previous_records(job)
    entry = {
        "parameters": experiment.parameters,
        "grid_point": experiment.grid_point,
        "notebooks": {},
        "failed": 0,
        "attempt": job.attempt,
    }
    chained: dict = {}
    blocked = None
    for number, spec in enumerate(experiment.notebooks, job.first):
        parameters = experiment.parameters_for(spec)
        if "output_dir" in spec.declared:
            parameters.setdefault("output_dir", str(folder))
        if "run_dir" in spec.declared and "run_dir" in chained:
            parameters.setdefault("run_dir", chained["run_dir"])
        fingerprint = _fingerprint(spec.path, parameters)
        target = folder / f"{spec.name}.ipynb"
        record = {
            "status": None,
            "parameters": parameters,
            "fingerprint": fingerprint,
            "ipynb": f"{experiment.name}/{spec.name}.ipynb",
            "html": f"{experiment.name}/{spec.name}.html",
        }
        old = previous.get(spec.name)
        header = f"[{number}/{job.total}] {experiment.name} / {spec.name}"
        if (
            old
            and old.get("status") == "ok"
            and old.get("fingerprint") == fingerprint
            and (reports / old["html"]).exists()
        ):
            record.update({k: old[k] for k in ("status", "duration_s", "finished", "results") if k in old}, kept=True)
            print(f"{header}: ok before, kept")
        elif blocked:
            record.update(status="skipped", error=f"not run: {blocked} failed earlier in this experiment")
            print(f"{header}: skipped ({blocked} failed)")
        else:
            print(f"{header}: running")
            error = _run_notebook(
                spec, parameters, target, experiment.name, record, job.kernel_name, job.cell_timeout, job.progress
            )
            if error:
                entry["failed"] += 1
                blocked = spec.name
            print(
                f"{header}: {'FAILED' if error else 'ok'} in {record['duration_s']:.0f} s"
                + (f"\n  {error}" if error else "")
            )
        if record.get("results", {}).get("run_dir"):
            chained["run_dir"] = record["results"]["run_dir"]
        entry["notebooks"][spec.name] = record
        write_atomic(folder / EXPERIMENT_STATE_FILE, json.dumps(entry, indent=2, default=str))
    return entry


def run_experiments(
    path: str | Path,
    *,
    resume: bool = False,
    reports_dir: str | Path | None = None,
    overrides: dict | None = None,
    kernel_name: str | None = None,
    cell_timeout: float | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    executor: Executor | None = None,
) -> dict:
    """Run every notebook of every experiment in an experiments file and write the HTML reports and index.

    Args:
        path: the experiments YAML file.
        resume: skip notebooks that already succeeded with the same notebook file and parameters.
        reports_dir: where reports go (default: the file's ``reports_dir`` or ``reports``).
        overrides: parameter values that replace the file's in every notebook that declares them.
        kernel_name: Jupyter kernel (default: the notebook's, ``python3``).
        cell_timeout: seconds a single cell may run (None: no limit).
        progress: show papermill's per-cell progress bar.
        echo: where the runner's own lines go (a notebook's progress lines are printed where it runs).
        executor: None (or ``local``): the experiments one after another in this process; an entered
            :class:`~workbench.cluster.Executor` of kind ``ray``: one Ray task per experiment, reserving its
            ``resources:`` and waiting for the experiments named in its ``after:``.

    Returns:
        The index state: ``{"experiments": {name: {"notebooks": {stem: {...status, duration_s, ...}}}}}``,
        also written to ``<reports>/index.json``; ``state["failed"]`` counts this call's failures.
    """
    plan = load_experiments(path, reports_dir, overrides)
    reports = plan.reports_dir
    reports.mkdir(parents=True, exist_ok=True)
    state = _load_state(reports)
    total = sum(len(e.notebooks) for e in plan.experiments)
    firsts = itertools.accumulate([len(e.notebooks) for e in plan.experiments[:-1]], initial=1)
    attempt = f"{os.getpid()}-{time.time_ns()}"
    jobs = [
        _ExperimentJob(
            experiment,
            reports.resolve(),
            resume,
            state["experiments"].get(experiment.name, {}).get("notebooks", {}) if resume else {},
            first,
            total,
            attempt,
            kernel_name,
            cell_timeout,
            progress,
        )
        for experiment, first in zip(plan.experiments, firsts, strict=True)
    ]
    start = time.monotonic()
    failed = 0

    def finished(index: int, entry: dict, node: str | None) -> None:
        nonlocal failed
        experiment = plan.experiments[index]
        entry = {**entry, "source": str(plan.source)}
        if node:
            entry["node"] = node
        failed += entry.pop("failed")
        state["experiments"][experiment.name] = entry
        write_atomic(reports / STATE_FILE, json.dumps(state, indent=2, default=str))
        write_index(reports, state)

    names = [e.name for e in plan.experiments]
    (executor or Executor()).map(
        _run_experiment,
        jobs,
        names=names,
        resources=[e.resources for e in plan.experiments],
        after=[[names.index(n) for n in e.after] for e in plan.experiments],
        on_result=finished,
    )
    echo(f"{total} notebook(s), {failed} failed, {time.monotonic() - start:.0f} s; index: {reports / 'index.html'}")
    state["failed"] = failed
    return state


# --------------------------------------------------------------------------------------------------
# The index page


def _key_metrics(results: dict | None, limit: int = 4) -> list[tuple[str, str]]:
    if not results:
        return []
    shown = []
    for key, value in results.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        shown.append(
            (
                key,
                f"{value:.4f}"
                if isinstance(value, float) and abs(value) < 10
                else f"{value:,.0f}"
                if isinstance(value, float)
                else f"{value:,}",
            )
        )
    return shown[:limit]


def write_index(reports: str | Path, state: dict) -> Path:
    """Write ``<reports>/index.html``: every experiment and notebook with status, metrics, duration and links."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    reports = Path(reports)
    rows = []
    for name, experiment in state["experiments"].items():
        for notebook, record in experiment["notebooks"].items():
            html_path = reports / record["html"]
            rows.append(
                {
                    "experiment": name,
                    "grid": experiment.get("grid_point") or {},
                    "notebook": notebook,
                    "status": record.get("status"),
                    "kept": record.get("kept", False),
                    "metrics": _key_metrics(record.get("results")),
                    "duration": record.get("duration_s"),
                    "html": record["html"] if html_path.exists() else None,
                    "ipynb": record["ipynb"] if (reports / record["ipynb"]).exists() else None,
                    "error": record.get("error") or record.get("html_error"),
                    "finished": record.get("finished"),
                }
            )
    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "failed", "skipped")}
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html", "j2"]))
    page = env.get_template("index.html.j2").render(
        rows=rows, counts=counts, generated=datetime.now().isoformat(timespec="seconds")
    )
    target = reports / "index.html"
    target.write_text(page, encoding="utf-8")
    return target
