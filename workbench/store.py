"""Encoded examples on disk: the encoded-data cache, the memory-mapped store, and what every dataset offers.

:func:`encode_cached` keeps a split's token ids in an Arrow file keyed by its texts, the tokenizer and the text
processing, and reads them back into memory next time. :func:`store_file` encodes a data file of any size piece
by piece into an Arrow file that :class:`StoredDataset` maps, so a corpus larger than memory trains. Both live
under ``$WORKBENCH_CACHE/encoded``. :class:`EncodedExamples` is the contract every dataset meets (this module's
:class:`StoredDataset`, :mod:`workbench.data`'s ``EncodedDataset`` and ``AugmentedDataset``, and their
selections); training, evaluation and calibration ask a dataset for nothing else::

    store = store_file("big.csv", processor, dm._labelled, settings={"text_column": "text"})
    train = StoredDataset(store, "big.csv").with_labels(label_map)
    train.lengths, train.labels, train[0]["input_ids"]
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import abc
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from filelock import FileLock
from tqdm.auto import tqdm

from workbench.augment import cache_root
from workbench.datafiles import read_table_chunks
from workbench.errors import DataError
from workbench.labels import LabelMap, stratified_split
from workbench.text import TextProcessor

log = logging.getLogger(__name__)


class EncodedExamples(Protocol):
    """What every dataset of encoded, labelled examples offers, and all that training, evaluation and calibration
    ask of one. Item ``i`` is the encoded example ``{"input_ids": [...], "labels": ...}`` (plus ``token_type_ids``
    for a tokenizer that makes them); ``features``, ``texts`` and ``rows`` read like lists, one value per item.
    A class may offer the values as attributes or as read-only properties.

    Every dataset class names this protocol among its bases, and so inherits ``epoch``, ``original_count``,
    ``planning_lengths`` and ``epoch_lengths`` as they are for a split whose items never change: epoch 0, every
    example an original, the same lengths every epoch. ``AugmentedDataset`` (the training split plus fresh
    variants each epoch) overrides them.
    """

    source: str  # the file or ``dataset:split`` the examples came from, for error messages
    features: Sequence[dict]  # every item, in order
    texts: Sequence[str]  # each example's text (an augmented variant's own)
    rows: Sequence[int] | np.ndarray  # each example's row number in its file (a variant's: its original's)
    lengths: np.ndarray  # each example's token count (N,)
    labels: np.ndarray  # label ids (N,), or multi-hot rows (N, K) for multi-label data
    epoch: int = 0  # the epoch whose augmented variants the items are

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict: ...

    @property
    def original_count(self) -> int:
        """How many items are original examples, not augmented variants (they come first)."""
        return len(self)

    @property
    def planning_lengths(self) -> np.ndarray:
        """The lengths a length-bucketed sampler plans batch sizes from, the same every epoch."""
        return self.lengths

    def epoch_lengths(self, epoch: int) -> np.ndarray:
        """Token lengths of every item in ``epoch`` (what the sampler sorts that epoch's batches by)."""
        return self.lengths


STORE_PIECE_ROWS = 10_000  # rows read, checked and encoded at a time into a store
CACHE_MIN_ROWS = 5_000  # smaller splits tokenize in well under a second: not worth a file
_CACHE_VERSION = 1  # raise it when TextProcessor's cleaning or truncation changes what a text encodes to


def _encoding_key(processor: TextProcessor) -> hashlib._Hash:
    """A hash of everything that decides a text's token ids: the cache version, the text processing and the
    tokenizer's whole definition (vocabulary included) without the truncation and padding each call sets on it."""
    key = hashlib.sha256(
        json.dumps(
            [_CACHE_VERSION, processor.settings(), list(processor.tokenizer.model_input_names)], sort_keys=True
        ).encode()
    )
    definition = json.loads(processor.tokenizer.backend_tokenizer.to_str())
    definition.pop("truncation", None), definition.pop("padding", None)
    key.update(hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).digest())
    return key


def _token_columns(features: list[dict]) -> dict[str, pa.Array]:
    """Encoded examples' token ids (and token types) as Arrow columns, as the cache and the store keep them; a
    windowed text's windows as one list of lists."""
    if features and "windows" in features[0]:
        return {"windows": pa.array([f["windows"] for f in features], type=pa.list_(pa.list_(pa.int32())))}
    columns = {"input_ids": pa.array([f["input_ids"] for f in features], type=pa.list_(pa.int32()))}
    if features and "token_type_ids" in features[0]:
        columns["token_type_ids"] = pa.array([f["token_type_ids"] for f in features], type=pa.list_(pa.int8()))
    return columns


