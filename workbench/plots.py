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
from workbench.metrics import greater_is_better


def _figure(width: float = 7.0, height: float = 4.0, **subplots) -> tuple[Figure, object]:
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(**subplots)


def _check_columns(table: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise WorkbenchError(
            f"{what} needs the column(s) {', '.join(missing)}; the table has {', '.join(map(str, table.columns))}."
        )


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
    sns.histplot(
        data=lengths,
        x="tokens",
        hue=None if many else "label",
        element="step",
        bins=50,
        stat="count",
        common_norm=False,
        ax=ax,
    )
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
        metric_ax.annotate(
            f"best {best[column]:.4f}",
            (best["step"], best[column]),
            textcoords="offset points",
            xytext=(0, -14),
            ha="center",
        )
    else:
        metric_ax.text(
            0.5,
            0.5,
            f"no '{column}' in the log\n(no evaluation ran)",
            ha="center",
            va="center",
            transform=metric_ax.transAxes,
        )
    metric_ax.set(xlabel="optimizer step", ylabel=metric, title=f"Validation {metric}")
    return fig


def most_confused_classes(matrix: np.ndarray, top_n: int) -> np.ndarray:
    """Indices of the ``top_n`` classes that take part in the most errors (as true or predicted class)."""
    errors = matrix - np.diag(np.diag(matrix))
    involvement = errors.sum(0) + errors.sum(1)
    return np.sort(np.argsort(-involvement, kind="stable")[:top_n])


def confusion_matrix_figure(
    matrix: np.ndarray | Sequence[Sequence[int]], label_names: Sequence[str], normalize: bool = False, top_n: int = 20
) -> Figure:
    """A confusion-matrix heatmap, in counts or normalized by the true class.

    Args:
        matrix: ``(K, K)`` counts, rows = true class, columns = predicted class.
        label_names: the K class names.
        normalize: divide each row by its total (recall on the diagonal).
        top_n: with more classes than this, show only the ``top_n`` classes involved in the most errors.
    """
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] != len(label_names):
        raise WorkbenchError(
            f"confusion_matrix_figure: the matrix is {matrix.shape} but there are {len(label_names)} "
            "label names; it must be (K, K) for K labels."
        )
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
    sns.heatmap(
        shown,
        annot=len(keep) <= 25,
        fmt=".2f" if normalize else ".0f",
        cmap="Blues",
        square=True,
        xticklabels=names[keep],
        yticklabels=names[keep],
        cbar=True,
        ax=ax,
        vmin=0,
        vmax=1 if normalize else None,
    )
    ax.set(xlabel="predicted", ylabel="true", title=title)
    return fig


def metric_bar_chart(board: pd.DataFrame, metric: str, label: str = "run") -> Figure:
    """Horizontal bars of one metric per run, best on top (e.g. from :func:`workbench.runs.leaderboard`)."""
    _check_columns(board, [label, metric], "metric_bar_chart")
    table = board.dropna(subset=[metric]).sort_values(metric, ascending=not greater_is_better(metric))
    fig, ax = _figure(8.0, max(2.5, 0.4 * len(table) + 1.2))
    ax.barh(table[label].astype(str)[::-1], table[metric][::-1], color="tab:blue")
    for y, value in enumerate(table[metric][::-1]):
        ax.text(value, y, f" {value:.4f}", va="center")
    low = float(table[metric].min()) if len(table) else 0.0
    ax.set_xlim(max(0.0, low - 0.1) if "loss" not in metric else 0.0, None)
    ax.set(xlabel=metric, title=f"{metric} by run")
    return fig


def _binary_targets(y_true: np.ndarray, proba: np.ndarray, multi_label: bool) -> np.ndarray:
    """(N, K) 0/1 truth for one-vs-rest curves, with a clear error when the arrays disagree."""
    y_true, proba = np.asarray(y_true), np.asarray(proba)
    if proba.ndim != 2:
        raise WorkbenchError(f"proba must be (N, K); got shape {proba.shape}.")
    if multi_label:
        if y_true.shape != proba.shape:
            raise WorkbenchError(
                f"multi-label y_true has shape {y_true.shape} but proba is {proba.shape}; both must be (N, K)."
            )
        return y_true.astype(int)
    if y_true.shape != (len(proba),):
        raise WorkbenchError(
            f"y_true has shape {y_true.shape} but proba is {proba.shape}: give (N,) class ids for the "
            "same N examples (or multi_label=True with (N, K) multi-hot labels)."
        )
    return np.eye(proba.shape[1], dtype=int)[y_true]


