"""Run directories: their layout, what a run records in them, and reading finished runs back.

One module owns the layout of ``<run.root>/<run.name>/version_N/``; the trainer writes through
:class:`RunDir`, and everything else (models, cross-validation, notebooks, reports) reads through it::

    config.yaml      the resolved config            metrics.json   validation/test metrics, speed
    env.json         seed, packages, git, hardware  log.jsonl      one JSON line per logged step
    labels.json      the label <-> id map           summary.md     the short human-readable version
    best/            the best model                 last           link to the newest full checkpoint
    checkpoints/     transformers.Trainer checkpoints (checkpoint-N, rotated)
    calibration.json temperature scaling, when the run was calibrated

Example::

    run = load_run("runs/sst2/version_0")
    run.log.tail()                                # one row per logged step (train and eval)
    board = leaderboard("runs")                   # one row per finished run
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from functools import cached_property
from importlib import metadata as importlib_metadata
from pathlib import Path

import pandas as pd
import torch
import yaml

from workbench.config import Config, config_from_dict
from workbench.errors import ModelLoadError, WorkbenchError
from workbench.metrics import SUMMARY_METRICS, greater_is_better

log = logging.getLogger(__name__)

PACKAGES = (
    "torch",
    "transformers",
    "accelerate",
    "scikit-learn",
    "numpy",
    "pandas",
    "tokenizers",
    "safetensors",
    "setfit",
    "sentence-transformers",
)
CHECKPOINT_PREFIX = "checkpoint-"  # transformers.Trainer's name for checkpoint folders (checkpoint-<step>)


class RunNotFoundError(WorkbenchError, FileNotFoundError):
    """A run directory does not exist or is not a finished run."""


class RunDir:
    """The layout of one run directory, ``<root>/<name>/version_N/``: every name in it is defined here.

    Example:
        >>> run_dir = RunDir.next_version("runs", "trec")      # creates runs/trec/version_<N+1>  # doctest: +SKIP
        >>> run_dir.best, run_dir.latest_checkpoint()          # doctest: +SKIP
    """

    CONFIG, METRICS, ENV, LABELS = "config.yaml", "metrics.json", "env.json", "labels.json"
    LOG, SUMMARY, CALIBRATION = "log.jsonl", "summary.md", "calibration.json"
    BEST, LAST, CHECKPOINTS = "best", "last", "checkpoints"
    TRACKING, TENSORBOARD = "tracking.json", "tensorboard"  # workbench.track: tracker run ids, TensorBoard events
    EXPORTS = "exports"  # workbench.export: one folder per engine, exports/<engine>/
    BEHAVIOR = "behavior"  # workbench.behave: <suite>.json, one per behavioural suite run on the model
    TRAINING_ROWS = "training_rows.json"  # data.shots: the rows of the training split sampled for the run
    FINISHED = (CONFIG, METRICS)  # written last: a run with both has finished
    COMPLETE = "complete.json"  # written into a checkpoint after its last file: its files and their sizes
    VERSION = "version_"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # -- versions -----------------------------------------------------------------------------------

    @classmethod
    def versions(cls, root: str | Path, name: str) -> list[RunDir]:
        """Every ``version_N`` folder of a run name, by N ascending."""
        base = Path(root) / name
        numbered = [
            (int(p.name[len(cls.VERSION) :]), p)
            for p in base.glob(f"{cls.VERSION}*")
            if p.name[len(cls.VERSION) :].isdigit()
        ]
        return [cls(p) for _, p in sorted(numbered)]

    @classmethod
    def latest(cls, root: str | Path, name: str) -> RunDir | None:
        """The newest version of a run name that finished or can be resumed (a run that failed before its first
        whole checkpoint is skipped), or None when it has none."""
        usable = [run for run in cls.versions(root, name) if run.is_finished() or run.latest_checkpoint(warn=False)]
        return usable[-1] if usable else None

    @classmethod
    def next_version(cls, root: str | Path, name: str) -> RunDir:
        """Create ``<root>/<name>/version_N`` with N one above the highest existing version (failed ones count:
        a number is never used twice)."""
        versions = cls.versions(root, name)
        number = int(versions[-1].path.name[len(cls.VERSION) :]) + 1 if versions else 0
        path = Path(root) / name / f"{cls.VERSION}{number}"
        path.mkdir(parents=True)
        return cls(path)

    @classmethod
    def of_checkpoints(cls, checkpoints: str | Path) -> RunDir:
        """The run whose ``checkpoints/`` folder this is (what transformers calls ``output_dir``)."""
        return cls(Path(checkpoints).parent)

    # -- what is inside -----------------------------------------------------------------------------

    @property
    def best(self) -> Path:
        return self.path / self.BEST

    def export_folder(self, engine: str) -> Path:
        """Where ``workbench export`` writes this run's export for ``engine`` by default."""
        return self.path / self.EXPORTS / engine

    @property
    def checkpoints(self) -> Path:
        return self.path / self.CHECKPOINTS

    def is_finished(self) -> bool:
        return all((self.path / name).exists() for name in self.FINISHED)

    def checkpoint_folders(self) -> list[Path]:
        """Every ``checkpoints/checkpoint-N`` folder, whole or not, newest first."""
        found = [
            p for p in self.checkpoints.glob(f"{CHECKPOINT_PREFIX}*") if p.name[len(CHECKPOINT_PREFIX) :].isdigit()
        ]
        return sorted(found, key=checkpoint_step, reverse=True)

    def latest_checkpoint(self, warn: bool = True) -> Path | None:
        """The newest whole checkpoint of the run (see :func:`checkpoint_problem`); newer ones that a crash left
        half-written are skipped, with a warning naming them."""
        for folder in self.checkpoint_folders():
            problem = checkpoint_problem(folder)
            if problem is None:
                return folder
            if warn:
                log.warning("Skipping %s: %s.", folder, problem)
        return None

    def link_last(self) -> None:
        """Point ``last`` at the newest complete checkpoint (relative, so the run folder can move)."""
        newest = self.latest_checkpoint()
        if newest is None:
            return
        point_link(self.path / self.LAST, newest.relative_to(self.path))

    def write_json(self, name: str, values: dict) -> None:
        write_atomic(self.path / name, json.dumps(values, indent=2, default=str))

    def record_start(self, config, environment: dict, labels: dict, training_rows: dict | None = None) -> None:
        """What a run writes before it trains: its config, environment and labels, and the rows a few-shot sample
        drew (``data.shots``)."""
        config.save(self.path / self.CONFIG)
        self.write_json(self.ENV, environment)
        self.write_json(self.LABELS, labels)
        if training_rows is not None:
            self.write_json(self.TRAINING_ROWS, training_rows)

    def record_finish(self, model, metrics: dict) -> None:
        """What makes a run finished: ``best/``, the ``last`` link, ``summary.md`` and, last, ``metrics.json``."""
        save_best(model, self.best)
        self.link_last()
        write_atomic(self.path / self.SUMMARY, summary_markdown(self.path, metrics))
        self.write_json(self.METRICS, metrics)  # last: with it the run counts as finished

    def read_json(self, name: str) -> dict:
        """A JSON record of the run (``{}`` when the run has not written it)."""
        path = self.path / name
        return json.loads(path.read_text()) if path.exists() else {}


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it into place: a crash leaves the old file or
    the new one, never half of one."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(text)
    os.replace(partial, path)


