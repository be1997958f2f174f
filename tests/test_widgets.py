"""The error inspector widget: filters, sorting, paging, highlighting and CSV export; the static HTML twin."""

import numpy as np
import pandas as pd
import pytest

from workbench import TextClassificationModel
from workbench.analysis import error_table
from workbench.errors import WorkbenchError
from workbench.widgets import ErrorInspector, errors_html, highlighter


@pytest.fixture
def table():
    rng = np.random.default_rng(0)
    labels = np.array(["a", "b", "c"])
    y = rng.integers(0, 3, 45)
    proba = rng.dirichlet(np.ones(3), 45)
    return error_table([f"text number {i}" + " word" * (i % 7) for i in range(45)], labels[y], proba, list(labels))


def test_filters_sort_pages_and_export(table, tmp_path):
    inspector = ErrorInspector(table, page_size=5, export_path=tmp_path / "sel.csv")
    errors = table[~table["correct"]]
    assert len(inspector.selection()) == len(errors) and inspector.pages == -(-len(errors) // 5)
    assert inspector.selection()["loss"].is_monotonic_decreasing
    inspector.true_filter.value = "a"
    inspector.predicted_filter.value = "b"
    assert set(inspector.selection()["true"]) <= {"a"} and set(inspector.selection()["predicted"]) <= {"b"}
    inspector.true_filter.value = "(all)"
    inspector.predicted_filter.value = "(all)"
    inspector.sort_by.value = "length"
    inspector.descending.value = False
    assert inspector.selection()["length"].is_monotonic_increasing
    inspector.next_button.click()
    assert inspector.page == 1 and "page 2 of" in inspector.position.value
    inspector.previous_button.click()
    assert inspector.page == 0 and inspector.previous_button.disabled
    inspector.only_errors.value = False
    assert len(inspector.selection()) == 45
    inspector.export_button.click()
    exported = pd.read_csv(tmp_path / "sel.csv")
    assert len(exported) == 45 and "wrote 45 rows" in inspector.status.value


def test_static_html_and_highlighting(table, tiny_bert):
    page = errors_html(table, top_n=3)
    assert page.count("<tr>") == 4 and "highest loss first" in page
    model = TextClassificationModel(tiny_bert, labels=["a", "b", "c"])
    highlight = highlighter(model, n_steps=8)
    colored = errors_html(table, top_n=2, highlight=highlight)
    assert "rgba(" in colored and "attribution toward" in colored
    inspector = ErrorInspector(table, highlight=highlight, page_size=2)
    assert "rgba(" in inspector.view.value
    with pytest.raises(WorkbenchError, match="lacks"):
        errors_html(table.drop(columns=["loss"]))


def test_labeller_writes_each_click_at_once_and_undo_removes_it(tmp_path):
    import json

    import pandas as pd

    from workbench.widgets import Labeller

    queue = pd.DataFrame({"text": ["goal in extra time", "shares fell", "a cheese soup"], "guess": ["sport"] * 3})
    queue["confidence"] = [0.9, 0.4, 0.5]
    labels_file = tmp_path / "labels.jsonl"
    rounds = pd.DataFrame({"strategy": ["breaking_ties"] * 2, "seed": [0, 0], "labels": [3, 6], "accuracy": [0.5, 0.7]})
    asked = []
    labeller = Labeller(
        queue,
        ["sport", "money", "food"],
        labels_file,
        retrain=lambda: asked.append(True) or (pd.DataFrame({"text": ["rain again"]}), rounds),
    )
    read = lambda: [json.loads(line) for line in labels_file.read_text().splitlines()]
    assert "goal in extra time" in labeller.view.value and "sport (90%)" in labeller.view.value
    labeller.label_buttons[0].click()  # sport
    assert read() == [{"text": "goal in extra time", "label": "sport"}]  # on disk before anything else happens
    labeller.skip_button.click()
    labeller.label_buttons[2].click()  # food
    assert [r["label"] for r in read()] == ["sport", "food"] and "3 of 3 · 2 labelled" in labeller.progress.value
    assert all(b.disabled for b in labeller.label_buttons)  # the batch is done
    labeller.undo_button.click()  # back to the soup: its label is gone from the file
    assert read() == [{"text": "goal in extra time", "label": "sport"}] and "cheese soup" in labeller.view.value
    labeller.undo_button.click()  # back over the skipped text: the file keeps its one label
    assert len(read()) == 1 and "shares fell" in labeller.view.value
    labeller.retrain_button.click()
    assert asked == [True] and "rain again" in labeller.view.value and "no model yet" in labeller.view.value
    assert labeller.curve.value.startswith("<img src='data:image/png;base64,")  # the learning curve, drawn