def roc_pr_figure(
    y_true, proba, label_names: Sequence[str], multi_label: bool = False, max_classes: int = 10
) -> Figure:
    """ROC and precision-recall curves: one per class (up to ``max_classes``), plus micro and macro averages.

    Args:
        y_true: ``(N,)`` class ids, or ``(N, K)`` multi-hot for multi-label.
        proba: ``(N, K)`` predicted probabilities.
        label_names: the K class names.
        max_classes: draw per-class curves for the most frequent classes only beyond this many.
    """
    from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

    target = _binary_targets(y_true, proba, multi_label)
    proba = np.asarray(proba, dtype=float)
    if target.shape[1] != len(label_names):
        raise WorkbenchError(f"proba has {target.shape[1]} classes but there are {len(label_names)} label names.")
    present = np.flatnonzero((target.sum(0) > 0) & (target.sum(0) < len(target)))
    fig, (roc_ax, pr_ax) = _figure(12.0, 5.0, ncols=2)
    grid = np.linspace(0, 1, 201)
    tprs, aucs = [], []
    shown = present[np.argsort(-target[:, present].sum(0), kind="stable")][:max_classes]
    for k in present:
        fpr, tpr, _ = roc_curve(target[:, k], proba[:, k])
        tprs.append(np.interp(grid, fpr, tpr))
        aucs.append(auc(fpr, tpr))
        if k in shown:
            roc_ax.plot(fpr, tpr, linewidth=1, alpha=0.7, label=f"{label_names[k]} ({aucs[-1]:.3f})")
            precision, recall, _ = precision_recall_curve(target[:, k], proba[:, k])
            ap = average_precision_score(target[:, k], proba[:, k])
            pr_ax.plot(recall, precision, linewidth=1, alpha=0.7, label=f"{label_names[k]} ({ap:.3f})")
    fpr, tpr, _ = roc_curve(target[:, present].ravel(), proba[:, present].ravel())
    roc_ax.plot(fpr, tpr, color="black", linewidth=2, label=f"micro avg ({auc(fpr, tpr):.3f})")
    roc_ax.plot(
        grid, np.mean(tprs, 0), color="black", linestyle="--", linewidth=2, label=f"macro avg ({np.mean(aucs):.3f})"
    )
    roc_ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    precision, recall, _ = precision_recall_curve(target[:, present].ravel(), proba[:, present].ravel())
    micro_ap = average_precision_score(target[:, present], proba[:, present], average="micro")
    macro_ap = average_precision_score(target[:, present], proba[:, present], average="macro")
    pr_ax.plot(recall, precision, color="black", linewidth=2, label=f"micro avg ({micro_ap:.3f})")
    pr_ax.plot([], [], color="black", linestyle="--", label=f"macro AP {macro_ap:.3f}")
    note = f" ({len(shown)} of {len(present)} classes drawn)" if len(shown) < len(present) else ""
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (AUC)" + note)
    pr_ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (average precision)" + note)
    for ax in (roc_ax, pr_ax):
        ax.legend(fontsize=7, loc="lower right" if ax is roc_ax else "lower left")
    return fig


