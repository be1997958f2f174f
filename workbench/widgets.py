"""The error inspector: an ipywidgets view of an error table for JupyterLab, and its static HTML twin; the
active-learning labeller (:class:`Labeller`).

:class:`ErrorInspector` filters by true and predicted class, sorts by loss, confidence or length, pages
through examples, shows each text with its tokens coloured by attribution (when given a highlighter such
as :func:`highlighter`), and exports the current selection to CSV. :func:`errors_html` renders the same
rows as plain HTML for reports, where no kernel runs the widgets.

Example::

    table = analysis.error_table(ev.texts, ev.y_true, ev.proba, ev.label_names)
    ErrorInspector(table, highlight=highlighter(model))     # last expression of a cell: shows the widget
"""

from __future__ import annotations

import html
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import pandas as pd

from workbench.datafiles import append_record, drop_last_record
from workbench.errors import WorkbenchError
from workbench.explain import token_attributions, tokens_html

ALL = "(all)"
SORT_KEYS = ("loss", "confidence", "length")
Highlight = Callable[[str], str]  # text -> HTML with coloured tokens


def highlighter(model, n_steps: int = 20, target: str | None = None) -> Highlight:
    """Text -> coloured-token HTML from integrated gradients toward the predicted (or ``target``) class; cached."""

    @lru_cache(maxsize=512)
    def highlight(text: str) -> str:
        result = token_attributions(model, text, target=target, n_steps=n_steps)[0]
        return (
            f"{tokens_html(result.tokens, result.scores)} <span style='color:#57606a;font-size:0.8em'>"
            f"(attribution toward {html.escape(result.target)})</span>"
        )

    return highlight


def _rows_html(rows: pd.DataFrame, highlight: Highlight | None) -> str:
    cells = []
    for example, row in rows.iterrows():
        text = highlight(row["text"]) if highlight else html.escape(str(row["text"]))
        status = "✓" if row["correct"] else "✗"
        cells.append(
            f"<tr><td>{example}</td><td>{status}</td><td>{html.escape(str(row['true']))}</td>"
            f"<td>{html.escape(str(row['predicted']))}</td><td>{row['confidence']:.3f}</td><td>{row['loss']:.3f}</td>"
            f"<td>{row['length']}</td><td style='text-align:left;line-height:1.7'>{text}</td></tr>"
        )
    head = (
        "<tr><th>#</th><th></th><th>true</th><th>predicted</th><th>confidence</th><th>loss</th><th>length</th>"
        "<th style='text-align:left'>text</th></tr>"
    )
    style = "border-collapse:collapse;font-size:0.9em"
    return (
        f"<table class='workbench-errors' style='{style}'><thead>{head}</thead><tbody>{''.join(cells)}</tbody></table>"
    )


def errors_html(table: pd.DataFrame, top_n: int = 20, highlight: Highlight | None = None) -> str:
    """The ``top_n`` highest-loss mistakes as an HTML table (the static report view of the inspector)."""
    _check_table(table)
    errors = table[~table["correct"]].sort_values("loss", ascending=False).head(top_n)
    if errors.empty:
        return "<p>No misclassified examples.</p>"
    return f"<p>{len(errors)} of {int((~table['correct']).sum())} mistakes, highest loss first.</p>" + _rows_html(
        errors, highlight
    )


def _check_table(table: pd.DataFrame) -> None:
    needed = {"text", "true", "predicted", "confidence", "loss", "length", "correct"}
    missing = needed - set(table.columns)
    if missing:
        raise WorkbenchError(f"The error table lacks {sorted(missing)}; build it with workbench.analysis.error_table.")


