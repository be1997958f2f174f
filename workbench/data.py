"""From data files or a catalog dataset to encoded, labelled splits and their batches.

``TextDataModule`` reads files (:mod:`workbench.datafiles`) or a catalog dataset (:mod:`workbench.catalog`),
checks them, holds out validation when none is given, builds one :class:`LabelMap` from the training
labels, encodes every split with a :class:`~workbench.text.TextProcessor`, and batches them with a
:class:`~workbench.sampler.LengthBucketedBatchSampler`::

    dm = TextDataModule(train_file="train.csv", val_file="val.csv", model_name="minilm")
    dm.setup()
    dm.label_names, len(dm.train_dataset)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections import abc
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch
from filelock import FileLock
from sklearn.model_selection import train_test_split
from tqdm.auto import tqdm
from transformers import DataCollatorWithPadding

from workbench.augment import Augmenter, cache_root
from workbench.backbones import load_tokenizer
from workbench.catalog import available_splits, list_datasets, load_split
from workbench.config import AugmentConfig, DataConfig, ModelConfig, TrainConfig
from workbench.datafiles import (check_texts, label_text, parse_multi_label, read_table, read_table_chunks,
                                 require_columns, row_numbers)
from workbench.errors import DataError
from workbench.sampler import LengthBucketedBatchSampler
from workbench.text import TextProcessor

log = logging.getLogger(__name__)


class LabelMap:
    """The mapping between label names and ids, built once from training labels and saved with a model."""

    def __init__(self, names: Sequence[str], multi_label: bool = False):
        self.names = [str(n) for n in names]
        self.multi_label = multi_label
        self.index = {name: i for i, name in enumerate(self.names)}

    @classmethod
    def from_labels(cls, labels: Iterable, multi_label: bool = False) -> "LabelMap":
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
        unknown = [(str(x), rows[i] if rows is not None else i) for i, group in enumerate(groups) for x in group
                   if str(x) not in self.index]
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
            "Fix the labels, or retrain with this label in the training data.")

    def to_dict(self) -> dict:
        return {"labels": self.names, "multi_label": self.multi_label}

    @classmethod
    def from_dict(cls, values: dict) -> "LabelMap":
        return cls(values["labels"], values.get("multi_label", False))


STORE_PIECE_ROWS = 10_000  # rows read, checked and encoded at a time into a store
CACHE_MIN_ROWS = 5_000  # smaller splits tokenize in well under a second: not worth a file
_CACHE_VERSION = 1  # raise it when TextProcessor's cleaning or truncation changes what a text encodes to


def _encoding_key(processor: TextProcessor) -> "hashlib._Hash":
    """A hash of everything that decides a text's token ids: the cache version, the text processing and the
    tokenizer's whole definition (vocabulary included) without the truncation and padding each call sets on it."""
    key = hashlib.sha256(json.dumps([_CACHE_VERSION, processor.settings(), list(processor.tokenizer.model_input_names)],
                                    sort_keys=True).encode())
    definition = json.loads(processor.tokenizer.backend_tokenizer.to_str())
    definition.pop("truncation", None), definition.pop("padding", None)
    key.update(hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).digest())
    return key


def _token_columns(features: list[dict]) -> dict[str, pa.Array]:
    """Encoded examples' token ids (and token types) as Arrow columns, as the cache and the store keep them."""
    columns = {"input_ids": pa.array([f["input_ids"] for f in features], type=pa.list_(pa.int32()))}
    if features and "token_type_ids" in features[0]:
        columns["token_type_ids"] = pa.array([f["token_type_ids"] for f in features], type=pa.list_(pa.int8()))
    return columns


