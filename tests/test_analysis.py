"""Error tables, confused pairs, slices and confident-learning label issues on arrays with known answers."""

import numpy as np
import pytest

from workbench.analysis import confused_pairs, error_slices, error_table, label_issues
from workbench.errors import WorkbenchError


def test_error_table_orders_by_loss_and_marks_mistakes():
    texts = ["good", "bad", "fine film", "awful movie here"]
    proba = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.05, 0.95]])
    table = error_table(texts, ["pos", "neg", "neg", "neg"], proba, ["neg", "pos"])
    assert table["text"].tolist() == ["awful movie here", "fine film", "bad", "good"]  # worst loss first
    assert table["correct"].tolist() == [False, False, True, True]
    assert table.iloc[0]["loss"] == pytest.approx(-np.log(0.05)) and table.iloc[0]["length"] == 3
    pairs = confused_pairs(table)
    assert pairs.to_dict("records") == [{"true": "neg", "predicted": "pos", "errors": 2, "share_of_true_class": 2 / 3}]
    slices = error_slices(table)
    assert slices.loc["class = neg", "accuracy"] == pytest.approx(1 / 3)
    with pytest.raises(WorkbenchError, match="not among the model's labels"):
        error_table(texts, ["pos", "neg", "meh", "neg"], proba, ["neg", "pos"])
    with pytest.raises(WorkbenchError, match="it must be"):
        error_table(texts[:3], ["pos"] * 3, proba, ["neg", "pos"])


def test_multi_label_error_table():
    proba = np.array([[0.9, 0.8], [0.9, 0.1]])
    table = error_table(["a", "b"], np.array([[1, 1], [0, 1]]), proba, ["x", "y"], multi_label=True)
    assert table.set_index("text").loc["a", "correct"] and not table.set_index("text").loc["b", "correct"]
    assert table.set_index("text").loc["b", "predicted"] == "x"


def test_label_issues_finds_planted_flips():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    proba = np.clip(np.eye(3)[y] * 0.8 + rng.dirichlet(np.ones(3), 600) * 0.2, 0, 1)
    proba /= proba.sum(1, keepdims=True)
    flipped = rng.choice(600, 12, replace=False)
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + 1) % 3
    issues = label_issues(noisy, proba, ["a", "b", "c"])
    found = set(issues["example"])
    assert len(found & set(flipped)) >= 11 and len(found - set(flipped)) <= 3
    row = issues.set_index("example").loc[flipped[0]]
    assert row["suggested"] == "abc"[y[flipped[0]]]