class ErrorInspector:
    """Browse an error table in JupyterLab (see the module docstring)."""

    def __init__(
        self,
        table: pd.DataFrame,
        highlight: Highlight | None = None,
        page_size: int = 10,
        export_path: str | Path = "error_selection.csv",
    ):
        import ipywidgets as w

        _check_table(table)
        self.table, self.highlight, self.page_size = table, highlight, page_size
        self.page = 0
        true_labels = sorted(table["true"].astype(str).unique())
        predicted_labels = sorted(table["predicted"].astype(str).unique())
        self.true_filter = w.Dropdown(options=[ALL, *true_labels], description="true")
        self.predicted_filter = w.Dropdown(options=[ALL, *predicted_labels], description="predicted")
        self.only_errors = w.Checkbox(value=True, description="errors only")
        self.sort_by = w.Dropdown(options=list(SORT_KEYS), value="loss", description="sort by")
        self.descending = w.Checkbox(value=True, description="descending")
        self.previous_button = w.Button(description="◀ previous")
        self.next_button = w.Button(description="next ▶")
        self.position = w.Label()
        self.export_path = w.Text(value=str(export_path), description="CSV")
        self.export_button = w.Button(description="export selection")
        self.status = w.Label()
        self.view = w.HTML()
        for control in (self.true_filter, self.predicted_filter, self.only_errors, self.sort_by, self.descending):
            control.observe(self._changed, names="value")
        self.previous_button.on_click(lambda _: self.go(self.page - 1))
        self.next_button.on_click(lambda _: self.go(self.page + 1))
        self.export_button.on_click(lambda _: self.export())
        self.widget = w.VBox(
            [
                w.HBox([self.true_filter, self.predicted_filter, self.only_errors]),
                w.HBox([self.sort_by, self.descending]),
                w.HBox([self.previous_button, self.position, self.next_button]),
                self.view,
                w.HBox([self.export_path, self.export_button, self.status]),
            ]
        )
        self.render()

    def selection(self) -> pd.DataFrame:
        """The rows the current filters select, in the current order."""
        rows = self.table
        if self.only_errors.value:
            rows = rows[~rows["correct"]]
        if self.true_filter.value != ALL:
            rows = rows[rows["true"].astype(str) == self.true_filter.value]
        if self.predicted_filter.value != ALL:
            rows = rows[rows["predicted"].astype(str) == self.predicted_filter.value]
        return rows.sort_values(self.sort_by.value, ascending=not self.descending.value, kind="stable")

    @property
    def pages(self) -> int:
        return max(1, -(-len(self.selection()) // self.page_size))

    def go(self, page: int) -> None:
        self.page = min(max(0, page), self.pages - 1)
        self.render()

    def _changed(self, _change) -> None:
        self.page = 0
        self.render()

    def render(self) -> None:
        rows = self.selection()
        start = self.page * self.page_size
        shown = rows.iloc[start : start + self.page_size]
        self.position.value = f"page {self.page + 1} of {self.pages} · {len(rows)} examples"
        self.previous_button.disabled = self.page == 0
        self.next_button.disabled = self.page >= self.pages - 1
        self.view.value = _rows_html(shown, self.highlight) if len(shown) else "<p>No examples match.</p>"

    def export(self, path: str | Path | None = None) -> Path:
        """Write the current selection (all pages) to CSV; returns the path."""
        target = Path(path or self.export_path.value)
        target.parent.mkdir(parents=True, exist_ok=True)
        self.selection().to_csv(target)
        self.status.value = f"wrote {len(self.selection())} rows to {target}"
        return target

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


# -- active learning: the labeller ------------------------------------------------------------------------------


class Labeller:
    """Label texts one at a time in JupyterLab: the text, the model's guess and confidence, a button per label,
    skip, undo, progress, and a retrain button that asks ``retrain`` for the next texts and the learning curve.

    Every click is appended to ``labels_file`` at once (:func:`workbench.datafiles.append_record`, flushed to
    disk), so a killed kernel loses no label; undo removes the file's last line.

    Args:
        queue: the texts to label: ``text`` and, when a model exists, ``guess`` and ``confidence``.
        labels: the label names, one button each.
        labels_file: the JSON-lines labels file (``text``, ``label``) that ``workbench label`` reads.
        retrain: called by the retrain button; returns the next queue and the rounds so far (a table for
            :func:`workbench.plots.active_curve_figure`), e.g.
            ``partial(active.next_batch, config, pool, labels, out)``.

    Example:
        >>> Labeller(queue, ["sport", "money"], "labels.jsonl", retrain=next_texts)  # doctest: +SKIP
    """

    def __init__(
        self,
        queue: pd.DataFrame,
        labels: list[str],
        labels_file: str | Path,
        retrain: Callable[[], tuple[pd.DataFrame, pd.DataFrame]] | None = None,
    ):
        import ipywidgets as w

        if "text" not in queue.columns:
            raise WorkbenchError("Labeller needs a queue with a 'text' column (the texts to label).")
        self.labels, self.labels_file, self.retrain_with = list(labels), Path(labels_file), retrain
        self.queue, self.position, self.done = queue.reset_index(drop=True), 0, []  # done: (text, label or None)
        self.view, self.progress, self.status = w.HTML(), w.Label(), w.Label()
        self.label_buttons = [w.Button(description=label, button_style="primary") for label in self.labels]
        for button, label in zip(self.label_buttons, self.labels, strict=True):
            button.on_click(lambda _, chosen=label: self.choose(chosen))
        self.skip_button, self.undo_button = w.Button(description="skip"), w.Button(description="undo")
        self.retrain_button = w.Button(description="retrain", button_style="success", disabled=retrain is None)
        self.skip_button.on_click(lambda _: self.skip())
        self.undo_button.on_click(lambda _: self.undo())
        self.retrain_button.on_click(lambda _: self.retrain())
        self.curve = w.HTML()  # the learning curve as an inline PNG
        self.widget = w.VBox(
            [
                self.progress,
                self.view,
                w.HBox(self.label_buttons),
                w.HBox([self.skip_button, self.undo_button, self.retrain_button, self.status]),
                self.curve,
            ]
        )
        self.render()

    @property
    def current(self) -> pd.Series | None:
        return self.queue.iloc[self.position] if self.position < len(self.queue) else None

    def choose(self, label: str) -> None:
        """Label the current text ``label`` (written to the labels file at once) and show the next."""
        if self.current is None:
            return
        append_record(self.labels_file, {"text": self.current["text"], "label": label})
        self.done.append((self.current["text"], label))
        self.position += 1
        self.render()

    def skip(self) -> None:
        if self.current is not None:
            self.done.append((self.current["text"], None))
            self.position += 1
            self.render()

    def undo(self) -> None:
        """Go back one text; a label given to it is removed from the labels file."""
        if not self.done:
            return
        _, label = self.done.pop()
        if label is not None:
            drop_last_record(self.labels_file)
        self.position -= 1
        self.render()

    def retrain(self) -> None:
        """Ask ``retrain`` for the next texts and the rounds so far; redraw the learning curve."""
        import base64
        import io

        from workbench.plots import active_curve_figure

        self.status.value = "training ..."
        queue, rounds = self.retrain_with()
        self.queue, self.position, self.done = queue.reset_index(drop=True), 0, []
        self.status.value = f"retrained: {len(self.queue)} new texts"
        if len(rounds):
            image = io.BytesIO()
            active_curve_figure(rounds).savefig(image, format="png", dpi=80)
            self.curve.value = f"<img src='data:image/png;base64,{base64.b64encode(image.getvalue()).decode()}'/>"
        self.render()

    def render(self) -> None:
        labelled = sum(label is not None for _, label in self.done)
        self.progress.value = f"{min(self.position + 1, len(self.queue))} of {len(self.queue)} · {labelled} labelled"
        row = self.current
        finished = row is None
        for button in (*self.label_buttons, self.skip_button):
            button.disabled = finished
        self.undo_button.disabled = not self.done
        if finished:
            self.view.value = "<p>All texts of this batch done: retrain for the next.</p>"
            return
        guess = row.get("guess")
        hint = (
            f"<p style='color:#555'>model: {html.escape(str(guess))} ({float(row['confidence']):.0%})</p>"
            if isinstance(guess, str)
            else "<p style='color:#555'>no model yet</p>"
        )
        self.view.value = f"<div style='font-size:1.1em;padding:6px 0'>{html.escape(str(row['text']))}</div>{hint}"

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
