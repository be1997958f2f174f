"""Reading and checking data files: CSV, TSV, JSONL and parquet (optionally compressed).

Every problem a file can have (it is missing, empty, not UTF-8, has the wrong delimiter, lacks a column,
has blank texts or a garbled multi-label cell) becomes a :class:`~workbench.errors.DataError` that names
the file, the rows (numbered as a person counts lines) and the fix::

    frame = read_table("data/train.csv")          # rows plus a `_row` column with each row's line number
    require_columns(frame, ["text", "label"], "data/train.csv")
    check_text_column(frame, "text", "data/train.csv")
"""

from __future__ import annotations

import codecs
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from workbench.errors import DataError

READERS = {".csv": ",", ".tsv": "\t", ".txt": "\t", ".jsonl": None, ".json": None, ".parquet": None}


def _suffix(path: Path) -> str:
    suffixes = [s for s in path.suffixes if s not in (".gz", ".bz2", ".zip", ".xz")]
    return suffixes[-1].lower() if suffixes else ""


def _first_row_number(path: Path) -> int:
    """File row (1-based) of the first data row: line 2 after a CSV/TSV header, line 1 in JSONL."""
    return 2 if READERS.get(_suffix(path)) else 1


def _check_utf8(path: Path) -> None:
    """Raise DataError naming the first line that is not UTF-8; reads 1 MB at a time, so any file size is fine."""
    if path.suffix.lower() in (".gz", ".bz2", ".zip", ".xz", ".parquet"):
        return
    decoder, line = codecs.getincrementaldecoder("utf-8")(), 1
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            held = len(decoder.getstate()[0])  # bytes of a character cut at the last block's end, decoded first
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                at = max(0, min(exc.start - held, len(block) - 1))
                line += block[:at].count(b"\n")
                raise DataError(
                    f"{path} is not UTF-8: byte 0x{block[at]:02x} on line {line} cannot be "
                    "decoded. Re-save the file as UTF-8, e.g. "
                    f"`iconv -f latin1 -t utf-8 {path.name} > fixed.{path.name}`."
                ) from None
            line += block.count(b"\n")
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise DataError(
            f"{path} is not UTF-8: it ends inside a multi-byte character (line {line}). Re-save the file as UTF-8."
        ) from None


def readable_format(path: str | Path) -> str:
    """The suffix that names a data file's format (``.csv``, ``.jsonl``, ...), after checking that the file exists,
    has a known format and is not empty; errors name the file and the fix."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"Data file {path} does not exist. Check the path (it is read relative to {Path.cwd()}).")
    if path.is_dir():
        raise DataError(
            f"{path} is a folder, not a data file. Give the path of a .csv, .tsv, .jsonl or .parquet file inside it."
        )
    suffix = _suffix(path)
    if suffix not in READERS:
        raise DataError(f"{path}: unknown format '{suffix}'. Use one of {', '.join(READERS)} (optionally .gz).")
    if path.stat().st_size == 0:
        raise _empty(path)
    return suffix


def _empty(path: Path) -> DataError:
    return DataError(f"{path} is empty. It needs a header row and at least one example.")


def _no_rows(path: Path) -> DataError:
    return DataError(f"{path} has a header but no rows. Add examples to it.")


def _parse_error(path: Path, suffix: str, exc: Exception, where: str = "") -> DataError:
    """A reader's parse error in one line, naming the file (and ``where`` in it) and the fix for its format."""
    if suffix in (".jsonl", ".json"):
        fix = (
            'Each line of a .jsonl file must be one JSON object such as {"text": "...", "label": "..."}; '
            "a .json file holds one list of such objects."
        )
    else:
        fix = "Check the delimiter and quoting of the rows it names."
    problem = " ".join(str(exc).split()).rstrip(".")
    return DataError(f"{path} could not be parsed as {suffix[1:].upper()}{where}: {problem}. {fix}")


