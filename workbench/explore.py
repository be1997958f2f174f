"""Looking at a labelled dataset before training: label counts, token lengths, duplicates, conflicts, samples,
and the augmented copies training would see (with the words that changed marked).

Every function takes a :class:`workbench.TextDataModule` after ``setup()`` (so it sees exactly the
cleaned texts and labels that training will see) and returns a pandas table for a notebook or a report.

Example::

    dm = TextDataModule(dataset="trec").setup()
    label_table(dm)            # examples per label and split
    duplicate_texts(dm)        # texts that occur more than once, within or across splits
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from workbench.config import DataConfig
from workbench.data import EncodedDataset, TextDataModule

SPLITS = ("train", "validation", "test")


def _splits(dm: TextDataModule) -> dict[str, EncodedDataset]:
    if dm.train_dataset is None:
        raise ValueError("Call TextDataModule.setup() before exploring it.")
    found = {"train": dm.train_dataset, "validation": dm.val_dataset, "test": dm.test_dataset}
    return {name: ds for name, ds in found.items() if ds is not None}


def label_names_of(dm: TextDataModule, dataset: EncodedDataset) -> list[str]:
    """Each example's label as text; multi-label examples join their labels with '|' (sorted)."""
    names = dm.label_names
    if dm.multi_label:
        return ["|".join(names[j] for j in np.flatnonzero(row)) or "(none)" for row in dataset.labels]
    return [names[i] for i in dataset.labels]