def checkpoint_step(checkpoint: Path) -> int:
    """The optimizer step a ``checkpoint-N`` folder was saved at."""
    return int(checkpoint.name[len(CHECKPOINT_PREFIX) :])


def mark_complete(checkpoint: Path) -> None:
    """Record that every file of ``checkpoint`` is written (their names and sizes), as its last file."""
    files = {
        p.name: p.stat().st_size for p in sorted(checkpoint.iterdir()) if p.is_file() and p.name != RunDir.COMPLETE
    }
    write_atomic(checkpoint / RunDir.COMPLETE, json.dumps({"files": files}, indent=1))


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why ``checkpoint`` cannot be resumed from, or None when it is whole: its :data:`RunDir.COMPLETE` record
    exists and every file it lists is there with the size it was written with."""
    record = checkpoint / RunDir.COMPLETE
    if not record.exists():
        return f"it is incomplete (no {RunDir.COMPLETE}: the process stopped while writing it)"
    try:
        files = json.loads(record.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"its {RunDir.COMPLETE} is unreadable"
    for name, size in files.items():
        path = checkpoint / name
        if not path.is_file() or path.stat().st_size != size:
            return f"{name} is missing or has changed size since the checkpoint was written"
    return None


def point_link(link: Path, target: Path) -> None:
    """Make ``link`` a symbolic link to ``target``, replacing whatever link, file or folder was there.

    The new link is made under a temporary name and renamed over the old one (an atomic step), so processes
    that re-point the same link at once (tuning workers marking the best trial) never see it missing or race
    to remove it.
    """
    if link.is_dir() and not link.is_symlink():
        shutil.rmtree(link)
    link.parent.mkdir(parents=True, exist_ok=True)
    fresh = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    fresh.unlink(missing_ok=True)
    fresh.symlink_to(target, target_is_directory=True)
    os.replace(fresh, link)


def model_folder(path: str | Path) -> Path:
    """The model folder of a run directory (its ``best/``); any other path as it is."""
    best = RunDir(path).best
    _restore_best(best)
    return best if best.is_dir() else Path(path)


def _restore_best(best: Path) -> None:
    """Put back the previous ``best/`` if a crash came between :func:`save_best`'s two renames."""
    old = best.with_name(f".{best.name}.old")
    if not best.exists() and old.is_dir():
        old.rename(best)