def _csv_options(suffix: str) -> dict:
    # every column as text (a label "1" or a text "NA" stays a string); TSV without quoting: sentences hold bare quotes
    return {
        "sep": READERS[suffix],
        "dtype": str,
        "keep_default_na": False,
        "na_values": [""],
        "quoting": 3 if suffix in (".tsv", ".txt") else 0,
    }


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV, TSV, JSONL or parquet file into a DataFrame, with errors that name the file.

    Args:
        path: the file; the format follows its suffix (``.csv``, ``.tsv``, ``.jsonl``, ``.parquet``,
            optionally compressed as ``.gz``).

    Returns:
        The rows, with column ``_row`` holding each row's number in the file (as a person counts lines).
    """
    path = Path(path)
    suffix = readable_format(path)
    _check_utf8(path)
    try:
        if suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif suffix in (".jsonl", ".json"):
            frame = pd.read_json(path, lines=suffix == ".jsonl", dtype=False)
        else:
            frame = pd.read_csv(path, **_csv_options(suffix))
    except pd.errors.EmptyDataError:
        raise _empty(path) from None
    except (pd.errors.ParserError, ValueError, TypeError) as exc:
        raise _parse_error(path, suffix, exc) from None
    if frame.empty:
        raise _no_rows(path)
    frame.columns = [str(c) for c in frame.columns]
    frame["_row"] = np.arange(len(frame)) + _first_row_number(path)
    return frame


def read_table_chunks(path: str | Path, rows: int = 10_000) -> Iterator[pd.DataFrame]:
    """:func:`read_table` in pieces of ``rows`` rows, for files of any size: the same formats, checks and ``_row``
    numbers, with memory bounded by one piece (``workbench predict`` and ``evaluate --file`` stream this way).

    Example:
        >>> for frame in read_table_chunks("big.csv", rows=50_000):  # doctest: +SKIP
        ...     print(frame["_row"].iloc[0], len(frame))
    """
    path = Path(path)
    if rows < 1:
        raise DataError(f"Rows per piece must be at least 1 (got {rows}).")
    suffix = readable_format(path)
    if suffix == ".json":  # one JSON array: it cannot be read in pieces, so read it whole and hand it out in pieces
        whole = read_table(path)
        for start in range(0, len(whole), rows):
            yield whole.iloc[start : start + rows]
        return
    _check_utf8(path)
    start = _first_row_number(path)
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            pieces = (batch.to_pandas() for batch in pq.ParquetFile(path).iter_batches(batch_size=rows))
        elif suffix == ".jsonl":
            pieces = pd.read_json(path, lines=True, dtype=False, chunksize=rows)
        else:
            pieces = pd.read_csv(path, **_csv_options(suffix), chunksize=rows)
        for frame in pieces:
            frame.columns = [str(c) for c in frame.columns]
            frame["_row"] = np.arange(len(frame)) + start
            start += len(frame)
            yield frame
    except pd.errors.EmptyDataError:
        raise _empty(path) from None
    except (pd.errors.ParserError, ValueError, TypeError) as exc:
        raise _parse_error(path, suffix, exc, f" after row {start - 1}") from None
    if start == _first_row_number(path):
        raise _no_rows(path)


def require_columns(
    frame: pd.DataFrame,
    columns: Iterable[str],
    source: str,
    *,
    fix: str = "Set data.text_column / data.label_column to the right names.",
) -> None:
    """Raise DataError naming the first missing column, the columns present, a delimiter hint and ``fix``."""
    present = [c for c in frame.columns if c != "_row"]
    for column in columns:
        if column in frame.columns:
            continue
        hint = ""
        if len(present) == 1 and any(sep in present[0] for sep in ("\t", ",", ";", "|")):
            hint = (
                " The header is a single column that contains separators, so the delimiter looks wrong: "
                "name a tab-separated file .tsv and a comma-separated one .csv."
            )
        raise DataError(f"{source} has no column '{column}'. Its columns are: {', '.join(present)}.{hint} {fix}")


def row_numbers(frame: pd.DataFrame, mask: np.ndarray, limit: int = 5) -> str:
    """The file rows where ``mask`` is true, for an error message: ``"3, 7, 9 and 2 more"``."""
    rows = frame.loc[mask, "_row"].tolist()
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return ", ".join(map(str, rows[:limit])) + more


def check_text_column(frame: pd.DataFrame, column: str, source: str) -> None:
    """Raise DataError naming the rows whose text is missing, NaN or blank."""
    values = frame[column]
    bad = values.isna().to_numpy() | values.astype(str).str.strip().eq("").to_numpy()
    if bad.any():
        raise DataError(
            f"{source}: {int(bad.sum())} row(s) have empty or missing text in column '{column}' "
            f"(rows {row_numbers(frame, bad)}). Remove those rows or fill in their text."
        )


def label_text(value: Any) -> str:
    """A label as text, the same whichever type the reader gave it: a column of whole numbers becomes floats
    where one cell is missing or fractional, so 1, 1.0 and numpy's 1 all read "1"."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value).strip()


def parse_multi_label(cell: Any, delimiter: str, where: str) -> list[str]:
    """One multi-label cell (a list, a JSON list or a delimited string) as a list of label names."""
    if isinstance(cell, (list, tuple, np.ndarray)):
        return [label_text(x) for x in cell if label_text(x)]
    if cell is None or (isinstance(cell, float) and np.isnan(cell)):
        return []
    if isinstance(cell, (int, float, np.number)):
        return [label_text(cell)]
    text = str(cell).strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{where}: the labels {text!r} look like a JSON list but do not parse ({exc.msg}). "
                f'Write them as ["a", "b"] or as a \'{delimiter}\'-delimited string.'
            ) from None
        if not isinstance(value, list):
            raise DataError(f"{where}: the labels {text!r} must be a list.")
        return [label_text(x) for x in value if label_text(x)]
    return [part.strip() for part in text.split(delimiter) if part.strip()]


def append_record(path: str | Path, record: dict) -> None:
    """Append ``record`` to a JSON-lines file as one line, flushed to disk before returning: a process killed right
    after loses nothing (the labeller writes each click this way)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def drop_last_record(path: str | Path) -> dict | None:
    """Remove the last line of a JSON-lines file (rewritten to a temporary name, then renamed) and return it; None
    when the file is missing or empty."""
    path = Path(path)
    if not path.exists():
        return None
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines:
        return None
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text("".join(line + "\n" for line in lines[:-1]), encoding="utf-8")
    os.replace(partial, path)
    return json.loads(lines[-1])
