"""Label names and their ids, and the stratified split that balances them.

:class:`LabelMap` is built once from the training labels and saved with a model; :func:`stratified_split` holds
out ``n`` examples of any selection that gives its ``strata`` and ``take``s positions (the checked rows of
:mod:`workbench.data`, the memory-mapped store of :mod:`workbench.store`), so both split alike::

    label_map = LabelMap.from_labels(["pos", "neg", "pos"])   # names ['neg', 'pos']
    label_map.encode(["pos", "neg"])                          # [1, 0]
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from workbench.errors import DataError


class LabelMap:
    """The mapping between label names and ids, built once from training labels and saved with a model."""

    def __init__(self, names: Sequence[str], multi_label: bool = False):
        self.names = [str(n) for n in names]
        self.multi_label = multi_label
        self.index = {name: i for i, name in enumerate(self.names)}

    @classmethod
    def from_labels(cls, labels: Iterable, multi_label: bool = False) -> LabelMap:
        seen = {str(x) for group in labels for x in (group if multi_label else [group])}
        as_numbers = all(re.fullmatch(r"-?\d+", s) for s in seen)
        return cls(sorted(seen, key=int if as_numbers else str), multi_label)

    def __len__(self) -> int:
        return len(self.names)

    def encode(self, labels: Sequence, rows: Sequence[int] | None = None, source: str = "data") -> list:
        """Label names to ids (single-label) or multi-hot float vectors (multi-label).

        Raises DataError naming the first rows whose label the model does not know.
        """
        groups = labels if self.multi_label else [[x] for x in labels]
        unknown = [
            (str(x), rows[i] if rows is not None else i)
            for i, group in enumerate(groups)
            for x in group
            if str(x) not in self.index
        ]
        if unknown:
            raise self.unknown_labels(unknown[:5], len(unknown), source)
        if not self.multi_label:
            return [self.index[str(x)] for x in labels]
        encoded = []
        for group in groups:
            vector = [0.0] * len(self.names)
            for x in group:
                vector[self.index[str(x)]] = 1.0
            encoded.append(vector)
        return encoded

    def unknown_labels(self, examples: Sequence[tuple[str, int]], count: int, source: str) -> DataError:
        """The error for ``count`` labels this map lacks; ``examples``: the first few as (label, row)."""
        where = ", ".join(f"'{name}' (row {row})" for name, row in examples)
        return DataError(
            f"{source}: {count} label(s) are not among the {len(self.names)} labels the model knows: "
            f"{where}. Known labels: {', '.join(self.names[:20])}{' ...' if len(self.names) > 20 else ''}. "
            "Fix the labels, or retrain with this label in the training data."
        )

    def to_dict(self) -> dict:
        return {"labels": self.names, "multi_label": self.multi_label}

    @classmethod
    def from_dict(cls, values: dict) -> LabelMap:
        return cls(values["labels"], values.get("multi_label", False))


def stratified_split(rows, n: int, seed: int):
    """``n`` examples of ``rows`` and the rest, stratified by ``rows.strata`` where every class has two examples.

    Args:
        rows: a selection with ``len``, ``strata`` (one value per example) and ``take(positions)``.

    Returns:
        ``(rows.take(chosen), rows.take(rest))``.
    """
    strata = rows.strata
    counts = pd.Series(strata).value_counts()
    # sklearn stratifies only when every class has two rows and both sides can hold one of each class
    stratify = strata if counts.min() >= 2 and len(counts) <= min(n, len(rows) - n) else None
    taken, rest = train_test_split(np.arange(len(rows)), train_size=n, random_state=seed, stratify=stratify)
    return rows.take(taken), rows.take(rest)