def save_best(model, best: Path) -> None:
    """Write ``model`` (anything with ``save_pretrained``) as ``best/`` without ever leaving half of one: it is
    written beside it and swapped in by two renames. A crash between them leaves the previous one under
    ``.best.old``, which :func:`model_folder` and the next save put back."""
    partial, old = best.with_name(f".{best.name}.partial"), best.with_name(f".{best.name}.old")
    _restore_best(best)
    for stale in (partial, old):
        if stale.exists():
            shutil.rmtree(stale)
    model.save_pretrained(partial)
    if best.exists():
        best.rename(old)
    partial.rename(best)
    shutil.rmtree(old, ignore_errors=True)


def resume_point(path: str | Path) -> tuple[RunDir, Path]:
    """The run directory and checkpoint to resume from, given a run directory or one of its checkpoints.

    Raises:
        ModelLoadError: when there is no complete checkpoint there, saying what to do instead.
    """
    path = Path(path)
    if path.name.startswith(CHECKPOINT_PREFIX):
        run = RunDir(path.parent.parent)
        problem = checkpoint_problem(path)
        if problem:
            raise ModelLoadError(
                f"Cannot resume from {path}: {problem}. Resume from the run directory {run.path} "
                "to use its newest whole checkpoint."
            )
        return run, path
    run = RunDir(path)
    if not path.is_dir():
        raise ModelLoadError(
            f"Cannot resume {path}: no such run directory. Give runs/<name>/version_N, or --resume "
            "alone for the newest version of run.name."
        )
    checkpoint = run.latest_checkpoint()
    if checkpoint is None:
        raise ModelLoadError(
            f"{run.path} has no whole checkpoint to resume from ({RunDir.CHECKPOINTS}/"
            f"{CHECKPOINT_PREFIX}N with its {RunDir.COMPLETE}). Start a new run instead."
        )
    return run, checkpoint


def cpu_model() -> str | None:
    """The processor's model name (``/proc/cpuinfo`` on Linux), which every published time should name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def cpu_bf16_matrix_units() -> bool:
    """Whether the CPU multiplies bf16 matrices in hardware (Intel AMX: the ``amx_bf16`` flag in ``/proc/cpuinfo``),
    where bf16 autocast trains a 768-wide encoder about 2-3 times faster than fp32 (bench/README.md). Without AMX
    (AVX-512 or AVX2 only) bf16 autocast is no faster than fp32, or slower."""
    try:
        return any(
            line.startswith("flags") and "amx_bf16" in line.split()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
        )
    except OSError:
        return False


def machine_info() -> dict:
    """The hardware a time was measured on: platform, CPU model and cores, bf16 matrix units, torch threads, GPU."""
    return {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_bf16_matrix_units": cpu_bf16_matrix_units(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def _git(*args: str) -> str:
    """What git prints for ``args`` in this package's checkout (stripped); raises OSError/SubprocessError."""
    run = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, cwd=Path(__file__).resolve().parent)
    return run.stdout.strip()