def encode_cached(processor: TextProcessor, texts: Sequence[str], pairs: Sequence[str] | None = None, *,
                  folder: str | Path | None = None, min_rows: int | None = None) -> list[dict]:
    """``processor.encode(texts, pairs)``, kept on disk in Arrow format and read back next time (into memory).

    The key is a hash of the texts (and pairs) themselves, so any file, subset or split holding the same rows finds
    it, plus the tokenizer (its whole definition, vocabulary included) and the text-processing settings. A cache
    file is written under a temporary name and renamed into place; one that cannot be read is made again.

    Args:
        folder: where the files go (default ``$WORKBENCH_CACHE/encoded``, else ``~/.cache/workbench/encoded``).
        min_rows: fewer texts than this are encoded without the cache (default :data:`CACHE_MIN_ROWS`).
    """
    backend = getattr(processor.tokenizer, "backend_tokenizer", None)
    if len(texts) < (CACHE_MIN_ROWS if min_rows is None else min_rows) or backend is None:
        return processor.encode(texts, pairs)
    key = _encoding_key(processor)
    for values in (texts, pairs or []):
        for text in values:
            key.update(text.encode("utf-8", "surrogatepass") + b"\x00")
        key.update(b"\x01")
    path = Path(folder or cache_root() / "encoded") / f"{key.hexdigest()[:32]}.arrow"
    if path.exists():
        try:
            with pa.memory_map(str(path)) as source:  # read while mapped: the table points into the file
                table = pa.ipc.open_file(source).read_all()
                ids = table.column("input_ids").to_pylist()
                types = table.column("token_type_ids").to_pylist() if "token_type_ids" in table.column_names else None
            if len(ids) == len(texts):
                if types is None:
                    return [{"input_ids": row} for row in ids]
                return [{"input_ids": row, "token_type_ids": kinds} for row, kinds in zip(ids, types)]
        except (pa.ArrowException, OSError, KeyError) as exc:
            log.warning("Encoded-data cache %s is unreadable (%s); tokenizing again.", path, exc)
    features = processor.encode(texts, pairs)
    table = pa.table(_token_columns(features))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with pa.OSFile(str(partial), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        os.replace(partial, path)
    except OSError as exc:  # a read-only or full disk costs the next run its head start, nothing else
        log.warning("Cannot write the encoded-data cache %s (%s).", path, exc)
    return features


class EncodedDataset(torch.utils.data.Dataset):
    """Encoded examples (token ids and label) plus the cleaned text and source rows they came from."""

    def __init__(self, features: list[dict], texts: list[str], rows: list[int], source: str):
        self.features, self.texts, self.rows, self.source = features, texts, rows, source

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> dict:
        return self.features[index]

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(f["input_ids"]) for f in self.features])

    @property
    def labels(self) -> np.ndarray:
        """Label ids ``(N,)``, or multi-hot rows ``(N, K)`` for multi-label data."""
        return np.asarray([f["labels"] for f in self.features])


class AugmentedDataset(EncodedDataset):
    """The training split plus ``augment.variants`` augmented copies of every example, made afresh each epoch.

    Items ``0..N-1`` are the originals; item ``N * (1 + c) + i`` is copy ``c`` of example ``i``, with its label
    (a multi-label row keeps all its labels; a sentence pair keeps its second text). Each epoch's variants
    are made and encoded when the epoch starts (:meth:`set_epoch`, which the trainer and the batch sampler
    call), from the augmenter's per-example generators seeded by the data module's seed (``train()`` gives it
    ``train.seed``), so an epoch is the same whatever the order of its batches and after a resume.
    :attr:`lengths` are that epoch's token lengths: the length-bucketed sampler plans batch sizes from
    :attr:`planning_lengths` (the originals') and sorts each epoch by its own lengths, so variants that grew or
    shrank are batched with texts of their new length. A batch may then exceed ``data.max_tokens`` by what its
    variants grew (a few tokens a text).
    """

    def __init__(self, base: EncodedDataset, pairs: list[str] | None, augmenter: Augmenter, processor,
                 epoch: int = 0):
        super().__init__(list(base.features), list(base.texts), list(base.rows), base.source)
        self.base, self.pairs, self.augmenter, self.processor = base, pairs, augmenter, processor
        self.originals = [processor.clean(t) for t in base.texts]  # variants of what the model would read
        self.model_variants = augmenter.model_variants(self.originals)  # made once, or read from their cache
        self.epoch: int | None = None
        self.operations: list[str] = []
        self.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        """Make and encode the variants of ``epoch`` (nothing to do if they are the current ones)."""
        if epoch == self.epoch:
            return
        made = self.augmenter.epoch_variants(self.originals, epoch, self.model_variants)
        copies = self.augmenter.config.variants
        texts = [text for _, text in made]
        features = self.processor.encode(texts, self.pairs * copies if self.pairs is not None else None)
        for feature, original in zip(features, self.base.features * copies):
            feature["labels"] = original["labels"]
        self.features = self.base.features + features
        self.texts = self.base.texts + texts
        self.rows = self.base.rows * (1 + copies)
        self.operations = ["original"] * len(self.base) + [op for op, _ in made]
        self.epoch = epoch

    @property
    def planning_lengths(self) -> np.ndarray:
        """The lengths batch sizes are planned from, whatever the current epoch: each original's, for itself and
        for each of its variants (so every run and every resume plans the same number of batches)."""
        return np.tile(self.base.lengths, 1 + self.augmenter.config.variants)

    def epoch_lengths(self, epoch: int) -> np.ndarray:
        """Token lengths of every item in ``epoch`` (for the batch sampler)."""
        self.set_epoch(epoch)
        return self.lengths