def encode_cached(
    processor: TextProcessor,
    texts: Sequence[str],
    pairs: Sequence[str] | None = None,
    *,
    folder: str | Path | None = None,
    min_rows: int | None = None,
) -> list[dict]:
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
                if "windows" in table.column_names and table.num_rows == len(texts):
                    return [{"windows": windows} for windows in table.column("windows").to_pylist()]
                ids = table.column("input_ids").to_pylist()
                types = table.column("token_type_ids").to_pylist() if "token_type_ids" in table.column_names else None
            if len(ids) == len(texts):
                if types is None:
                    return [{"input_ids": row} for row in ids]
                return [{"input_ids": row, "token_type_ids": kinds} for row, kinds in zip(ids, types, strict=True)]
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


def store_file(
    path: str | Path,
    processor: TextProcessor,
    check_rows,
    *,
    settings: dict,
    folder: str | Path | None = None,
    chunk_rows: int | None = None,
    reuse: bool = True,
) -> Path:
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
        chunk_rows: rows per piece (default :data:`STORE_PIECE_ROWS`).
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
        raise DataError(
            f"Cannot write the encoded store of {path} in {store.parent} ({exc}). Set WORKBENCH_CACHE "
            "to a writable folder."
        ) from None
    try:
        if not _whole_store(store, reuse, path):  # another process (torchrun rank, tuning worker) may have made it
            _write_store(path, store, processor, check_rows, chunk_rows or STORE_PIECE_ROWS)
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
                columns["label"] = pa.array(
                    rows.labels, type=pa.list_(pa.string()) if rows.multi_label else pa.string()
                )
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


class StoredDataset(torch.utils.data.Dataset, EncodedExamples):
    """Encoded examples in an Arrow file written by :func:`store_file`, memory-mapped: the examples stay on disk
    and the operating system pages them in as batches read them, so a corpus larger than memory trains.

    Memory grows by a few bytes per example (token lengths, label ids and the positions taken), not by its text or
    tokens. ``take`` and ``split`` select examples by position, as :class:`~workbench.data.LabelledRows` does; a
    data module turns the labels into ids with :meth:`with_labels`. ``features`` and ``texts`` read like lists, each
    item made when indexed; ``lengths``, ``labels`` and ``rows`` are arrays.
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
        self._lists = [
            {k: (b.column(k).offsets.to_numpy(), b.column(k).values.to_numpy()) for k in keys} for b in self._batches
        ]  # zero-copy views into the mapped file
        self._all_lengths = np.concatenate([np.diff(lists["input_ids"][0]) for lists in self._lists]).astype(np.int32)
        labels = [b.column("label") for b in self._batches]
        if self.multi_label:  # each example's labels as positions in the sorted names, first label for stratifying
            flat = pa.chunked_array([column.flatten() for column in labels], type=pa.string())
            self._label_offsets = np.concatenate(
                [
                    [0],
                    np.cumsum(
                        np.concatenate(
                            [pc.list_value_length(column).to_numpy(zero_copy_only=False) for column in labels]
                        )
                    ),
                ]
            )
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

    def _copy(self) -> StoredDataset:  # another selection of the same mapped file
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
            item[key] = values[offsets[row] : offsets[row + 1]].tolist()
        if self.multi_label:
            vector = [0.0] * len(self.label_map)
            position = int(self.positions[index])
            for label in self._label_ids[self._label_offsets[position] : self._label_offsets[position + 1]]:
                vector[label] = 1.0
            item["labels"] = vector
        else:
            item["labels"] = int(self._label_ids[self.positions[index]])
        return item

    # -- what a split needs before its labels are ids (as data.LabelledRows) -----------------------------

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

    def take(self, positions: Sequence[int]) -> StoredDataset:
        """These examples, in the given order (the file stays mapped once)."""
        taken = self._copy()
        taken.positions = self.positions[np.asarray(positions, dtype=np.int64)]
        return taken

    def split(self, n: int, seed: int) -> tuple[StoredDataset, StoredDataset]:
        """``n`` examples and the rest, stratified as :meth:`~workbench.data.LabelledRows.split` (and equal to its
        split)."""
        return stratified_split(self, n, seed)

    def with_labels(self, label_map: LabelMap) -> StoredDataset:
        """These examples with ``label_map``'s ids; raises DataError naming the rows of labels it does not know."""
        lookup = np.array([label_map.index.get(name, -1) for name in self.names], dtype=np.int64)
        ids = lookup[self._codes]  # per label given: its id, -1 if the map lacks it
        if self.multi_label:
            examples, entries = self._label_entries()
            unknown = [
                (self.names[self._codes[e]], int(self._rows[self.positions[i]]))
                for i, e in zip(examples[ids[entries] < 0][:5], entries[ids[entries] < 0][:5], strict=True)
            ]
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

    # -- what every dataset offers (EncodedExamples) ----------------------------------------------------

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