def environment_info(seed: int) -> dict:
    """Seed, package versions, git commit, Python and hardware (:func:`machine_info`), saved next to every run."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = None
    try:
        commit = _git("rev-parse", "HEAD") or None
        dirty = bool(_git("status", "--porcelain"))
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {
        "seed": seed,
        "packages": versions,
        "git_commit": commit,
        "git_dirty": dirty,
        "python": sys.version.split()[0],
        **machine_info(),
        "command": " ".join(sys.argv),
    }


def summary_markdown(run_dir: str | Path, metrics: dict) -> str:
    """A short human-readable summary of a finished run (its ``summary.md``)."""
    val, train = metrics["validation"], metrics["train"]
    keys = [k for k in SUMMARY_METRICS if val.get(k) is not None]
    number = lambda v: "n/a" if v is None else f"{v:.4f}"
    lines = [f"# Run {run_dir}", "", "| split | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for split in ("validation", "test"):
        if split in metrics:
            lines.append(f"| {split} | " + " | ".join(number(metrics[split].get(k)) for k in keys) + " |")
    lines += [
        "",
        f"- examples: {train['examples']}, epochs: {train['epochs']:.2f}, optimizer steps: {train['optimizer_steps']}",
        f"- training time: {train['runtime_s']:.0f} s, {train['samples_per_s'] or 0:.1f} samples/s"
        + (
            f", {train['tokens_per_s'] or 0:.0f} tokens/s (padding ratio {train['padding_ratio']:.3f})"
            if train.get("padding_ratio") is not None
            else f" ({train.get('method', 'finetune')}: pairs of examples per second)"
        ),
        (
            f"- best checkpoint: {metrics['best_checkpoint']} ({metrics['monitor']} = {metrics['best_metric']})"
            if metrics["best_checkpoint"]
            else f"- the final model kept (no checkpoints; validation {metrics['monitor']} = {metrics['best_metric']})"
        ),
        f"- device: {metrics['device']}, precision: {metrics['precision']}",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Reading finished runs


@dataclass
class Run:
    """One finished run directory and what it recorded."""

    path: Path
    config: Config
    metrics: dict
    env: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}"

    @property
    def model_dir(self) -> Path:
        """The best model's folder (``TextClassificationModel.from_pretrained`` reads it)."""
        return RunDir(self.path).best

    @cached_property
    def log(self) -> pd.DataFrame:
        """The step log: one row per logged event with ``step``, ``epoch`` and ``loss`` or ``eval_*`` columns."""
        return read_log(self.path)


def load_run(run_dir: str | Path) -> Run:
    """Open a finished run directory, or raise :class:`RunNotFoundError` saying what is missing.

    Args:
        run_dir: ``runs/<name>/version_N`` (a run name folder ``runs/<name>`` opens its newest version).
    """
    path = Path(run_dir)
    if not path.exists():
        raise RunNotFoundError(
            f"Run directory {path} does not exist. Give a folder written by `workbench train` "
            "(runs/<name>/version_N), or leave run_dir empty to train a small run first."
        )
    run = RunDir(path)
    if not (path / RunDir.CONFIG).exists():  # a run name folder: its newest finished version, else its newest
        versions = RunDir.versions(path.parent, path.name)
        finished = [version for version in versions if version.is_finished()]
        run = (finished or versions or [run])[-1]
    missing = [name for name in RunDir.FINISHED if not (run / name).exists()]
    if missing:
        raise RunNotFoundError(
            f"{run.path} is not a finished run: {', '.join(missing)} missing. The run may still be "
            "training or was interrupted; resume it with `workbench train --resume "
            f"{run.path}`."
        )
    config = config_from_dict(yaml.safe_load((run / RunDir.CONFIG).read_text()))
    return Run(run.path, config, run.read_json(RunDir.METRICS), run.read_json(RunDir.ENV))


def read_log(run_dir: str | Path) -> pd.DataFrame:
    """The run's ``log.jsonl`` as a table (empty if nothing was logged)."""
    path = Path(run_dir) / RunDir.LOG
    if not path.exists():
        return pd.DataFrame(columns=["step", "epoch"])
    return pd.DataFrame(_log_records(path))


def _log_records(path: Path) -> list[dict]:
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:  # a line a crash cut short
            continue
    return records


def trim_log(path: Path, step: int) -> None:
    """Before resuming at ``step``: drop from ``log.jsonl`` what a killed run logged after that step (training logs
    it again) and any line the kill cut short."""
    if path.exists():
        kept = [record for record in _log_records(path) if record.get("step", 0) <= step]
        write_atomic(path, "".join(json.dumps(record) + "\n" for record in kept))