class _Column(abc.Sequence):
    """A read-only list view of one value per item (texts, encoded examples), made when indexed."""

    def __init__(self, size: int, get):
        self._size, self._get = size, get

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self._get(i) for i in range(*index.indices(self._size))]
        if not -self._size <= index < self._size:
            raise IndexError(index)
        return self._get(index % self._size)


def store_file(path: str | Path, processor: TextProcessor, check_rows, *, settings: dict, folder: str | Path | None = None,
               chunk_rows: int = 10_000, reuse: bool = True) -> Path:
    """Encode a labelled data file piece by piece into an Arrow file and return its path (what
    :class:`StoredDataset` opens memory-mapped): memory stays at one piece, whatever the file's size.

    Each piece of ``chunk_rows`` rows is read (:func:`~workbench.datafiles.read_table_chunks`), checked and
    turned into text, labels and rows by ``check_rows(frame, source)``, encoded, and written as one record batch:
    ``input_ids`` (and ``token_type_ids``), ``label`` as given (a list of names for multi-label data), ``row`` (the
    file's row number) and ``text`` (and ``pair``). The file is named by a hash of the data file's bytes, the
    tokenizer, the text processing and ``settings`` (which columns hold what), so a second run on the same file
    opens it at once. It is written under a temporary name and renamed into place, under a lock of its own, so
    processes started together (torchrun, tuning workers) encode it once.

    Args:
        folder: where stores go (default ``$WORKBENCH_CACHE/encoded``).
        reuse: False encodes the file again if its store was made before this run (``data.cache: false``).
    """
    path = Path(path)
    with open(path, "rb") as handle:
        content = hashlib.file_digest(handle, "sha256").hexdigest()
    key = _encoding_key(processor)
    key.update(json.dumps([content, settings], sort_keys=True).encode())
    store = Path(folder or cache_root() / "encoded") / f"{key.hexdigest()[:32]}.store.arrow"
    if _whole_store(store, reuse, path):  # most runs: no lock, no wait
        return store
    lock = FileLock(str(store) + ".lock")  # one per store: another file's long encoding never blocks this one
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except OSError as exc:
        raise DataError(f"Cannot write the encoded store of {path} in {store.parent} ({exc}). Set WORKBENCH_CACHE "
                        "to a writable folder.") from None
    try:
        if not _whole_store(store, reuse, path):  # another process (torchrun rank, tuning worker) may have made it
            _write_store(path, store, processor, check_rows, chunk_rows)
    finally:
        lock.release()
    return store


def _write_store(path: Path, store: Path, processor: TextProcessor, check_rows, chunk_rows: int) -> None:
    """Encode ``path`` piece by piece into ``store`` (see :func:`store_file`), under a temporary name until whole."""
    partial = store.with_name(f".{store.name}.{os.getpid()}.tmp")
    writer = None
    try:
        with tqdm(desc=f"encoding {path.name}", unit=" rows", disable=None) as progress:
            for frame in read_table_chunks(path, chunk_rows):
                rows = check_rows(frame, str(path))
                columns = _token_columns(processor.encode(rows.texts, rows.pairs))
                columns["label"] = pa.array(rows.labels, type=pa.list_(pa.string()) if rows.multi_label else pa.string())
                columns["row"] = pa.array(rows.rows, type=pa.int64())
                columns["text"] = pa.array(rows.texts, type=pa.large_string())
                if rows.pairs is not None:
                    columns["pair"] = pa.array(rows.pairs, type=pa.large_string())
                batch = pa.record_batch(columns)
                if writer is None:
                    writer = pa.ipc.new_file(str(partial), batch.schema)
                writer.write_batch(batch)
                progress.update(len(frame))
        writer.close()
        os.replace(partial, store)
    except BaseException:
        if writer is not None:
            writer.close()
        partial.unlink(missing_ok=True)
        raise


_STARTED = time.time()  # a store written after this was made during this run (by this or a sibling process)


def _whole_store(store: Path, reuse: bool, source: Path) -> bool:
    """Whether ``store`` can be opened as it is: it exists, its footer reads (the footer is written last), and
    it is reusable (``reuse``) or was made during this run."""
    try:
        if not store.exists() or not (reuse or store.stat().st_mtime >= _STARTED):
            return False
        with pa.memory_map(str(store)) as mapped:
            pa.ipc.open_file(mapped)
        return True
    except (pa.ArrowException, OSError) as exc:
        log.warning("Encoded store %s is unreadable (%s); encoding %s again.", store, exc, source)
        return False