def reliability_figure(
    table: pd.DataFrame, ece: float | None = None, after: pd.DataFrame | None = None, ece_after: float | None = None
) -> Figure:
    """A reliability diagram: accuracy against confidence per bin, with the ECE (and, if given, after scaling).

    Args:
        table: bins from :func:`workbench.calibration.reliability_table`.
        after: the same bins after temperature scaling, drawn beside.
    """
    _check_columns(table, ["bin_low", "bin_high", "count", "confidence", "accuracy"], "reliability_figure")
    panels = [(table, ece, "before")] + ([(after, ece_after, "after temperature scaling")] if after is not None else [])
    fig, axes = _figure(5.5 * len(panels), 5.0, ncols=len(panels), squeeze=False)
    for ax, (bins, value, name) in zip(axes[0], panels, strict=True):
        width = bins["bin_high"] - bins["bin_low"]
        ax.bar(
            bins["bin_low"],
            bins["accuracy"].fillna(0),
            width=width,
            align="edge",
            edgecolor="black",
            color="tab:blue",
            alpha=0.8,
            label="accuracy",
        )
        gap = bins["confidence"] - bins["accuracy"]
        ax.bar(
            bins["bin_low"],
            gap.fillna(0),
            bottom=bins["accuracy"].fillna(0),
            width=width,
            align="edge",
            color="tab:red",
            alpha=0.3,
            hatch="//",
            label="gap",
        )
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--")
        title = "Reliability" + ("" if name == "before" else f" {name}")
        ax.set(
            xlim=(0, 1),
            ylim=(0, 1),
            xlabel="confidence",
            ylabel="accuracy",
            title=title + (f"\nECE {value:.4f}" if value is not None else ""),
        )
        ax.legend(loc="upper left")
    return fig


def accuracy_by_length_figure(lengths, correct, bins: int = 8) -> Figure:
    """Accuracy per text-length bucket (quantile buckets of token length), with the bucket sizes."""
    lengths, correct = np.asarray(lengths), np.asarray(correct, dtype=float)
    if lengths.shape != correct.shape or lengths.ndim != 1:
        raise WorkbenchError(f"lengths {lengths.shape} and correct {correct.shape} must be two (N,) arrays.")
    buckets = pd.qcut(lengths, q=min(bins, len(np.unique(lengths))), duplicates="drop")
    table = (
        pd.DataFrame({"bucket": buckets, "correct": correct})
        .groupby("bucket", observed=True)["correct"]
        .agg(["mean", "size"])
    )
    fig, ax = _figure(8.0, 4.0)
    labels = [f"{int(np.ceil(i.left))}-{int(i.right)}" for i in table.index]
    ax.bar(labels, table["mean"], color="tab:blue")
    for x, (value, size) in enumerate(zip(table["mean"], table["size"], strict=True)):
        ax.text(x, value, f"{value:.2f}\nn={size}", ha="center", va="bottom", fontsize=8)
    ax.set(xlabel="tokens", ylabel="accuracy", ylim=(0, 1.15), title="Accuracy by text length")
    return fig


def latency_figure(table: pd.DataFrame) -> Figure:
    """Throughput and p50/p95 latency against batch size, one line per sequence length (and engine).

    Args:
        table: from :func:`workbench.inference.benchmark_inference`.
    """
    _check_columns(
        table, ["engine", "seq_length", "batch_size", "p50_ms", "p95_ms", "examples_per_s"], "latency_figure"
    )
    fig, (speed_ax, latency_ax) = _figure(11.0, 4.0, ncols=2)
    for (engine, length), rows in table.groupby(["engine", table["seq_length"].astype(str)], sort=False):
        label = f"{engine}, {length} tokens" if length != "natural" else f"{engine}, natural lengths"
        speed_ax.plot(rows["batch_size"], rows["examples_per_s"], "o-", label=label)
        line = latency_ax.plot(rows["batch_size"], rows["p50_ms"], "o-", label=f"{label} p50")[0]
        latency_ax.plot(rows["batch_size"], rows["p95_ms"], "x--", color=line.get_color(), label=f"{label} p95")
    for ax in (speed_ax, latency_ax):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.legend(fontsize=7)
    speed_ax.set(ylabel="examples / s", title="Throughput")
    latency_ax.set(ylabel="ms per batch", title="Latency", yscale="log")
    return fig


def augmentation_figure(table: pd.DataFrame) -> Figure:
    """How much each augmentation operation changes a text: the share of words changed and the length change
    (in words) of every variant, one box per operation.

    Args:
        table: from :func:`workbench.explore.augmented_examples`.
    """
    _check_columns(table, ["op", "words_changed", "length_change"], "augmentation_figure")
    fig, (share_ax, length_ax) = _figure(11.0, 3.8, ncols=2)
    order = sorted(table["op"].unique())
    sns.boxplot(data=table, x="op", y="words_changed", order=order, ax=share_ax, color="tab:blue")
    sns.boxplot(data=table, x="op", y="length_change", order=order, ax=length_ax, color="tab:orange")
    share_ax.set(xlabel="operation", ylabel="share of words changed", title="How much a variant changes")
    length_ax.set(xlabel="operation", ylabel="words added (+) or removed (-)", title="Length change")
    length_ax.axhline(0, color="grey", lw=0.8)
    return fig