def list_runs(root: str | Path = "runs") -> list[Path]:
    """Every finished run directory under ``root``, oldest first."""
    root = Path(root)
    if not root.exists():
        return []
    found = [p.parent for p in root.rglob(RunDir.METRICS) if RunDir(p.parent).is_finished()]
    return sorted(found, key=lambda p: (p / RunDir.METRICS).stat().st_mtime)


def _flatten(values: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value if not isinstance(value, list) else str(value)
    return flat


def config_differences(configs: list[Config]) -> pd.DataFrame:
    """The config keys whose values differ between runs, one row per config (``run.*`` keys left out)."""
    flat = pd.DataFrame([_flatten(c.to_dict()) for c in configs])
    varying = [c for c in flat.columns if not c.startswith("run.") and flat[c].astype(str).nunique() > 1]
    return flat[varying]


def leaderboard(root: str | Path = "runs", metric: str | None = None) -> pd.DataFrame:
    """One row per finished run under ``root``: the settings that differ, scores, training time and speed.

    Args:
        root: the runs root (``run.root``).
        metric: the score to sort by (default: each run's monitored metric, e.g. accuracy or micro_f1).

    Returns:
        A DataFrame sorted best first with columns ``run``, ``dataset``, the differing config keys,
        ``val_<metric>`` / ``test_<metric>`` for the summary metrics, ``train_s``, ``samples_per_s``,
        ``epochs``, ``finished`` and, for each behavioural suite run on a model (``workbench behave``),
        ``behavior_<suite>``: its mean failure rate over the suite's tests. Empty when there are no runs.
    """
    runs = [load_run(p) for p in list_runs(root)]
    if not runs:
        return pd.DataFrame(columns=["run", "dataset", "train_s", "samples_per_s"])
    rows = []
    for run in runs:
        m, train = run.metrics, run.metrics.get("train", {})
        row = {
            "run": run.name,
            "path": str(run.path),
            "dataset": run.config.data.dataset or Path(run.config.data.train_file or "?").name,
            "monitor": m.get("monitor"),
        }
        for split, short in (("validation", "val"), ("test", "test")):
            for key in SUMMARY_METRICS:
                if m.get(split, {}).get(key) is not None:
                    row[f"{short}_{key}"] = m[split][key]
        row.update(
            {
                "train_s": train.get("runtime_s"),
                "samples_per_s": train.get("samples_per_s"),
                "epochs": train.get("epochs"),
                "finished": pd.Timestamp((run.path / RunDir.METRICS).stat().st_mtime, unit="s").floor("s"),
            }
        )
        for suite in sorted((run.path / RunDir.BEHAVIOR).glob("*.json")):  # workbench behave: mean failure rate
            row[f"behavior_{suite.stem}"] = json.loads(suite.read_text()).get("failure_rate")
        rows.append(row)
    table = pd.DataFrame(rows)
    differences = config_differences([r.config for r in runs]).drop(columns=["data.dataset"], errors="ignore")
    table = pd.concat([table.iloc[:, :3], differences.reset_index(drop=True), table.iloc[:, 3:]], axis=1)
    metric = metric or f"val_{table['monitor'].mode().iloc[0]}"
    if metric not in table:
        raise WorkbenchError(
            f"No run recorded '{metric}'. Available: "
            f"{', '.join(c for c in table.columns if c.startswith(('val_', 'test_')))}."
        )
    return table.sort_values(metric, ascending=not greater_is_better(metric), na_position="last").reset_index(drop=True)


def metrics_table(run: Run) -> pd.DataFrame:
    """The run's headline metrics: one row per split (validation, test), one column per summary metric."""
    rows = {
        split: {k: run.metrics[split].get(k) for k in SUMMARY_METRICS if run.metrics[split].get(k) is not None}
        for split in ("validation", "test")
        if split in run.metrics
    }
    return pd.DataFrame(rows).T


def training_facts(run: Run) -> dict:
    """Time, speed and the best checkpoint of a run, as one flat dict for display and reports."""
    train = run.metrics.get("train", {})
    return {
        "run_dir": str(run.path),
        "monitor": run.metrics.get("monitor"),
        "best_metric": run.metrics.get("best_metric"),
        "train_s": train.get("runtime_s"),
        "samples_per_s": train.get("samples_per_s"),
        "epochs": train.get("epochs"),
        "optimizer_steps": train.get("optimizer_steps"),
        "device": run.metrics.get("device"),
        "precision": run.metrics.get("precision"),
    }