class StoredDataset(torch.utils.data.Dataset):
    """Encoded examples in an Arrow file written by :func:`store_file`, memory-mapped: the examples stay on disk
    and the operating system pages them in as batches read them, so a corpus larger than memory trains.

    Memory grows by a few bytes per example (token lengths, label ids and the positions taken), not by its text or
    tokens. ``take`` and ``split`` select examples by position, as :class:`LabelledRows` does; a data module turns
    the labels into ids with :meth:`with_labels`. ``features`` and ``texts`` read like lists, each item made when
    indexed; ``lengths``, ``labels`` and ``rows`` are arrays.
    """

    def __init__(self, path: str | Path, source: str, multi_label: bool = False):
        self.path, self.source, self.multi_label = Path(path), source, multi_label
        self._open()
        self.positions = np.arange(self._starts[-1])
        self.label_map: LabelMap | None = None
        self._label_ids: np.ndarray | None = None

    def _open(self) -> None:
        self._file = pa.memory_map(str(self.path))
        reader = pa.ipc.open_file(self._file)
        self._batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
        self._starts = np.cumsum([0] + [b.num_rows for b in self._batches])
        keys = [k for k in ("input_ids", "token_type_ids") if k in reader.schema.names]
        self._lists = [{k: (b.column(k).offsets.to_numpy(), b.column(k).values.to_numpy()) for k in keys}
                       for b in self._batches]  # zero-copy views into the mapped file
        self._all_lengths = np.concatenate([np.diff(lists["input_ids"][0]) for lists in self._lists]).astype(np.int32)
        labels = [b.column("label") for b in self._batches]
        if self.multi_label:  # each example's labels as positions in the sorted names, first label for stratifying
            flat = pa.chunked_array([column.flatten() for column in labels], type=pa.string())
            self._label_offsets = np.concatenate([[0], np.cumsum(np.concatenate(
                [pc.list_value_length(column).to_numpy(zero_copy_only=False) for column in labels]))])
        else:
            flat = pa.chunked_array(labels, type=pa.string())
        self.names = sorted(pc.unique(flat).to_pylist())  # every label given, sorted as np.unique sorts strings
        self._codes = pc.index_in(flat, value_set=pa.array(self.names, pa.string())).to_numpy(zero_copy_only=False)
        self._rows = np.concatenate([b.column("row").to_numpy() for b in self._batches])

    def __getstate__(self) -> dict:  # DataLoader workers map the file again instead of copying it
        return {k: self.__dict__[k] for k in ("path", "source", "multi_label", "positions", "label_map", "_label_ids")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._open()

    def _copy(self) -> "StoredDataset":  # another selection of the same mapped file
        other = object.__new__(type(self))
        other.__dict__.update(self.__dict__)
        return other

    def __len__(self) -> int:
        return len(self.positions)

    def _locate(self, index: int) -> tuple[int, int]:
        """The record batch holding item ``index`` and the item's row in it."""
        position = int(self.positions[index])
        batch = int(np.searchsorted(self._starts, position, side="right")) - 1
        return batch, position - int(self._starts[batch])

    def __getitem__(self, index: int) -> dict:
        if self._label_ids is None:
            raise DataError(f"{self.source}: the stored split has no label ids yet; call with_labels(label_map).")
        batch, row = self._locate(index)
        item = {}
        for key, (offsets, values) in self._lists[batch].items():
            item[key] = values[offsets[row]:offsets[row + 1]].tolist()
        if self.multi_label:
            vector = [0.0] * len(self.label_map)
            position = int(self.positions[index])
            for label in self._label_ids[self._label_offsets[position]:self._label_offsets[position + 1]]:
                vector[label] = 1.0
            item["labels"] = vector
        else:
            item["labels"] = int(self._label_ids[self.positions[index]])
        return item

    # -- what a split needs before its labels are ids (as LabelledRows) ----------------------------------

    @property
    def strata(self) -> np.ndarray:
        """What stratified splits balance: label codes, ordered as the names sort (the same split as the names)."""
        if self.multi_label:
            starts, ends = self._label_offsets[:-1][self.positions], self._label_offsets[1:][self.positions]
            first = self._codes[np.minimum(starts, len(self._codes) - 1)] if len(self._codes) else -1
            return np.where(ends > starts, first, -1)  # a row without labels: its own stratum, as "" in memory
        return self._codes[self.positions]

    @property
    def label_names(self) -> list[str]:
        """Every label the selected examples carry."""
        if self.multi_label:
            return [self.names[c] for c in np.unique(self._codes[self._label_entries()[1]])]
        return [self.names[c] for c in np.unique(self._codes[self.positions])]

    def _label_entries(self) -> tuple[np.ndarray, np.ndarray]:
        """Multi-label: for each label of each selected example, the example's index and the label's entry."""
        starts, counts = self._label_offsets[:-1][self.positions], np.diff(self._label_offsets)[self.positions]
        examples = np.repeat(np.arange(len(self.positions)), counts)
        entries = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts) + np.arange(counts.sum())
        return examples, entries

    def take(self, positions: Sequence[int]) -> "StoredDataset":
        """These examples, in the given order (the file stays mapped once)."""
        taken = self._copy()
        taken.positions = self.positions[np.asarray(positions, dtype=np.int64)]
        return taken

    def split(self, n: int, seed: int) -> tuple["StoredDataset", "StoredDataset"]:
        """``n`` examples and the rest, stratified as :meth:`LabelledRows.split` (and equal to its split)."""
        return _split(self, n, seed)

    def with_labels(self, label_map: LabelMap) -> "StoredDataset":
        """These examples with ``label_map``'s ids; raises DataError naming the rows of labels it does not know."""
        lookup = np.array([label_map.index.get(name, -1) for name in self.names], dtype=np.int64)
        ids = lookup[self._codes]  # per label given: its id, -1 if the map lacks it
        if self.multi_label:
            examples, entries = self._label_entries()
            unknown = [(self.names[self._codes[e]], int(self._rows[self.positions[i]]))
                       for i, e in zip(examples[ids[entries] < 0][:5], entries[ids[entries] < 0][:5])]
            count = int((ids[entries] < 0).sum())
        else:
            bad = self.positions[ids[self.positions] < 0]
            unknown = [(self.names[self._codes[p]], int(self._rows[p])) for p in bad[:5]]
            count = len(bad)
        if count:
            raise label_map.unknown_labels(unknown, count, self.source)
        labelled = self._copy()
        labelled.label_map, labelled._label_ids = label_map, ids
        return labelled

    # -- what a dataset offers (as EncodedDataset) --------------------------------------------------------

    def _column(self, name: str) -> Sequence:
        """One stored column of the selected items, read like a list."""
        def value(index: int):
            batch, row = self._locate(index)
            return self._batches[batch].column(name)[row].as_py()
        return _Column(len(self), value)

    @property
    def features(self) -> Sequence[dict]:
        return _Column(len(self), self.__getitem__)

    @property
    def texts(self) -> Sequence[str]:
        return self._column("text")

    @property
    def rows(self) -> np.ndarray:
        return self._rows[self.positions]

    @property
    def lengths(self) -> np.ndarray:
        return self._all_lengths[self.positions]

    @property
    def labels(self) -> np.ndarray:
        """Label ids ``(N,)``, or multi-hot rows ``(N, K)`` for multi-label data."""
        if self._label_ids is None:
            raise DataError(f"{self.source}: the stored split has no label ids yet; call with_labels(label_map).")
        if not self.multi_label:
            return self._label_ids[self.positions]
        matrix = np.zeros((len(self), len(self.label_map)), dtype=np.float32)
        examples, entries = self._label_entries()
        matrix[examples, self._label_ids[entries]] = 1.0
        return matrix

    @property
    def pairs(self) -> Sequence[str] | None:
        return self._column("pair") if "pair" in self._batches[0].schema.names else None


