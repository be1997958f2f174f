"""Figures: each returns a Figure with the expected content, and bad input gets a clear error."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from workbench import plots
from workbench.errors import WorkbenchError


def test_confusion_matrix_counts_and_normalized():
    matrix = np.array([[5, 1], [2, 8]])
    fig = plots.confusion_matrix_figure(matrix, ["neg", "pos"])
    assert isinstance(fig, Figure)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["5", "1", "2", "8"]
    normalized = plots.confusion_matrix_figure(matrix, ["neg", "pos"], normalize=True)
    assert [t.get_text() for t in normalized.axes[0].texts] == ["0.83", "0.17", "0.20", "0.80"]


def test_confusion_matrix_with_many_classes_keeps_the_most_confused():
    k = 60
    matrix = np.diag(np.full(k, 10))
    matrix[3, 7] = matrix[7, 3] = 9  # classes 3 and 7 are confused with each other
    matrix[40, 41] = 5
    fig = plots.confusion_matrix_figure(matrix, [f"c{i}" for i in range(k)], top_n=4)
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels[:2] == ["c3", "c7"] and set(labels) >= {"c40", "c41"} and len(labels) == 4
    assert "4 most confused of 60 classes" in fig.axes[0].get_title()


def test_confusion_matrix_rejects_mismatched_input():
    with pytest.raises(WorkbenchError, match=r"the matrix is \(2, 2\) but there are 3 label names"):
        plots.confusion_matrix_figure(np.eye(2), ["a", "b", "c"])


def test_learning_curves_from_a_step_log():
    log = pd.DataFrame(
        [
            {"step": 1, "loss": 0.9},
            {"step": 10, "loss": 0.5},
            {"step": 10, "eval_loss": 0.6, "eval_accuracy": 0.7},
            {"step": 20, "loss": 0.3},
            {"step": 20, "eval_loss": 0.4, "eval_accuracy": 0.8},
        ]
    )
    fig = plots.learning_curves_figure(log, metric="accuracy")
    loss_ax, metric_ax = fig.axes
    assert [line.get_label() for line in loss_ax.get_lines()] == ["train loss", "validation loss"]
    assert list(metric_ax.get_lines()[0].get_ydata()) == [0.7, 0.8]
    assert "best 0.8000" in [t.get_text() for t in metric_ax.texts]
    with pytest.raises(WorkbenchError, match="needs the column"):
        plots.learning_curves_figure(pd.DataFrame({"loss": [1.0]}))


def test_distribution_length_and_leaderboard_figures():
    counts = pd.DataFrame({"label": ["a", "b"], "train": [10, 5], "validation": [2, 1]})
    assert len(plots.label_distribution_figure(counts).axes[0].patches) >= 4
    lengths = pd.DataFrame({"label": ["a"] * 50 + ["b"] * 50, "tokens": np.arange(100)})
    fig = plots.token_length_figure(lengths, max_length=80)
    assert any("19.0% truncated" in t.get_text() for t in fig.axes[0].texts)
    board = pd.DataFrame({"run": ["r1", "r2"], "val_accuracy": [0.8, 0.9]})
    bars = plots.metric_bar_chart(board, "val_accuracy").axes[0]
    assert [t.get_text() for t in bars.get_yticklabels()] == ["r1", "r2"]  # best on top


def test_roc_pr_curves_single_and_multi_label():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    proba = np.eye(3)[y] * 0.6 + rng.dirichlet(np.ones(3), 300) * 0.4
    fig = plots.roc_pr_figure(y, proba, ["a", "b", "c"])
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any(t.startswith("micro avg") for t in legend) and any(t.startswith("macro avg") for t in legend)
    multi = (rng.random((200, 4)) < 0.3).astype(int)
    fig = plots.roc_pr_figure(
        multi, np.clip(multi * 0.5 + rng.random((200, 4)) * 0.5, 0, 1), list("wxyz"), multi_label=True
    )
    assert len(fig.axes[0].get_lines()) == 4 + 3  # four classes, micro, macro, chance line
    with pytest.raises(WorkbenchError, match="y_true has shape"):
        plots.roc_pr_figure(y[:10], proba, ["a", "b", "c"])
    with pytest.raises(WorkbenchError, match="multi-label y_true has shape"):
        plots.roc_pr_figure(y, proba, ["a", "b", "c"], multi_label=True)


def test_reliability_and_length_figures():
    from workbench.calibration import reliability_table

    y = np.array([0, 1, 1, 0] * 10)
    proba = np.tile([[0.9, 0.1], [0.1, 0.9], [0.9, 0.1], [0.1, 0.9]], (10, 1))
    fig = plots.reliability_figure(reliability_table(y, proba), 0.4, reliability_table(y, proba), 0.1)
    assert len(fig.axes) == 2 and "ECE 0.4000" in fig.axes[0].get_title()
    fig = plots.accuracy_by_length_figure(np.arange(40), np.arange(40) % 2)
    assert len(fig.axes[0].patches) >= 4
    with pytest.raises(WorkbenchError, match="must be two"):
        plots.accuracy_by_length_figure(np.arange(4), np.arange(5))
