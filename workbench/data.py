"""Reading, cleaning, tokenizing and batching text-classification data.

``TextDataModule`` turns files (CSV, TSV, JSONL, parquet) or a catalog dataset into encoded train,
validation and test sets, with one label map built from the training labels. Training batches come from
``LengthBucketedBatchSampler``: examples of similar length share a batch whose size is set by a token
budget, so short sentences travel in large batches, long documents in small ones, and almost nothing
is padding.

    dm = TextDataModule(train_file="train.csv", val_file="val.csv", model_name="minilm")
    dm.setup()
    dm.label_names, len(dm.train_dataset)
"""

from __future__ import annotations

import html
import json
import logging
import re
import unicodedata
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import train_test_split
from transformers import DataCollatorWithPadding

from workbench.config import DataConfig
from workbench.errors import DataError

log = logging.getLogger(__name__)

READERS = {".csv": ",", ".tsv": "\t", ".txt": "\t", ".jsonl": None, ".json": None, ".parquet": None}
_URL = re.compile(r"(https?://|www\.)\S+", re.IGNORECASE)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b")
_BREAK = re.compile(r"<\s*br\s*/?\s*>|<\s*/?\s*p\s*>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]{1,200}>")
_SPACE = re.compile(r"\s+")
# Characters of text kept per token of max_length before tokenizing: enormous inputs are cut first so a
# 100 MB "review" costs no more than a long one. 20 chars/token is far above any real tokenizer's ratio.
_CHARS_PER_TOKEN = 20


# --------------------------------------------------------------------------------------------------
# Files


def _suffix(path: Path) -> str:
    suffixes = [s for s in path.suffixes if s not in (".gz", ".bz2", ".zip", ".xz")]
    return suffixes[-1].lower() if suffixes else ""


def _first_row_number(path: Path) -> int:
    """File row (1-based) of the first data row: line 2 after a CSV/TSV header, line 1 in JSONL."""
    return 2 if READERS.get(_suffix(path)) else 1


def _check_utf8(path: Path) -> None:
    if path.suffix.lower() in (".gz", ".bz2", ".zip", ".xz", ".parquet"):
        return
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path} is not UTF-8: byte 0x{raw[exc.start]:02x} on line {line} cannot be decoded. "
            f"Re-save the file as UTF-8, e.g. `iconv -f latin1 -t utf-8 {path.name} > fixed.{path.name}`."
        ) from None


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV, TSV, JSONL or parquet file into a DataFrame, with errors that name the file.

    Args:
        path: the file; the format follows its suffix (``.csv``, ``.tsv``, ``.jsonl``, ``.parquet``,
            optionally compressed as ``.gz``).

    Returns:
        The rows, with column ``_row`` holding each row's number in the file (as a person counts lines).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"Data file {path} does not exist. Check the path (it is read relative to {Path.cwd()}).")
    suffix = _suffix(path)
    if suffix not in READERS:
        raise DataError(f"{path}: unknown format '{suffix}'. Use one of {', '.join(READERS)} (optionally .gz).")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty. It needs a header row and at least one example.")
    _check_utf8(path)
    try:
        if suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif suffix in (".jsonl", ".json"):
            frame = pd.read_json(path, lines=suffix == ".jsonl", dtype=False)
        else:
            frame = pd.read_csv(path, sep=READERS[suffix], dtype=str, keep_default_na=False, na_values=[""],
                                quoting=3 if suffix in (".tsv", ".txt") else 0)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty. It needs a header row and at least one example.") from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataError(f"{path} could not be parsed as {suffix[1:].upper()}: {exc}. "
                        "Check the delimiter and quoting of the rows it names.") from None
    if frame.empty:
        raise DataError(f"{path} has a header but no rows. Add examples to it.")
    frame.columns = [str(c) for c in frame.columns]
    frame["_row"] = np.arange(len(frame)) + _first_row_number(path)
    return frame