def shots_figure(runs: pd.DataFrame, metric: str = "accuracy") -> Figure:
    """Few-shot learning curves: ``metric`` against examples per class, one line per method (mean over seeds,
    a band of one standard deviation, each seed a dot); zero-shot runs (``shots`` 0) sit at x = 0.

    Args:
        runs: one row per run with the columns ``method``, ``shots``, ``seed`` and ``metric``.
    """
    _check_columns(runs, ["method", "shots", "seed", metric], "shots_figure")
    fig, ax = _figure(7.5, 4.2)
    for index, (method, rows) in enumerate(runs.groupby("method", sort=True)):
        color = f"C{index}"
        stats = rows.groupby("shots")[metric].agg(["mean", "std"]).fillna(0.0)
        ax.plot(stats.index, stats["mean"], marker="o", color=color, label=f"{method} (mean of seeds)")
        ax.fill_between(
            stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"], color=color, alpha=0.15
        )
        ax.scatter(rows["shots"], rows[metric], color=color, s=10, alpha=0.5)
    shots = sorted(runs["shots"].unique())
    ax.set_xscale("symlog", linthresh=max(1, min([s for s in shots if s > 0], default=1)))
    ax.set_xticks(shots, [str(s) for s in shots])
    ax.set(xlabel="labelled examples per class (0: zero-shot)", ylabel=metric, title=f"{metric} against shots")
    ax.legend(loc="best", fontsize=8)
    return fig


def failure_rate_figure(table: pd.DataFrame, runs: Sequence[str] | None = None) -> Figure:
    """Behavioural tests' failure rates: one row of bars per test, grouped by test type, one bar per run.

    Args:
        table: :func:`workbench.behave.failure_table` (a ``failure_rate`` column) or
            :func:`workbench.behave.compare` (one column per run), with ``type`` and ``test`` columns.
        runs: the columns to draw (default: ``failure_rate``, else every column but type, capability and test).
    """
    _check_columns(table, ["type", "test"], "failure_rate_figure")
    if runs is None:
        runs = (
            ["failure_rate"]
            if "failure_rate" in table
            else [c for c in table if c not in ("type", "capability", "test")]
        )
    table = table.iloc[::-1].reset_index(drop=True)  # the suite's first test on top
    fig, ax = _figure(8.0, max(2.5, 0.32 * len(table) * max(1, len(runs) ** 0.5) + 1.2))
    height = 0.8 / len(runs)
    for index, run in enumerate(runs):
        rates = table[run].astype(float) * 100
        positions = np.arange(len(table)) + (index - (len(runs) - 1) / 2) * height
        ax.barh(positions, rates.fillna(0.0), height=height, color=f"C{index}", label=str(run))
        for position in positions[rates.isna().to_numpy()]:  # no text applied: not a pass
            ax.text(1, position, "no texts", va="center", fontsize=7, color="grey")
    ax.set_yticks(
        range(len(table)), [f"{t} · {name}" for t, name in zip(table["type"], table["test"], strict=True)], fontsize=8
    )
    ax.set(xlabel="failure rate (%)", xlim=(0, 100), title="behavioural tests: failure rate by test")
    if len(runs) > 1:
        ax.legend(loc="lower right", fontsize=8)
    return fig


def active_curve_figure(points: pd.DataFrame, metric: str = "accuracy") -> Figure:
    """Active-learning curves: ``metric`` against the labels given, one line per strategy (the mean over seeds,
    a band of one standard deviation).

    Args:
        points: one row per round with the columns ``strategy``, ``seed``, ``labels`` and ``metric``.
    """
    _check_columns(points, ["strategy", "seed", "labels", metric], "active_curve_figure")
    fig, ax = _figure(7.5, 4.2)
    for index, (strategy, rows) in enumerate(points.groupby("strategy", sort=True)):
        stats = rows.groupby("labels")[metric].agg(["mean", "std"]).fillna(0.0)
        color = f"C{index}"
        ax.plot(stats.index, stats["mean"], marker=".", color=color, label=strategy)
        ax.fill_between(
            stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"], color=color, alpha=0.15
        )
    ax.set(xlabel="labelled texts", ylabel=metric, title=f"{metric} against labels")
    ax.legend(loc="lower right", fontsize=8)
    return fig