@dataclass
class LabelledRows:
    """The checked rows of one split: texts (and second texts), labels as given, and where each row came from.

    ``labels`` holds one label name per row, or a list of names per row for multi-label data.
    """

    texts: list[str]
    labels: list
    rows: list[int]  # each row's number in its file, as a person counts lines (catalog rows count from 0)
    source: str  # the file or ``dataset:split``, for error messages
    multi_label: bool = False
    pairs: list[str] | None = None  # second texts of sentence-pair data

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def strata(self) -> list:
        """What stratified splits balance: the label, or a multi-label row's first label."""
        return [group[0] if group else "" for group in self.labels] if self.multi_label else self.labels

    def take(self, positions: Sequence[int]) -> "LabelledRows":
        """These rows, in the given order."""
        pick = lambda values: [values[i] for i in positions]  # noqa: E731
        return LabelledRows(pick(self.texts), pick(self.labels), pick(self.rows), self.source, self.multi_label,
                            pick(self.pairs) if self.pairs is not None else None)

    @property
    def label_names(self) -> list[str]:
        """Every label the rows carry."""
        return sorted({str(x) for group in self.labels for x in (group if self.multi_label else [group])})

    def split(self, n: int, seed: int) -> tuple["LabelledRows", "LabelledRows"]:
        """``n`` rows and the rest, stratified by :attr:`strata` where every class has two rows."""
        return _split(self, n, seed)