def _require_columns(frame: pd.DataFrame, columns: Iterable[str], source: str) -> None:
    present = [c for c in frame.columns if c != "_row"]
    for column in columns:
        if column in frame.columns:
            continue
        hint = ""
        if len(present) == 1 and any(sep in present[0] for sep in ("\t", ",", ";", "|")):
            hint = (" The header is a single column that contains separators, so the delimiter looks wrong: "
                    "name a tab-separated file .tsv and a comma-separated one .csv.")
        raise DataError(
            f"{source} has no column '{column}'. Its columns are: {', '.join(present)}.{hint} "
            f"Set data.text_column / data.label_column to the right names."
        )


def _rows(frame: pd.DataFrame, mask: np.ndarray, limit: int = 5) -> str:
    rows = frame.loc[mask, "_row"].tolist()
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return ", ".join(map(str, rows[:limit])) + more


def check_texts(frame: pd.DataFrame, column: str, source: str) -> None:
    """Raise DataError naming the rows whose text is missing, NaN or blank."""
    values = frame[column]
    bad = values.isna().to_numpy() | values.astype(str).str.strip().eq("").to_numpy()
    if bad.any():
        raise DataError(
            f"{source}: {int(bad.sum())} row(s) have empty or missing text in column '{column}' "
            f"(rows {_rows(frame, bad)}). Remove those rows or fill in their text."
        )


def parse_multi_label(cell: Any, delimiter: str, where: str) -> list[str]:
    """One multi-label cell (a list, a JSON list or a delimited string) as a list of label names."""
    if isinstance(cell, (list, tuple, np.ndarray)):
        return [str(x).strip() for x in cell if str(x).strip()]
    if cell is None or (isinstance(cell, float) and np.isnan(cell)):
        return []
    text = str(cell).strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: the labels {text!r} look like a JSON list but do not parse ({exc.msg}). "
                            f"Write them as [\"a\", \"b\"] or as a '{delimiter}'-delimited string.") from None
        if not isinstance(value, list):
            raise DataError(f"{where}: the labels {text!r} must be a list.")
        return [str(x).strip() for x in value if str(x).strip()]
    return [part.strip() for part in text.split(delimiter) if part.strip()]


# --------------------------------------------------------------------------------------------------
# Labels


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
        unknown = [(i, str(x)) for i, group in enumerate(groups) for x in group if str(x) not in self.index]
        if unknown:
            where = ", ".join(f"'{name}' (row {rows[i] if rows is not None else i})" for i, name in unknown[:5])
            raise DataError(
                f"{source}: {len(unknown)} label(s) are not among the {len(self.names)} labels the model knows: "
                f"{where}. Known labels: {', '.join(self.names[:20])}{' ...' if len(self.names) > 20 else ''}. "
                "Fix the labels, or retrain with this label in the training data."
            )
        if not self.multi_label:
            return [self.index[str(x)] for x in labels]
        encoded = []
        for group in groups:
            vector = [0.0] * len(self.names)
            for x in group:
                vector[self.index[str(x)]] = 1.0
            encoded.append(vector)
        return encoded

    def to_dict(self) -> dict:
        return {"labels": self.names, "multi_label": self.multi_label}

    @classmethod
    def from_dict(cls, values: dict) -> "LabelMap":
        return cls(values["labels"], values.get("multi_label", False))


# --------------------------------------------------------------------------------------------------
# Cleaning and tokenizing