# -- hyperparameter search (workbench.tune): figures of a study's trials table ---------------------
# Optuna's own matplotlib plots draw through pyplot's global state and return Axes; these take the plain
# trials table (:meth:`workbench.tune.TuneResult.trials_table`) like every figure here.


def optimization_history_figure(trials: pd.DataFrame, metric: str) -> Figure:
    """Each trial's objective by trial number, and the best so far as a step line.

    Args:
        trials: one row per trial with ``trial``, ``state``, ``value`` and ``last_value`` (the last evaluation a
            pruned trial reported, drawn as a cross).
        metric: the objective's name (its direction comes from :func:`workbench.metrics.greater_is_better`).
    """
    _check_columns(trials, ["trial", "state", "value", "last_value"], "optimization_history_figure")
    fig, ax = _figure(8.0, 4.0)
    done = trials[trials["state"] == "COMPLETE"].sort_values("trial")
    pruned = trials[trials["state"] == "PRUNED"]
    ax.plot(done["trial"], done["value"], "o", color="tab:blue", label="completed")
    if len(pruned):
        ax.plot(pruned["trial"], pruned["last_value"], "x", color="tab:red", label="pruned (last evaluation)")
    if len(done):
        best = done["value"].cummax() if greater_is_better(metric) else done["value"].cummin()
        ax.step(done["trial"], best, where="post", color="tab:green", label="best so far")
    failed = int((trials["state"] == "FAIL").sum())
    ax.set(
        xlabel="trial",
        ylabel=f"validation {metric}",
        title=f"Optimization history ({len(done)} completed, {len(pruned)} pruned, {failed} failed)",
    )
    ax.legend()
    return fig


def param_importance_figure(importances: dict[str, float]) -> Figure:
    """Horizontal bars of each searched parameter's importance (fANOVA, from ``optuna.importance``), largest on top."""
    fig, ax = _figure(7.0, max(2.5, 0.45 * len(importances) + 1.2))
    if not importances:
        ax.text(
            0.5,
            0.5,
            "importances need at least two completed trials\nthat differ in their parameters",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
        ax.set_axis_off()
        return fig
    names, values = zip(*sorted(importances.items(), key=lambda item: item[1]), strict=True)
    ax.barh(names, values, color="tab:purple")
    for y, value in enumerate(values):
        ax.text(value, y, f" {value:.2f}", va="center")
    ax.set(xlabel="importance (share of the objective's variance)", title="Parameter importances", xlim=(0, 1.1))
    return fig


def slice_figure(trials: pd.DataFrame, params: Sequence[str], metric: str) -> Figure:
    """One panel per parameter: each completed trial's objective against the value it tried, coloured by trial
    number (later trials darker); a log axis when the positive values tried span more than a factor of 20."""
    _check_columns(trials, ["trial", "state", "value", *params], "slice_figure")
    done = trials[trials["state"] == "COMPLETE"]
    fig, axes = _figure(3.4 * max(1, len(params)), 3.4, ncols=max(1, len(params)), squeeze=False)
    for ax, param in zip(axes[0], params, strict=False):  # no params still draws one (empty) panel
        values = done[param]
        points = ax.scatter(
            values.astype(float) if values.map(np.isreal).all() else values.astype(str),
            done["value"],
            c=done["trial"],
            cmap="Blues",
            vmin=-2,
            edgecolors="black",
            linewidths=0.5,
        )
        numeric = pd.to_numeric(values, errors="coerce")
        if len(numeric) and numeric.notna().all() and (numeric > 0).all() and numeric.max() / numeric.min() > 20:
            ax.set_xscale("log")
        ax.set(xlabel=param, title=param)
    axes[0][0].set_ylabel(f"validation {metric}")
    if len(done):
        fig.colorbar(points, ax=axes[0][-1], label="trial")
    return fig
