"""Figures for notebooks and HTML reports (matplotlib + seaborn).

Every function returns a ``matplotlib.figure.Figure`` built without pyplot's global state: the last
expression of a notebook cell shows it, and the batch runner's HTML report embeds that same image. Inputs
are plain tables and arrays (``(N,)`` labels, ``(K, K)`` matrices), so a figure never reaches into a model.

Example::

    from workbench import plots, runs
    run = runs.load_run("runs/sst2/version_0")
    plots.learning_curves_figure(run.log, metric="accuracy")
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from workbench.errors import WorkbenchError


def _figure(width: float = 7.0, height: float = 4.0, **subplots) -> tuple[Figure, object]:
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(**subplots)


def _check_columns(table: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise WorkbenchError(f"{what} needs the column(s) {', '.join(missing)}; the table has {', '.join(map(str, table.columns))}.")


def label_distribution_figure(counts: pd.DataFrame) -> Figure:
    """Bars of examples per label and split.

    Args:
        counts: one row per label with a ``label`` column and one count column per split (``train``,
            ``validation``, ``test``), as :func:`workbench.explore.label_table` returns.
    """
    _check_columns(counts, ["label"], "label_distribution_figure")
    splits = [c for c in ("train", "validation", "test") if c in counts.columns]
    long = counts.melt(id_vars="label", value_vars=splits, var_name="split", value_name="examples")
    fig, ax = _figure(max(6.0, 0.35 * len(counts) + 3), 4.0)
    sns.barplot(data=long, x="label", y="examples", hue="split", ax=ax)
    ax.set_title("Examples per label")
    ax.tick_params(axis="x", rotation=90 if len(counts) > 8 else 0)
    return fig


def token_length_figure(lengths: pd.DataFrame, max_length: int | None = None) -> Figure:
    """Histogram of token lengths per class, with the truncation length marked.

    Args:
        lengths: columns ``label`` and ``tokens`` (untruncated token count), e.g. from
            :func:`workbench.explore.token_lengths`.
        max_length: draw a line where inputs get truncated.
    """
    _check_columns(lengths, ["label", "tokens"], "token_length_figure")
    fig, ax = _figure()
    many = lengths["label"].nunique() > 10
    sns.histplot(data=lengths, x="tokens", hue=None if many else "label", element="step", bins=50,
                 stat="count", common_norm=False, ax=ax)
    if max_length:
        share = float((lengths["tokens"] > max_length).mean())
        ax.axvline(max_length, color="black", linestyle="--", linewidth=1)
        ax.text(max_length, ax.get_ylim()[1] * 0.95, f" max_length {max_length}\n {share:.1%} truncated", va="top")
    ax.set_title("Token lengths" + (" (all classes)" if many else " per class"))
    ax.set_xlabel("tokens per text (special tokens included)")
    return fig


def learning_curves_figure(log: pd.DataFrame, metric: str = "accuracy") -> Figure:
    """Training and validation loss, and the validation ``metric``, against the optimizer step.

    Args:
        log: the run's step log (:attr:`workbench.runs.Run.log`): ``step`` plus ``loss`` and ``eval_*`` columns.
        metric: the validation metric to plot (``accuracy``, ``micro_f1``, ...).
    """
    _check_columns(log, ["step"], "learning_curves_figure")
    fig, (loss_ax, metric_ax) = _figure(11.0, 4.0, ncols=2)
    if "loss" in log:
        train = log.dropna(subset=["loss"])
        loss_ax.plot(train["step"], train["loss"], label="train loss", alpha=0.8)
    if "eval_loss" in log:
        val = log.dropna(subset=["eval_loss"])
        loss_ax.plot(val["step"], val["eval_loss"], "o-", label="validation loss")
    loss_ax.set(xlabel="optimizer step", ylabel="loss", title="Loss")
    loss_ax.legend()
    column = f"eval_{metric.removeprefix('eval_')}"
    if column in log:
        val = log.dropna(subset=[column])
        metric_ax.plot(val["step"], val[column], "o-", color="tab:green")
        best = val.loc[val[column].idxmax()] if "loss" not in column else val.loc[val[column].idxmin()]
        metric_ax.annotate(f"best {best[column]:.4f}", (best["step"], best[column]), textcoords="offset points",
                           xytext=(0, -14), ha="center")
    else:
        metric_ax.text(0.5, 0.5, f"no '{column}' in the log\n(no evaluation ran)", ha="center", va="center",
                       transform=metric_ax.transAxes)
    metric_ax.set(xlabel="optimizer step", ylabel=metric, title=f"Validation {metric}")
    return fig


def most_confused_classes(matrix: np.ndarray, top_n: int) -> np.ndarray:
    """Indices of the ``top_n`` classes that take part in the most errors (as true or predicted class)."""
    errors = matrix - np.diag(np.diag(matrix))
    involvement = errors.sum(0) + errors.sum(1)
    return np.sort(np.argsort(-involvement, kind="stable")[:top_n])


def confusion_matrix_figure(matrix: np.ndarray | Sequence[Sequence[int]], label_names: Sequence[str],
                            normalize: bool = False, top_n: int = 20) -> Figure:
    """A confusion-matrix heatmap, in counts or normalized by the true class.

    Args:
        matrix: ``(K, K)`` counts, rows = true class, columns = predicted class.
        label_names: the K class names.
        normalize: divide each row by its total (recall on the diagonal).
        top_n: with more classes than this, show only the ``top_n`` classes involved in the most errors.
    """
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] != len(label_names):
        raise WorkbenchError(f"confusion_matrix_figure: the matrix is {matrix.shape} but there are {len(label_names)} "
                             "label names; it must be (K, K) for K labels.")
    names = np.asarray(label_names, dtype=object)
    title = "Confusion matrix" + (" (normalized by true class)" if normalize else " (counts)")
    if len(names) > top_n:
        keep = most_confused_classes(matrix, top_n)
        title += f", {top_n} most confused of {len(names)} classes"
    else:
        keep = np.arange(len(names))
    shown = matrix.astype(float)
    if normalize:
        shown = shown / np.clip(shown.sum(1, keepdims=True), 1, None)
    shown = shown[np.ix_(keep, keep)]
    size = max(4.5, 0.45 * len(keep) + 2.5)
    fig, ax = _figure(size + 1, size)
    sns.heatmap(shown, annot=len(keep) <= 25, fmt=".2f" if normalize else ".0f", cmap="Blues", square=True,
                xticklabels=names[keep], yticklabels=names[keep], cbar=True, ax=ax,
                vmin=0, vmax=1 if normalize else None)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    return fig


def metric_bar_chart(board: pd.DataFrame, metric: str, label: str = "run") -> Figure:
    """Horizontal bars of one metric per run, best on top (e.g. from :func:`workbench.runs.leaderboard`)."""
    _check_columns(board, [label, metric], "metric_bar_chart")
    table = board.dropna(subset=[metric]).sort_values(metric, ascending="loss" in metric)
    fig, ax = _figure(8.0, max(2.5, 0.4 * len(table) + 1.2))
    ax.barh(table[label].astype(str)[::-1], table[metric][::-1], color="tab:blue")
    for y, value in enumerate(table[metric][::-1]):
        ax.text(value, y, f" {value:.4f}", va="center")
    low = float(table[metric].min()) if len(table) else 0.0
    ax.set_xlim(max(0.0, low - 0.1) if "loss" not in metric else 0.0, None)
    ax.set(xlabel=metric, title=f"{metric} by run")
    return fig