def examples_table(dm: TextDataModule) -> pd.DataFrame:
    """One row per example of every split: ``split``, ``text``, ``label`` and ``tokens`` (after truncation)."""
    frames = []
    for split, dataset in _splits(dm).items():
        frames.append(
            pd.DataFrame(
                {
                    "split": split,
                    "text": dataset.texts,
                    "label": label_names_of(dm, dataset),
                    "tokens": dataset.lengths,
                    "row": dataset.rows,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def label_table(dm: TextDataModule) -> pd.DataFrame:
    """Examples per label in each split, plus each label's share of train.

    For multi-label data an example counts once for each of its labels.
    """
    rows = {}
    for split, dataset in _splits(dm).items():
        if dm.multi_label:
            counts = dataset.labels.sum(0)
        else:
            counts = np.bincount(dataset.labels, minlength=dm.num_labels)
        rows[split] = counts
    table = pd.DataFrame({"label": dm.label_names, **rows})
    table["train_share"] = table["train"] / max(1, len(dm.train_dataset))
    return table.sort_values("train", ascending=False, kind="stable").reset_index(drop=True)


def token_lengths(dm: TextDataModule, split: str = "train", limit: int | None = 20000, seed: int = 0) -> pd.DataFrame:
    """Untruncated token counts of a split's texts (``label``, ``tokens``), to choose ``data.max_length``.

    Args:
        split: train, validation or test.
        limit: tokenize at most this many random examples (None: all).
    """
    dataset = _splits(dm)[split]
    labels = label_names_of(dm, dataset)
    index = np.arange(len(dataset))
    if limit and len(index) > limit:
        index = np.sort(np.random.default_rng(seed).choice(index, limit, replace=False))
    texts = [dataset.texts[i] for i in index]
    ids = dm.tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    return pd.DataFrame({"label": [labels[i] for i in index], "tokens": [len(x) for x in ids]})


def truncation_table(
    lengths: pd.DataFrame, max_length: int, stride: int | None = None, specials: int = 2
) -> pd.DataFrame:
    """Per class, what ``max_length`` does to the texts of :func:`token_lengths`: the share over it, by how much,
    the share of all tokens that truncation keeps (head, tail and head+tail keep the same number) and how many
    windows ``data.truncation=windows`` would make of a text (it keeps every token).

    Args:
        stride: the tokens windows share (default a quarter of ``max_length``, as ``data.stride``).
        specials: special tokens around each window ([CLS] ... [SEP]: 2).

    Example:
        >>> truncation_table(pd.DataFrame({"label": ["a", "a"], "tokens": [100, 300]}), 128)["over_share"].tolist()
        [0.5]
    """
    stride = DataConfig(max_length=max_length, max_tokens=max(8192, max_length), stride=stride).window_stride
    budget, content = max_length - specials, (lengths["tokens"] - specials).clip(lower=1)
    windows = 1 + np.ceil((content - budget).clip(lower=0) / (budget - stride)).astype(int)
    table = lengths.assign(
        over=lengths["tokens"] > max_length,
        excess=(lengths["tokens"] - max_length).clip(lower=0),
        kept=lengths["tokens"].clip(upper=max_length),
        windows=windows,
    )
    rows = []
    for label, group in table.groupby("label", sort=True):
        over = group[group["over"]]
        rows.append(
            {
                "label": label,
                "texts": len(group),
                "over_share": float(group["over"].mean()),
                "median_excess_of_those_over": float(over["excess"].median()) if len(over) else 0.0,
                "tokens_kept_by_truncation": float(group["kept"].sum() / group["tokens"].sum()),
                "mean_windows": float(group["windows"].mean()),
                "most_windows": int(group["windows"].max()),
            }
        )
    return pd.DataFrame(rows)


def _normalized(texts: pd.Series) -> pd.Series:
    return texts.str.lower().str.replace(r"\W+", " ", regex=True).str.strip()


def duplicate_texts(dm: TextDataModule) -> pd.DataFrame:
    """Texts that occur more than once (case and punctuation ignored), within a split or across splits.

    Returns:
        One row per duplicated text: ``text`` (one spelling), ``count``, ``splits`` (e.g. ``train+validation``,
        a leak from train into evaluation) and ``labels`` (the distinct labels it carries).
    """
    table = examples_table(dm)
    table["key"] = _normalized(table["text"])
    groups = table.groupby("key", sort=False)
    summary = groups.agg(
        text=("text", "first"),
        count=("text", "size"),
        splits=("split", lambda s: "+".join(sorted(set(s), key=SPLITS.index))),
        labels=("label", lambda s: " / ".join(sorted(set(s)))),
        n_labels=("label", "nunique"),
    )
    return summary[summary["count"] > 1].sort_values("count", ascending=False).reset_index(drop=True)


def conflicting_labels(dm: TextDataModule) -> pd.DataFrame:
    """Duplicated texts whose copies carry different labels: label noise or an ambiguous example."""
    duplicates = duplicate_texts(dm)
    return duplicates[duplicates["n_labels"] > 1].drop(columns="n_labels").reset_index(drop=True)


def sample_texts(
    dm: TextDataModule, per_label: int = 3, split: str = "train", seed: int = 0, max_chars: int = 300
) -> pd.DataFrame:
    """A few random texts of each label (shortened to ``max_chars``), to see what the classes look like."""
    table = examples_table(dm)
    table = table[table["split"] == split]
    shuffled = table.sample(frac=1.0, random_state=seed)
    picked = shuffled.groupby("label", sort=True).head(per_label).sort_values("label", kind="stable")
    picked = picked[["label", "text", "tokens"]].copy()
    long = picked["text"].str.len() > max_chars
    picked.loc[long, "text"] = picked.loc[long, "text"].str.slice(0, max_chars) + " …"
    return picked.reset_index(drop=True)


def dataset_summary(dm: TextDataModule) -> dict:
    """Headline numbers: examples per split, labels, multi-label, duplicates and conflicts."""
    duplicates = duplicate_texts(dm)
    return {
        "dataset": dm.config.dataset or dm.config.train_file,
        "examples": {split: len(ds) for split, ds in _splits(dm).items()},
        "labels": dm.num_labels,
        "multi_label": dm.multi_label,
        "duplicated_texts": len(duplicates),
        "duplicated_across_splits": int(duplicates["splits"].str.contains(r"\+").sum()),
        "conflicting_labels": int((duplicates["n_labels"] > 1).sum()),
    }


def augmented_examples(dm: TextDataModule, epoch: int = 0, per_op: int | None = None, seed: int = 0) -> pd.DataFrame:
    """The augmented training copies of ``epoch``: one row per variant with ``row`` (in its file), ``copy``,
    ``op``, ``label``, ``original`` (cleaned, as augmented), ``text`` (the variant), ``words_changed`` (the share
    of words not kept in place, of the longer of the two, by a word-level diff) and ``length_change`` (in words), in the
    order training holds them; ``per_op`` keeps that many random rows of each operation.

    Raises:
        ValueError: the data module has no augmentation (``augment.ops`` is empty).
    """
    train = dm.train_dataset
    if train is None or not hasattr(train, "set_epoch"):
        raise ValueError(
            "This data module does not augment: set augment.ops (e.g. augment.ops=[eda]) and call setup()."
        )
    train.set_epoch(epoch)
    n = len(train.base)
    labels = label_names_of(dm, train)
    originals = [train.originals[i % n] for i in range(len(train) - n)]
    table = pd.DataFrame(
        {
            "row": train.rows[n:],
            "copy": np.arange(len(train) - n) // n,
            "op": train.operations[n:],
            "label": labels[n:],
            "original": originals,
            "text": train.texts[n:],
            "words_changed": [_changed_share(a, b) for a, b in zip(originals, train.texts[n:], strict=True)],
            "length_change": [len(b.split()) - len(a.split()) for a, b in zip(originals, train.texts[n:], strict=True)],
        }
    )
    if per_op is not None:
        table = (
            table.sample(frac=1.0, random_state=seed)
            .groupby("op", sort=True)
            .head(per_op)
            .sort_values(["op", "row"], kind="stable")
        )
    return table.reset_index(drop=True)


def _changed_share(original: str, variant: str) -> float:
    import difflib

    a, b = original.split(), variant.split()
    kept = sum(block.size for block in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_matching_blocks())
    return 1.0 - kept / max(1, len(a), len(b))


def augmentation_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per operation: variants, the share that differ from their original, mean share of words changed and mean
    length change in words (from :func:`augmented_examples`)."""
    changed = table.assign(differs=table["original"] != table["text"])
    return changed.groupby("op").agg(
        variants=("text", "size"),
        differs=("differs", "mean"),
        words_changed=("words_changed", "mean"),
        length_change=("length_change", "mean"),
    )


def changes_html(original: str, variant: str) -> tuple[str, str]:
    """Both texts as HTML with the words that differ marked: ``<del>`` in the original for words removed or
    replaced, ``<mark>`` in the variant for words inserted or replacing them (a word-level ``difflib`` diff)."""
    import difflib
    import html

    a, b = original.split(), variant.split()
    left, right = [], []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        old, new = html.escape(" ".join(a[i1:i2])), html.escape(" ".join(b[j1:j2]))
        if tag == "equal":
            left.append(old)
            right.append(new)
            continue
        if old:
            left.append(f"<del>{old}</del>")
        if new:
            right.append(f"<mark>{new}</mark>")
    return " ".join(left), " ".join(right)


def augmented_examples_html(table: pd.DataFrame) -> str:
    """An HTML table of :func:`augmented_examples` rows, originals beside variants with the changes marked."""
    import html

    rows = []
    for record in table.itertuples():
        before, after = changes_html(record.original, record.text)
        cells = [html.escape(str(record.op)), html.escape(str(record.label)), before, after]
        rows.append(
            "<tr>" + "".join(f"<td style='text-align:left;vertical-align:top'>{c}</td>" for c in cells) + "</tr>"
        )
    style = (
        "<style>.wb-augment td{max-width:40em} .wb-augment mark{background:#ffe08a} "
        ".wb-augment del{color:#b00020}</style>"
    )
    head = "<tr><th>op</th><th>label</th><th>original</th><th>variant</th></tr>"
    return f"{style}<table class='wb-augment'>{head}{''.join(rows)}</table>"
