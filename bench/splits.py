"""Data splits the benchmark scripts share."""

from __future__ import annotations

import pandas as pd

from workbench.catalog import load_split
from workbench.data import LabelledRows


def ag_news_test_parts(first: int, second: int | None, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """AG News' 7,600-story test split (the only AG News split in the data folder) cut in two, stratified by topic:
    ``first`` stories, and ``second`` of the others (None: all the others), each as a text/label table."""
    stories = load_split("ag_news", "test")
    rows = LabelledRows(stories["text"].tolist(), stories["label"].tolist(), list(range(len(stories))), "ag_news")
    one, rest = rows.split(first, seed)
    two = rest.split(second, seed)[0] if second else rest
    return tuple(pd.DataFrame({"text": part.texts, "label": part.labels}) for part in (one, two))
