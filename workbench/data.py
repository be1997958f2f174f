"""From data files or a catalog dataset to encoded, labelled splits and their batches.

``TextDataModule`` reads files (:mod:`workbench.datafiles`) or a catalog dataset (:mod:`workbench.catalog`),
checks them, holds out validation when none is given, builds one :class:`~workbench.labels.LabelMap` from the
training labels, encodes every split with a :class:`~workbench.text.TextProcessor` (through the encoded-data cache
of :mod:`workbench.store`, or into its memory-mapped store for a large file), and batches them with a
:class:`~workbench.sampler.LengthBucketedBatchSampler`. Every split is an :class:`~workbench.store.EncodedExamples`::

    dm = TextDataModule(train_file="train.csv", val_file="val.csv", model_name="minilm")
    dm.setup()
    dm.label_names, len(dm.train_dataset)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import DataCollatorWithPadding

from workbench.augment import Augmenter
from workbench.backbones import load_tokenizer
from workbench.catalog import available_splits, list_datasets, load_split
from workbench.config import AugmentConfig, DataConfig, ModelConfig, TrainConfig, check_options
from workbench.datafiles import (
    check_text_column,
    label_text,
    parse_multi_label,
    read_table,
    require_columns,
    row_numbers,
)
from workbench.errors import DataError
from workbench.labels import LabelMap, stratified_split
from workbench.sampler import LengthBucketedBatchSampler
from workbench.store import EncodedExamples, StoredDataset, encode_cached, store_file
from workbench.text import TextProcessor

log = logging.getLogger(__name__)


class EncodedDataset(torch.utils.data.Dataset, EncodedExamples):
    """Encoded examples (token ids and label) plus the text and source rows they came from, in memory."""

    def __init__(self, features: list[dict], texts: list[str], rows: list[int], source: str):
        self.features, self.texts, self.rows, self.source = features, texts, rows, source

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> dict:
        return self.features[index]

    @property
    def lengths(self) -> np.ndarray:
        """Token counts ``(N,)``; a windowed text's is its windows' together."""
        return np.array([len(f["input_ids"]) if "input_ids" in f else _window_tokens(f) for f in self.features])

    @property
    def labels(self) -> np.ndarray:
        """Label ids ``(N,)``, or multi-hot rows ``(N, K)`` for multi-label data."""
        return np.asarray([f["labels"] for f in self.features])


def _window_tokens(feature: dict) -> int:
    return sum(len(window) for window in feature["windows"])


class WindowedDataset(EncodedDataset):
    """The training split of windowed texts (``data.truncation=windows``), one item per window, each with its
    text's label(s).

    A text of ``n`` windows gives ``min(n, max_windows)`` items (``n`` when ``max_windows`` is 0), so one long text
    does not dominate an epoch; which of its windows they are is drawn afresh each epoch (:meth:`set_epoch`,
    called by the trainer and the batch sampler) from a generator seeded by (seed, epoch), so an epoch is the same
    whatever the order of its batches and after a resume. ``texts`` and ``rows`` name each window's text;
    ``documents`` holds each item's position in ``base``. Validation and test splits are not windowed items: the
    model pools their windows into one answer per text (:meth:`workbench.models.TextClassificationModel.logits_of`).
    """

    def __init__(self, base: EncodedDataset, max_windows: int, seed: int, epoch: int = 0):
        counts = np.array([len(f["windows"]) for f in base.features], dtype=np.int64)
        self.slots = np.minimum(counts, max_windows) if max_windows else counts
        self.documents = np.repeat(np.arange(len(base)), self.slots)
        texts, rows = [base.texts[d] for d in self.documents], [base.rows[d] for d in self.documents]
        super().__init__([], texts, rows, base.source)
        self.base, self.seed, self.epoch = base, seed, -1  # -1: no epoch drawn yet
        self._planning = None
        self.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        """Draw the windows of ``epoch`` (nothing to do if they are the current ones)."""
        if epoch == self.epoch:
            return
        rng = np.random.default_rng([self.seed, epoch])
        features = []
        for feature, slots in zip(self.base.features, self.slots, strict=True):
            windows = feature["windows"]
            picks = range(len(windows)) if slots == len(windows) else np.sort(rng.choice(len(windows), slots, False))
            features += [{"input_ids": windows[i], "labels": feature["labels"]} for i in picks]
        self.features, self.epoch = features, epoch

    @property
    def planning_lengths(self) -> np.ndarray:
        """Every item planned at its text's longest window, whatever the epoch (so every run and every resume
        plans the same number of batches)."""
        if self._planning is None:
            longest = [max(len(w) for w in f["windows"]) for f in self.base.features]
            self._planning = np.repeat(np.asarray(longest), self.slots)
        return self._planning

    def epoch_lengths(self, epoch: int) -> np.ndarray:
        """Token lengths of every item in ``epoch`` (for the batch sampler)."""
        self.set_epoch(epoch)
        return self.lengths


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

    def __init__(self, base: EncodedDataset, pairs: list[str] | None, augmenter: Augmenter, processor, epoch: int = 0):
        super().__init__(list(base.features), list(base.texts), list(base.rows), base.source)
        self.base, self.pairs, self.augmenter, self.processor = base, pairs, augmenter, processor
        self.originals = [processor.clean(t) for t in base.texts]  # variants of what the model would read
        self.model_variants = augmenter.model_variants(self.originals)  # made once, or read from their cache
        self.epoch = -1  # no variants made yet
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
        for feature, original in zip(features, self.base.features * copies, strict=True):
            feature["labels"] = original["labels"]
        self.features = self.base.features + features
        self.texts = self.base.texts + texts
        self.rows = self.base.rows * (1 + copies)
        self.operations = ["original"] * len(self.base) + [op for op, _ in made]
        self.epoch = epoch

    @property
    def original_count(self) -> int:
        return len(self.base)

    @property
    def planning_lengths(self) -> np.ndarray:
        """The lengths batch sizes are planned from, whatever the current epoch: each original's, for itself and
        for each of its variants (so every run and every resume plans the same number of batches)."""
        return np.tile(self.base.lengths, 1 + self.augmenter.config.variants)

    def epoch_lengths(self, epoch: int) -> np.ndarray:
        """Token lengths of every item in ``epoch`` (for the batch sampler)."""
        self.set_epoch(epoch)
        return self.lengths


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

    def take(self, positions: Sequence[int]) -> LabelledRows:
        """These rows, in the given order."""
        pick = lambda values: [values[i] for i in positions]
        return LabelledRows(
            pick(self.texts),
            pick(self.labels),
            pick(self.rows),
            self.source,
            self.multi_label,
            pick(self.pairs) if self.pairs is not None else None,
        )

    @property
    def label_names(self) -> list[str]:
        """Every label the rows carry."""
        return sorted({str(x) for group in self.labels for x in (group if self.multi_label else [group])})

    def split(self, n: int, seed: int) -> tuple[LabelledRows, LabelledRows]:
        """``n`` rows and the rest, stratified by :attr:`strata` where every class has two rows."""
        return stratified_split(self, n, seed)

    def per_class(self, shots: int, seed: int) -> LabelledRows:
        """``shots`` rows of each label (single-label rows), drawn with ``seed``, in a seeded random order.

        Every class must have ``shots`` rows: a DataError names the first class that has fewer, and how many.
        """
        by_label: dict[str, list[int]] = {}
        for position, label in enumerate(self.labels):
            by_label.setdefault(str(label), []).append(position)
        short = sorted((len(positions), label) for label, positions in by_label.items() if len(positions) < shots)
        if short:
            count, label = short[0]
            raise DataError(
                f"data.shots={shots}: class '{label}' of {self.source} has only {count} example(s). "
                f"Lower data.shots to {count} or less, or add examples of '{label}'."
            )
        rng = np.random.default_rng(seed)
        chosen = [int(i) for label in sorted(by_label) for i in rng.choice(by_label[label], shots, replace=False)]
        return self.take(rng.permutation(chosen).tolist())

    def rows_by_label(self) -> dict[str, list[int]]:
        """Each label's row numbers (as in :attr:`rows`), in order: what a run records of a few-shot sample."""
        found: dict[str, list[int]] = {}
        for row, label in zip(self.rows, self.labels, strict=True):
            found.setdefault(str(label), []).append(row)
        return {label: sorted(rows) for label, rows in sorted(found.items())}


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

    def __init__(
        self,
        train_file: str | None = None,
        val_file: str | None = None,
        test_file: str | None = None,
        *,
        model_name: str = ModelConfig.backbone,
        dataset: str | None = None,
        config: DataConfig | None = None,
        tokenizer=None,
        seed: int = TrainConfig.seed,
        data_root: str | None = None,
        augment: AugmentConfig | None = None,
        trust_remote_code: Sequence[str] = (),
        **options,
    ):
        check_options("TextDataModule", options, DataConfig)
        config = config or DataConfig()
        given = {"train_file": train_file, "val_file": val_file, "test_file": test_file, "dataset": dataset}
        config = replace(config, **{k: v for k, v in given.items() if v is not None}, **options)
        self.config, self.model_name, self.seed, self.data_root = config, model_name, seed, data_root
        self.augment = augment or AugmentConfig()
        self._tokenizer, self.trust_remote_code = tokenizer, list(trust_remote_code)
        self.label_map: LabelMap | None = None
        self.train_dataset: EncodedExamples | None = None
        self.val_dataset: EncodedExamples | None = None
        self.test_dataset: EncodedExamples | None = None
        self.training_rows: dict | None = None  # data.shots: the sample's rows by label, which a run records

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
            settings = {
                name: getattr(cfg, name)
                for name in ("text_column", "text_pair_column", "label_column", "multi_label", "label_delimiter")
            }
            store = store_file(path, self.processor, self._labelled, settings=settings, reuse=cfg.cache)
            return StoredDataset(store, str(path), self.multi_label)
        return self._labelled(read_table(path), str(path))

    def _streams(self, path: str | Path) -> bool:
        """Whether a data file is big enough (``data.stream_from_mb``) to be read in pieces into a store."""
        return Path(path).is_file() and Path(path).stat().st_size >= self.config.stream_from_mb * 2**20

    def _files(self) -> list[str]:
        return [f for f in (self.config.train_file, self.config.val_file, self.config.test_file) if f]

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
        check_text_column(frame, self.text_column, source)
        if cfg.text_pair_column:
            check_text_column(frame, cfg.text_pair_column, source)
        values = frame[self.label_column].tolist()
        rows = frame["_row"].tolist()
        if self.multi_label:
            labels = [
                parse_multi_label(v, cfg.label_delimiter, f"{source} row {r}")
                for v, r in zip(values, rows, strict=True)
            ]
        else:
            missing = np.array([v is None or (isinstance(v, float) and np.isnan(v)) for v in values])
            if missing.any():
                raise DataError(
                    f"{source}: {int(missing.sum())} row(s) have no label in column '{self.label_column}' "
                    f"(rows {row_numbers(frame, missing)}). Fill in the labels or drop those rows."
                )
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

    def setup(self, label_map: LabelMap | None = None) -> TextDataModule:
        """Read, check, split and encode every split. Pass ``label_map`` to evaluate with a trained model's labels."""
        cfg = self.config
        if cfg.dataset is None and cfg.train_file is None:
            raise DataError("TextDataModule needs train_file=... or dataset=... (see `workbench datasets`).")
        if cfg.truncation == "windows" and (self.augment.enabled or any(self._streams(f) for f in self._files())):
            raise DataError(
                "data.truncation=windows does not yet combine with augmentation or with files read in pieces "
                f"(data.stream_from_mb={cfg.stream_from_mb:g}): turn augment off and raise data.stream_from_mb "
                "above the files' size, or truncate (head, tail, head+tail)."
            )
        if self.augment.enabled and cfg.train_file and self._streams(cfg.train_file):  # before minutes of encoding
            raise DataError(
                f"{cfg.train_file} is read in pieces (data.stream_from_mb={cfg.stream_from_mb:g}), and "
                "augmentation needs every training text in memory. Turn augment off, or raise "
                "data.stream_from_mb above the file's size."
            )
        train, val, test = self.read_split("train"), self.read_split("validation"), self.read_split("test")
        if val is None:
            n_val = max(1, round(len(train) * cfg.val_fraction))
            if len(train) - n_val < 1:
                raise DataError(
                    f"{train.source} has only {len(train)} row(s): too few to split off validation. "
                    "Add examples or give data.val_file."
                )
            val, train = train.split(n_val, self.seed)
            val.source = f"{train.source} (held-out {cfg.val_fraction:.0%})"
            log.info("No validation split given: held out %d of %d training rows.", len(val), len(val) + len(train))
        if cfg.train_subset and cfg.train_subset < len(train):
            train, _ = train.split(cfg.train_subset, self.seed)
        if cfg.val_subset and cfg.val_subset < len(val):
            val, _ = val.split(cfg.val_subset, self.seed)
        if cfg.shots:
            if self.multi_label:
                raise DataError(
                    f"data.shots samples single-label data, and {train.source} is multi-label: leave data.shots out."
                )
            if not isinstance(train, LabelledRows):
                raise DataError(
                    f"data.shots samples the training split in memory, and {cfg.train_file} is read in pieces "
                    f"(data.stream_from_mb={cfg.stream_from_mb:g}): raise data.stream_from_mb above its size."
                )
            train = train.per_class(cfg.shots, self.seed)
            self.training_rows = {"shots": cfg.shots, "seed": self.seed, "source": train.source}
            self.training_rows["rows"] = train.rows_by_label()
        self.label_map = label_map or LabelMap(LabelMap.from_labels(train.label_names).names, self.multi_label)
        if len(self.label_map) < (1 if self.multi_label else 2):
            raise DataError(
                f"{train.source} has only the label(s) {self.label_map.names}: a classifier needs at least "
                "two classes. Check data.label_column, or add examples of the other classes."
            )
        self.train_dataset = self.encode(train)
        if self.augment.enabled:
            self.train_dataset = self.augmented(self.train_dataset, train.pairs)
        if self.processor.windowed:
            self.train_dataset = WindowedDataset(self.train_dataset, cfg.max_windows, self.seed)
        self.val_dataset = self.encode(val)
        if test is not None:
            self.test_dataset = self.encode(test)
        return self

    def use_training_split(self, dataset: EncodedExamples) -> None:
        """Train on ``dataset`` instead of the split :meth:`setup` read: examples encoded with this module's
        tokenizer and label map, which may carry more features (a distillation transfer set's soft targets)."""
        if self.label_map is None:
            raise DataError("Call setup() before use_training_split(): the label map decides the label ids.")
        self.train_dataset = dataset

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
        for feature, label in zip(features, labels, strict=True):
            feature["labels"] = label
        return EncodedDataset(features, rows.texts, rows.rows, rows.source)

    def augmented(self, train: EncodedDataset, pairs: list[str] | None = None) -> AugmentedDataset:
        """``train`` with this module's augmentation (model operations' variants made or read from their cache)."""
        device = "cuda" if torch.cuda.is_available() else "cpu"
        return AugmentedDataset(train, pairs, Augmenter(self.augment, seed=self.seed, device=device), self.processor)

    @classmethod
    def for_model(cls, model, **options) -> TextDataModule:
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
        train = self.train_dataset
        return LengthBucketedBatchSampler(
            train.planning_lengths,
            self.config.max_tokens,
            self.config.batch_size,
            shuffle=True,
            seed=self.seed if seed is None else seed,
            epoch_lengths=train.epoch_lengths,
            shards=shards,
        )

    def eval_batch_sampler(self, dataset: EncodedExamples) -> LengthBucketedBatchSampler:
        return LengthBucketedBatchSampler(
            dataset.lengths,
            max(self.config.max_tokens, 4 * self.config.max_length),
            self.config.eval_batch_size,
            shuffle=False,
        )