class TextProcessor:
    """Cleans raw text and tokenizes it with a head, tail or head+tail truncation strategy.

    Args:
        model_name: backbone name, local path or alias whose tokenizer to use (``"minilm"``).
        tokenizer: an already loaded tokenizer (takes precedence over ``model_name``).
        max_length: longest encoded input, special tokens included.
        truncation: ``"head"`` keeps the start, ``"tail"`` the end and ``"head+tail"`` both
            (Sun et al. 2019 found head+tail best for long reviews).
        head_fraction: with head+tail, the share of the budget taken from the start.
        clean_html, mask_urls, mask_emails, lowercase: cleaning steps applied before tokenizing.

    Example:
        >>> processor = TextProcessor(model_name="minilm")
        >>> processor.clean("Great<br /><br />film!  Visit www.x.com")
        'Great film! Visit www.x.com'
    """

    def __init__(self, model_name: str | None = "minilm", *, tokenizer=None, max_length: int = 128,
                 truncation: str = "head", head_fraction: float = 0.25, clean_html: bool = True,
                 mask_urls: bool = False, mask_emails: bool = False, lowercase: bool = False):
        if tokenizer is None and model_name is not None:
            from workbench.models import load_tokenizer

            tokenizer = load_tokenizer(model_name)
        self.tokenizer = tokenizer
        self.config = DataConfig(max_length=max_length, max_tokens=max(8192, max_length), truncation=truncation,
                                 head_fraction=head_fraction, clean_html=clean_html, mask_urls=mask_urls,
                                 mask_emails=mask_emails, lowercase=lowercase)

    @classmethod
    def from_config(cls, config: DataConfig, tokenizer) -> "TextProcessor":
        processor = cls(None, tokenizer=tokenizer)
        processor.config = config
        return processor

    def clean(self, text: str) -> str:
        """Normalize unicode (NFKC), strip HTML, mask URLs/e-mails if asked, and collapse whitespace."""
        cfg = self.config
        text = unicodedata.normalize("NFKC", str(text))
        if cfg.clean_html:
            text = _TAG.sub(" ", _BREAK.sub(" ", text))
            text = html.unescape(text)
        if cfg.mask_emails:
            text = _EMAIL.sub("[EMAIL]", text)
        if cfg.mask_urls:
            text = _URL.sub("[URL]", text)
        if cfg.lowercase:
            text = text.lower()
        return _SPACE.sub(" ", text).strip()

    def _cut(self, text: str) -> str:
        keep = self.config.max_length * _CHARS_PER_TOKEN
        if len(text) <= keep:
            return text
        if self.config.truncation == "head":
            return text[:keep]
        if self.config.truncation == "tail":
            return text[-keep:]
        return text[:keep] + " " + text[-keep:]

    def _truncate(self, ids: list[int], budget: int) -> list[int]:
        if len(ids) <= budget:
            return ids
        if self.config.truncation == "head":
            return ids[:budget]
        if self.config.truncation == "tail":
            return ids[-budget:]
        head = min(budget - 1, max(1, round(budget * self.config.head_fraction)))
        return ids[:head] + ids[-(budget - head):]

    def _special_tokens(self) -> tuple[list[int], list[int]]:
        """The ids a tokenizer puts before and after one sequence ([CLS] ... [SEP], <s> ... </s>)."""
        if not hasattr(self, "_specials"):
            plain = self.tokenizer("a", add_special_tokens=False)["input_ids"]
            full = self.tokenizer("a")["input_ids"]
            start = next(i for i in range(len(full)) if full[i:i + len(plain)] == plain)
            self._specials = (full[:start], full[start + len(plain):])
        return self._specials

    def encode(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> list[dict]:
        """Clean and tokenize texts (and optional second texts) into lists of token ids.

        Returns:
            One dict per text with ``input_ids`` (and ``token_type_ids`` where the model uses them).
        """
        tok = self.tokenizer
        texts = [self._cut(self.clean(t)) for t in texts]
        if pairs is not None:
            pairs = [self._cut(self.clean(t)) for t in pairs]
            enc = tok(texts, pairs, truncation="longest_first", max_length=self.config.max_length)
            keys = [k for k in ("input_ids", "token_type_ids") if k in enc]
            return [{k: enc[k][i] for k in keys} for i in range(len(texts))]
        prefix, suffix = self._special_tokens()
        budget = self.config.max_length - len(prefix) - len(suffix)
        pieces = tok(texts, add_special_tokens=False, truncation=False)["input_ids"]
        encoded = []
        for ids in pieces:
            ids = prefix + self._truncate(ids, budget) + suffix
            item = {"input_ids": ids}
            if "token_type_ids" in tok.model_input_names:
                item["token_type_ids"] = [0] * len(ids)
            encoded.append(item)
        return encoded

    def process_text(self, text: str | Sequence[str]) -> dict[str, torch.Tensor]:
        """Clean and tokenize one text (or a list) into padded tensors ready for ``model.predict``."""
        texts = [text] if isinstance(text, str) else list(text)
        if any(not str(t).strip() for t in texts):
            raise DataError("process_text got an empty text; give it at least one word.")
        return self.tokenizer.pad(self.encode(texts), return_tensors="pt")


# --------------------------------------------------------------------------------------------------
# Datasets and batching


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


class LengthBucketedBatchSampler(torch.utils.data.Sampler):
    """Batches of equal-length examples whose size is set by a token budget.

    Examples are sorted by token length (ties broken at random each epoch) and packed greedily so that
    ``batch examples x longest length <= max_tokens`` and ``batch examples <= max_batch_size``. The batch
    boundaries depend only on the multiset of lengths, so the number of batches is the same every
    epoch (the trainer's schedule relies on that), while the order of batches and their members change
    with the epoch's seed. Padding is nearly zero.

    Args:
        lengths: token length of each example, shape ``(N,)``.
        max_tokens: padded-token budget of one batch.
        max_batch_size: most examples in one batch.
        shuffle: shuffle members (within equal lengths) and batch order each epoch.
        seed: base seed; epoch ``e`` uses ``seed + e`` so a resumed run sees the same batches.
    """

    def __init__(self, lengths: Sequence[int], max_tokens: int, max_batch_size: int, shuffle: bool = True,
                 seed: int = 0):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.max_tokens, self.max_batch_size = max_tokens, max_batch_size
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        if len(self.lengths) and self.lengths.max() > max_tokens:
            raise DataError(f"An example of {self.lengths.max()} tokens exceeds data.max_tokens={max_tokens}; "
                            "raise data.max_tokens or lower data.max_length.")
        self.sizes = self._plan(np.sort(self.lengths))

    def _plan(self, sorted_lengths: np.ndarray) -> list[int]:
        sizes, count = [], 0
        for length in sorted_lengths:  # ascending, so the newest example is the longest
            if count and ((count + 1) * length > self.max_tokens or count + 1 > self.max_batch_size):
                sizes.append(count)
                count = 0
            count += 1
        if count:
            sizes.append(count)
        return sizes

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.sizes)

    def batches(self) -> list[list[int]]:
        rng = np.random.default_rng(self.seed + self.epoch)
        tiebreak = rng.random(len(self.lengths)) if self.shuffle else np.arange(len(self.lengths))
        order = np.lexsort((tiebreak, self.lengths))
        bounds = np.cumsum([0] + self.sizes)
        batches = [order[a:b].tolist() for a, b in zip(bounds[:-1], bounds[1:])]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __iter__(self):
        return iter(self.batches())

    def padding_ratio(self) -> float:
        """Padded tokens over real tokens (1.0 means no padding at all)."""
        sorted_lengths = np.sort(self.lengths)
        bounds = np.cumsum([0] + self.sizes)
        padded = sum(sorted_lengths[b - 1] * (b - a) for a, b in zip(bounds[:-1], bounds[1:]))
        return float(padded / max(1, sorted_lengths.sum()))