def _split(rows, n: int, seed: int):
    strata = rows.strata
    counts = pd.Series(strata).value_counts()
    # sklearn stratifies only when every class has two rows and both sides can hold one of each class
    stratify = strata if counts.min() >= 2 and len(counts) <= min(n, len(rows) - n) else None
    taken, rest = train_test_split(np.arange(len(rows)), train_size=n, random_state=seed, stratify=stratify)
    return rows.take(taken), rows.take(rest)


def _catalog_entry(name: str):
    entries = {entry.name: entry for entry in list_datasets()}
    if name not in entries:
        raise DataError(f"Unknown dataset '{name}'. Known datasets: {', '.join(entries)} (see `workbench datasets`).")
    return entries[name]


class TextDataModule:
    """Everything between data files and batches: reading, checking, label maps, encoding, batching.

    Args:
        train_file, val_file, test_file: data files (.csv, .tsv, .jsonl, .parquet). Without a
            validation file, a stratified ``val_fraction`` of train becomes validation.
        model_name: backbone whose tokenizer encodes the text (``"minilm"`` is the default backbone).
        dataset: a catalog name (``"sst2"``, ``"reuters"`` ...) instead of files.
        config: a :class:`~workbench.config.DataConfig`; keyword arguments override its fields.
        **options: any DataConfig field, e.g. ``text_column="review"``, ``batch_size=16``.

    Example:
        >>> dm = TextDataModule(dataset="trec", model_name="minilm", train_subset=200)
        >>> dm.setup(); dm.num_labels
        6
    """

    def __init__(self, train_file: str | None = None, val_file: str | None = None, test_file: str | None = None,
                 *, model_name: str = ModelConfig.backbone, dataset: str | None = None,
                 config: DataConfig | None = None, tokenizer=None, seed: int = TrainConfig.seed,
                 data_root: str | None = None, augment: AugmentConfig | None = None,
                 trust_remote_code: Sequence[str] = (), **options):
        valid = {f.name for f in fields(DataConfig)}
        unknown = sorted(set(options) - valid)
        if unknown:
            raise DataError(f"TextDataModule got unknown option(s) {', '.join(unknown)}. Valid: {', '.join(sorted(valid))}.")
        config = config or DataConfig()
        given = {"train_file": train_file, "val_file": val_file, "test_file": test_file, "dataset": dataset}
        config = replace(config, **{k: v for k, v in given.items() if v is not None}, **options)
        self.config, self.model_name, self.seed, self.data_root = config, model_name, seed, data_root
        self.augment = augment or AugmentConfig()
        self._tokenizer, self.trust_remote_code = tokenizer, list(trust_remote_code)
        self.label_map: LabelMap | None = None
        self.train_dataset = self.val_dataset = self.test_dataset = None

    # -- reading ------------------------------------------------------------------------------------

    @property
    def multi_label(self) -> bool:
        if self.config.dataset:
            return _catalog_entry(self.config.dataset).multi_label
        return self.config.multi_label

    @property
    def text_column(self) -> str:
        return "text" if self.config.dataset else self.config.text_column  # the catalog always says "text"

    @property
    def label_column(self) -> str:
        return "label" if self.config.dataset else self.config.label_column

    def read_split(self, split: str, stream: bool = True) -> LabelledRows | StoredDataset | None:
        """Read and check one split: ``"train"``, ``"validation"`` or ``"test"`` (None when there is none).

        The files or catalog splits come from the data config; a catalog dataset without a validation split
        gives None, and :meth:`setup` then holds validation out of train. A file of ``data.stream_from_mb`` or more
        is read in pieces into a :class:`StoredDataset` (unless ``stream`` is False); anything else into memory.

        Raises:
            DataError: naming the file, rows and fix for a missing column, empty text or missing label.
        """
        cfg = self.config
        if cfg.dataset:
            entry = _catalog_entry(cfg.dataset)
            splits = available_splits(cfg.dataset)  # the data folder's, and the Hub's (AG News' train split)
            name = {"train": cfg.train_split, "validation": cfg.val_split, "test": cfg.test_split}[split]
            if name is None or (split == "validation" and name not in splits):
                return None
            if name not in splits:
                note = f" {entry.note}" if split == "train" else ""
                raise DataError(f"Dataset '{cfg.dataset}' has no split '{name}'; it has {', '.join(splits)}.{note}")
            return self._catalog_rows(name)
        path = {"train": cfg.train_file, "validation": cfg.val_file, "test": cfg.test_file}[split]
        if not path:
            return None
        if stream and self._streams(path):
            settings = {name: getattr(cfg, name) for name in ("text_column", "text_pair_column", "label_column",
                                                              "multi_label", "label_delimiter")}
            store = store_file(path, self.processor, self._labelled, settings=settings, reuse=cfg.cache,
                               chunk_rows=STORE_PIECE_ROWS)
            return StoredDataset(store, str(path), self.multi_label)
        return self._labelled(read_table(path), str(path))

    def _streams(self, path: str | Path) -> bool:
        """Whether a data file is big enough (``data.stream_from_mb``) to be read in pieces into a store."""
        return Path(path).is_file() and Path(path).stat().st_size >= self.config.stream_from_mb * 2**20

    def training_pool(self) -> LabelledRows:
        """Every labelled training example, reduced to a stratified ``data.train_subset`` if set, before any
        validation is held out: what cross-validation splits into folds."""
        pool = self.read_split("train", stream=False)  # folds are tables of texts
        if self.config.train_subset and self.config.train_subset < len(pool):
            pool, _ = pool.split(self.config.train_subset, self.seed)
        return pool

    def _catalog_rows(self, split: str) -> LabelledRows:
        frame = load_split(self.config.dataset, split, self.data_root).reset_index(drop=True)
        frame["_row"] = np.arange(len(frame))  # catalog rows are numbered from 0
        return self._labelled(frame, f"{self.config.dataset}:{split}")

    def _labelled(self, frame: pd.DataFrame, source: str) -> LabelledRows:
        cfg = self.config
        columns = [self.text_column, self.label_column] + ([cfg.text_pair_column] if cfg.text_pair_column else [])
        require_columns(frame, columns, source)
        check_texts(frame, self.text_column, source)
        if cfg.text_pair_column:
            check_texts(frame, cfg.text_pair_column, source)
        values = frame[self.label_column].tolist()
        rows = frame["_row"].tolist()
        if self.multi_label:
            labels = [parse_multi_label(v, cfg.label_delimiter, f"{source} row {r}") for v, r in zip(values, rows)]
        else:
            missing = np.array([v is None or (isinstance(v, float) and np.isnan(v)) for v in values])
            if missing.any():
                raise DataError(f"{source}: {int(missing.sum())} row(s) have no label in column '{self.label_column}' "
                                f"(rows {row_numbers(frame, missing)}). Fill in the labels or drop those rows.")
            labels = [label_text(v) for v in values]
        pairs = frame[cfg.text_pair_column].astype(str).tolist() if cfg.text_pair_column else None
        return LabelledRows(frame[self.text_column].astype(str).tolist(), labels, rows, source, self.multi_label, pairs)

    # -- setup --------------------------------------------------------------------------------------

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.model_name, self.trust_remote_code)
        return self._tokenizer

    @property
    def processor(self) -> TextProcessor:
        return TextProcessor.from_config(self.config, self.tokenizer)

    def setup(self, label_map: LabelMap | None = None) -> "TextDataModule":
        """Read, check, split and encode every split. Pass ``label_map`` to evaluate with a trained model's labels."""
        cfg = self.config
        if cfg.dataset is None and cfg.train_file is None:
            raise DataError("TextDataModule needs train_file=... or dataset=... (see `workbench datasets`).")
        if self.augment.enabled and cfg.train_file and self._streams(cfg.train_file):  # before minutes of encoding
            raise DataError(f"{cfg.train_file} is read in pieces (data.stream_from_mb={cfg.stream_from_mb:g}), and "
                            "augmentation needs every training text in memory. Turn augment off, or raise "
                            "data.stream_from_mb above the file's size.")
        train, val, test = self.read_split("train"), self.read_split("validation"), self.read_split("test")
        if val is None:
            n_val = max(1, int(round(len(train) * cfg.val_fraction)))
            if len(train) - n_val < 1:
                raise DataError(f"{train.source} has only {len(train)} row(s): too few to split off validation. "
                                "Add examples or give data.val_file.")
            val, train = train.split(n_val, self.seed)
            val.source = f"{train.source} (held-out {cfg.val_fraction:.0%})"
            log.info("No validation split given: held out %d of %d training rows.", len(val), len(val) + len(train))
        if cfg.train_subset and cfg.train_subset < len(train):
            train, _ = train.split(cfg.train_subset, self.seed)
        if cfg.val_subset and cfg.val_subset < len(val):
            val, _ = val.split(cfg.val_subset, self.seed)
        self.label_map = label_map or LabelMap(LabelMap.from_labels(train.label_names).names, self.multi_label)
        if len(self.label_map) < (1 if self.multi_label else 2):
            raise DataError(f"{train.source} has only the label(s) {self.label_map.names}: a classifier needs at least "
                            "two classes. Check data.label_column, or add examples of the other classes.")
        self.train_dataset = self.encode(train)
        if self.augment.enabled:
            self.train_dataset = self.augmented(self.train_dataset, train.pairs)
        self.val_dataset = self.encode(val)
        if test is not None:
            self.test_dataset = self.encode(test)
        return self

    def encode(self, rows: LabelledRows | StoredDataset) -> EncodedDataset | StoredDataset:
        """Encode checked rows with this module's label map and text processing (a stored split is encoded
        already: it gets the label ids)."""
        if isinstance(rows, StoredDataset):
            return rows.with_labels(self.label_map)
        labels = self.label_map.encode(rows.labels, rows.rows, rows.source)
        if self.config.cache:
            features = encode_cached(self.processor, rows.texts, rows.pairs)
        else:
            features = self.processor.encode(rows.texts, rows.pairs)
        for feature, label in zip(features, labels):
            feature["labels"] = label
        return EncodedDataset(features, rows.texts, rows.rows, rows.source)

    def augmented(self, train: EncodedDataset, pairs: list[str] | None = None) -> AugmentedDataset:
        """``train`` with this module's augmentation (model operations' variants made or read from their cache)."""
        device = "cuda" if torch.cuda.is_available() else "cpu"
        return AugmentedDataset(train, pairs, Augmenter(self.augment, seed=self.seed, device=device), self.processor)

    @classmethod
    def for_model(cls, model, **options) -> "TextDataModule":
        """A data module that encodes data exactly as ``model`` was trained, with its label map.

        Use it to evaluate a trained model on new labelled data: ``TextDataModule.for_model(m).encode_file(f)``.
        """
        config = model.processing.data_config(multi_label=model.multi_label)
        dm = cls(model_name=model.model_config.backbone, tokenizer=model.tokenizer, config=config, **options)
        dm.label_map = LabelMap(model.label_names, model.multi_label)
        return dm

    def encode_file(self, path: str | Path) -> EncodedDataset:
        """Encode another labelled file (e.g. for ``workbench evaluate``) with this module's label map."""
        return self.encode_frame(read_table(path), str(path))

    def encode_frame(self, frame: pd.DataFrame, source: str) -> EncodedDataset:
        """Encode labelled rows (a piece of a file from :func:`~workbench.datafiles.read_table_chunks`, say);
        errors name ``source`` and the rows' ``_row`` numbers."""
        return self.encode(self._labelled(frame, source))

    def encode_split(self, split: str) -> EncodedDataset:
        """Encode one split of the catalog dataset with this module's label map."""
        return self.encode(self._catalog_rows(split))

    # -- batching -----------------------------------------------------------------------------------

    @property
    def label_names(self) -> list[str]:
        return self.label_map.names

    @property
    def num_labels(self) -> int:
        return len(self.label_map)

    @property
    def collator(self) -> DataCollatorWithPadding:
        return DataCollatorWithPadding(self.tokenizer, pad_to_multiple_of=None)

    def train_batch_sampler(self, seed: int | None = None, shards: int = 1) -> LengthBucketedBatchSampler:
        """Length-bucketed training batches; ``shards``: the processes they are dealt to (the world size)."""
        lengths = getattr(self.train_dataset, "planning_lengths", self.train_dataset.lengths)
        return LengthBucketedBatchSampler(lengths, self.config.max_tokens, self.config.batch_size,
                                          shuffle=True, seed=self.seed if seed is None else seed,
                                          epoch_lengths=getattr(self.train_dataset, "epoch_lengths", None),
                                          shards=shards)

    def eval_batch_sampler(self, dataset: EncodedDataset) -> LengthBucketedBatchSampler:
        return LengthBucketedBatchSampler(dataset.lengths, max(self.config.max_tokens, 4 * self.config.max_length),
                                          self.config.eval_batch_size, shuffle=False)
