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


def test_multi_label_error_table_decides_at_the_model_thresholds():
    proba = np.array([[0.9, 0.8], [0.9, 0.1]])
    table = error_table(
        ["a", "b"], np.array([[1, 1], [0, 1]]), proba, ["x", "y"], multi_label=True, thresholds=np.array([0.5, 0.5])
    )
    assert table.set_index("text").loc["a", "correct"] and not table.set_index("text").loc["b", "correct"]
    assert table.set_index("text").loc["b", "predicted"] == "x"
    tuned = error_table(
        ["a", "b"], np.array([[1, 1], [0, 1]]), proba, ["x", "y"], multi_label=True, thresholds=np.array([0.95, 0.05])
    ).set_index("text")  # the same rule as model.predict
    assert tuned.loc["b", "predicted"] == "y" and tuned.loc["b", "correct"] and tuned.loc["a", "predicted"] == "y"
    with pytest.raises(WorkbenchError, match="thresholds=model.thresholds"):
        error_table(["a", "b"], np.array([[1, 1], [0, 1]]), proba, ["x", "y"], multi_label=True)


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


def test_multi_label_label_issues_find_planted_errors():
    rng = np.random.default_rng(0)
    truth = (rng.random((1500, 4)) < 0.3).astype(int)
    truth[truth.sum(1) == 0, 0] = 1  # every example carries a label
    miss = rng.beta(0.5, 8, truth.shape)  # a confident model: mostly near 0 or 1, with a tail of hesitation
    proba = np.where(truth == 1, 1 - miss, miss)
    given = truth.copy()
    wrong = rng.choice(1500, 30, replace=False)
    for i in wrong:  # drop a label where there are several, else add an absent one
        present = np.flatnonzero(given[i])
        given[i, present[0] if len(present) > 1 else np.flatnonzero(given[i] == 0)[0]] ^= 1
    names = ["earn", "acq", "grain", "crude"]
    as_names = [[names[j] for j in np.flatnonzero(row)] for row in given]
    issues = label_issues(as_names, proba, names, multi_label=True, thresholds=np.full(4, 0.5))
    found = set(issues["example"])
    # cleanlab's per-class thresholds miss errors the model is only mildly sure of (23 of 30 found here)
    assert len(found & set(wrong)) >= 20 and len(found - set(wrong)) <= 3
    first = issues.iloc[0]
    assert first["example"] in wrong and first["suggested"] == "|".join(
        names[j] for j in np.flatnonzero(truth[first["example"]])
    )
    assert set(label_issues(given, proba, names, multi_label=True, thresholds=np.full(4, 0.5))["example"]) == found
    # the suggestion follows the decision rule it is given: per class, or per example as from CV folds
    strict = label_issues(given, proba, names, multi_label=True, thresholds=np.ones((1500, 4)))
    assert (strict["suggested"] == "").all()