def _stratified_take(frame: pd.DataFrame, n: int, labels: Sequence, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ``frame`` into n rows and the rest, stratified by label where every class has two rows."""
    counts = pd.Series(labels).value_counts()
    # sklearn stratifies only when every class has two rows and both sides can hold one of each class
    stratify = labels if counts.min() >= 2 and len(counts) <= min(n, len(frame) - n) else None
    taken, rest = train_test_split(frame, train_size=n, random_state=seed, stratify=stratify)
    return taken, rest


def _catalog_entry(name: str):
    from workbench.catalog import list_datasets

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
                 *, model_name: str = "minilm", dataset: str | None = None, config: DataConfig | None = None,
                 tokenizer=None, seed: int = 42, data_root: str | None = None, **options):
        valid = {f.name for f in fields(DataConfig)}
        unknown = sorted(set(options) - valid)
        if unknown:
            raise DataError(f"TextDataModule got unknown option(s) {', '.join(unknown)}. Valid: {', '.join(sorted(valid))}.")
        config = config or DataConfig()
        given = {"train_file": train_file, "val_file": val_file, "test_file": test_file, "dataset": dataset}
        config = replace(config, **{k: v for k, v in given.items() if v is not None}, **options)
        self.config, self.model_name, self.seed, self.data_root = config, model_name, seed, data_root
        self._tokenizer = tokenizer
        self.label_map: LabelMap | None = None
        self.train_dataset = self.val_dataset = self.test_dataset = None

    # -- reading ------------------------------------------------------------------------------------

    @property
    def multi_label(self) -> bool:
        if self.config.dataset:
            return _catalog_entry(self.config.dataset).multi_label
        return self.config.multi_label

    def _frames(self) -> dict[str, tuple[pd.DataFrame | None, str]]:
        cfg = self.config
        if cfg.dataset:
            entry = _catalog_entry(cfg.dataset)

            def split(name):
                if name is None or (name == "validation" and name not in entry.splits):
                    return None, f"{cfg.dataset}:{name}"  # no validation split: one is held out of train
                if name not in entry.splits:
                    raise DataError(f"Dataset '{cfg.dataset}' has no split '{name}'; it has {', '.join(entry.splits)}.")
                return self._catalog_frame(name), f"{cfg.dataset}:{name}"

            if cfg.train_split not in entry.splits:
                raise DataError(f"Dataset '{cfg.dataset}' has no split '{cfg.train_split}'; it has "
                                f"{', '.join(entry.splits)}. {entry.note}")
            return {"train": split(cfg.train_split), "val": split(cfg.val_split), "test": split(cfg.test_split)}
        read = lambda f: (read_table(f), str(f)) if f else (None, str(f))  # noqa: E731
        return {"train": read(cfg.train_file), "val": read(cfg.val_file), "test": read(cfg.test_file)}

    def _labels_of(self, frame: pd.DataFrame, source: str) -> list:
        cfg = self.config
        column = self.label_column
        values = frame[column].tolist()
        missing = np.array([v is None or (isinstance(v, float) and np.isnan(v)) for v in values])
        if not self.multi_label:
            if missing.any():
                raise DataError(f"{source}: {int(missing.sum())} row(s) have no label in column '{column}' "
                                f"(rows {_rows(frame, missing)}). Fill in the labels or drop those rows.")
            return [str(v).strip() for v in values]
        rows = frame["_row"].tolist()
        return [parse_multi_label(v, cfg.label_delimiter, f"{source} row {r}") for v, r in zip(values, rows)]

    @property
    def text_column(self) -> str:
        return "text" if self.config.dataset else self.config.text_column  # the catalog always says "text"

    @property
    def label_column(self) -> str:
        return "label" if self.config.dataset else self.config.label_column

    def _catalog_frame(self, split: str) -> pd.DataFrame:
        from workbench.catalog import load_split

        frame = load_split(self.config.dataset, split, self.data_root).reset_index(drop=True)
        frame["_row"] = np.arange(len(frame))  # catalog rows are numbered from 0
        return frame

    def _strata(self, labels: list) -> list:
        # multi-label rows are stratified by their first label
        return [group[0] if group else "" for group in labels] if self.multi_label else labels

    def _check(self, frame: pd.DataFrame, source: str) -> None:
        cfg = self.config
        text_column = self.text_column
        columns = [text_column, self.label_column]
        if cfg.text_pair_column:
            columns.append(cfg.text_pair_column)
        _require_columns(frame, columns, source)
        check_texts(frame, text_column, source)
        if cfg.text_pair_column:
            check_texts(frame, cfg.text_pair_column, source)

    # -- setup --------------------------------------------------------------------------------------

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from workbench.models import load_tokenizer

            self._tokenizer = load_tokenizer(self.model_name)
        return self._tokenizer

    @property
    def processor(self) -> TextProcessor:
        return TextProcessor.from_config(self.config, self.tokenizer)

    def setup(self, label_map: LabelMap | None = None) -> "TextDataModule":
        """Read, check, split and encode every split. Pass ``label_map`` to evaluate with a trained model's labels."""
        cfg = self.config
        if cfg.dataset is None and cfg.train_file is None:
            raise DataError("TextDataModule needs train_file=... or dataset=... (see `workbench datasets`).")
        frames = self._frames()
        train, train_source = frames["train"]
        self._check(train, train_source)
        train_labels = self._labels_of(train, train_source)
        val, val_source = frames["val"]
        if val is None:
            n_val = max(1, int(round(len(train) * cfg.val_fraction)))
            if len(train) - n_val < 1:
                raise DataError(f"{train_source} has only {len(train)} row(s): too few to split off validation. "
                                "Add examples or give data.val_file.")
            strat = self._strata(train_labels)
            val, train = _stratified_take(train, n_val, strat, self.seed)
            val_source = f"{train_source} (held-out {cfg.val_fraction:.0%})"
            log.info("No validation split given: held out %d of %d training rows.", len(val), len(val) + len(train))
            train_labels = self._labels_of(train, train_source)
        if cfg.train_subset and cfg.train_subset < len(train):
            strat = self._strata(train_labels)
            train, _ = _stratified_take(train, cfg.train_subset, strat, self.seed)
            train_labels = self._labels_of(train, train_source)
        self._check(val, val_source)
        if cfg.val_subset and cfg.val_subset < len(val):
            val_labels = self._labels_of(val, val_source)
            strat = self._strata(val_labels)
            val, _ = _stratified_take(val, cfg.val_subset, strat, self.seed)
        self.label_map = label_map or LabelMap.from_labels(train_labels, self.multi_label)
        if len(self.label_map) < (1 if self.multi_label else 2):
            raise DataError(f"{train_source} has only the label(s) {self.label_map.names}: a classifier needs at least "
                            "two classes. Check data.label_column, or add examples of the other classes.")
        self.train_dataset = self._encode(train, train_source)
        self.val_dataset = self._encode(val, val_source)
        test, test_source = frames["test"]
        if test is not None:
            self._check(test, test_source)
            self.test_dataset = self._encode(test, test_source)
        return self

    def _encode(self, frame: pd.DataFrame, source: str) -> EncodedDataset:
        cfg = self.config
        text_column = self.text_column
        labels = self.label_map.encode(self._labels_of(frame, source), frame["_row"].tolist(), source)
        texts = frame[text_column].astype(str).tolist()
        pairs = frame[cfg.text_pair_column].astype(str).tolist() if cfg.text_pair_column else None
        features = self.processor.encode(texts, pairs)
        for feature, label in zip(features, labels):
            feature["labels"] = label
        return EncodedDataset(features, texts, frame["_row"].tolist(), source)

    @classmethod
    def for_model(cls, model, **options) -> "TextDataModule":
        """A data module that encodes data exactly as ``model`` was trained, with its label map.

        Use it to evaluate a trained model on new labelled data: ``TextDataModule.for_model(m).encode_file(f)``.
        """
        config = DataConfig(**{**model.processing, "multi_label": model.multi_label})
        dm = cls(model_name=model.model_name, tokenizer=model.tokenizer, config=config, **options)
        dm.label_map = LabelMap(model.label_names, model.multi_label)
        return dm

    def encode_file(self, path: str | Path) -> EncodedDataset:
        """Encode another labelled file (e.g. for ``workbench evaluate``) with this module's label map."""
        frame = read_table(path)
        self._check(frame, str(path))
        return self._encode(frame, str(path))

    def encode_split(self, split: str) -> EncodedDataset:
        """Encode one split of the catalog dataset with this module's label map."""
        frame = self._catalog_frame(split)
        source = f"{self.config.dataset}:{split}"
        self._check(frame, source)
        return self._encode(frame, source)

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

    def train_batch_sampler(self, seed: int | None = None) -> LengthBucketedBatchSampler:
        return LengthBucketedBatchSampler(self.train_dataset.lengths, self.config.max_tokens, self.config.batch_size,
                                          shuffle=True, seed=self.seed if seed is None else seed)

    def eval_batch_sampler(self, dataset: EncodedDataset) -> LengthBucketedBatchSampler:
        return LengthBucketedBatchSampler(dataset.lengths, max(self.config.max_tokens, 4 * self.config.max_length),
                                          self.config.eval_batch_size, shuffle=False)
