"""Named benchmark datasets, loaded from the shared data folder into plain DataFrames.

Each dataset in the folder has its own layout (GLUE TSV, headerless CSV, gzip CSV, SGML); this module
hides that and returns one shape for all of them: a DataFrame with a ``text`` column (str) and a
``label`` column (the class name as a str, or a list of class names for multi-label datasets), plus
extra columns where the source has them (``label_fine`` for TREC, ``id`` and ``rating`` for IMDB,
``id`` for Reuters).

Texts are returned as the source has them, except where the source uses an escape that no reader
could want (AG News' backslash line breaks and mangled HTML entities, SGML character references in
Reuters). Cleaning such as removing IMDB's ``<br />`` belongs to the text processor, not here.

The folder is found by :func:`data_root`; its README documents every file. On a machine without it (or without
one dataset's files, or a split the folder lacks, such as AG News' 120,000-row train split), :func:`load_split`
loads the same dataset from the Hugging Face Hub through ``datasets`` (:data:`HUB_SOURCES`), cached in
``datasets``' usual cache folder, and maps it to the same frame. Offline, it says in one line which dataset is
missing and the two ways to provide it. Example::

    from workbench.catalog import list_datasets, load_split
    [entry.name for entry in list_datasets()]   # ['sst2', 'imdb', 'ag_news', 'reuters', 'trec', 'trec_fine']
    train = load_split("trec", "train")          # 5,452 rows: text, label, label_fine
"""

from __future__ import annotations

import csv
import functools
import html
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from workbench.errors import DataError

__all__ = [
    "HUB_SOURCES",
    "CatalogEntry",
    "DataError",
    "HubSource",
    "available_splits",
    "data_root",
    "hub_frame",
    "list_datasets",
    "load_split",
    "split_sizes",
]

DATA_ENV_VAR = "WORKBENCH_DATA"


@dataclass(frozen=True)
class CatalogEntry:
    """What the catalog knows about one named dataset.

    Attributes:
        name: The name to pass to :func:`load_split`, e.g. ``"sst2"``.
        description: One line on what the dataset is.
        multi_label: True when ``label`` holds a list of class names per row.
        splits: The labelled splits that :func:`load_split` accepts, e.g. ``("train", "validation")``.
        label_columns: Columns of the loaded DataFrame that hold labels; the first is ``label``.
        note: Anything a user must know before relying on the splits (missing files, unlabelled parts).
    """

    name: str
    description: str
    multi_label: bool
    splits: tuple[str, ...]
    label_columns: tuple[str, ...]
    note: str = ""


def data_root(explicit: str | Path | None = None) -> Path:
    """Find the folder that holds the benchmark datasets.

    The first of these wins: ``explicit``, the ``WORKBENCH_DATA`` environment variable,
    ``shared/data`` beside the repository that holds this package, ``../shared/data`` from the
    current directory. An explicit path or environment variable that does not exist is an error
    rather than a silent fall-through, so a typo never loads some other copy of the data.

    Args:
        explicit: A folder given by the caller, or None to search.

    Returns:
        The data folder as an absolute path.

    Raises:
        DataError: No data folder was found (the message says how to point to one).

    Example::

        data_root()                     # PosixPath('/work/shared/data')
        data_root("/mnt/benchmarks")
    """
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_dir():
            raise DataError(f"data folder {path} does not exist; pass the folder that holds sst2/, trec/, ...")
        return path.resolve()
    from_env = os.environ.get(DATA_ENV_VAR)
    if from_env:
        path = Path(from_env).expanduser()
        if not path.is_dir():
            raise DataError(
                f"{DATA_ENV_VAR}={from_env} does not exist; set it to the folder that holds sst2/, trec/, ..."
            )
        return path.resolve()
    candidates = [
        Path(__file__).resolve().parents[1].parent / "shared" / "data",
        Path.cwd().parent / "shared" / "data",
    ]
    for path in candidates:
        if path.is_dir():
            return path.resolve()
    tried = ", ".join(str(path) for path in candidates)
    raise DataError(f"no data folder found (tried {tried}); set {DATA_ENV_VAR}=/path/to/data")


def list_datasets() -> list[CatalogEntry]:
    """List every dataset the catalog can load.

    Returns:
        One :class:`CatalogEntry` per dataset, in catalog order.

    Example::

        {e.name: e.splits for e in list_datasets()}["ag_news"]   # ('test',)
    """
    return [entry for entry, _ in _CATALOG.values()]


def load_split(name: str, split: str, root: str | Path | None = None) -> pd.DataFrame:
    """Load one labelled split of a named dataset.

    Args:
        name: A dataset name from :func:`list_datasets`, e.g. ``"sst2"``.
        split: One of that entry's ``splits``, e.g. ``"train"``.
        root: The data folder; None finds it with :func:`data_root`.

    Returns:
        A new DataFrame with ``text`` (str) and ``label`` (str, or list[str] when the entry is
        multi-label) and any extra columns the dataset has, in the source file's row order.

    Raises:
        DataError: Unknown name or split (the message lists the valid ones), or a missing file.

    Example::

        df = load_split("reuters", "test")
        df.loc[0, "label"]              # ['trade'] -- a list, Reuters is multi-label
    """
    entry, loader = _lookup(name)
    hub = HUB_SOURCES[name]
    if split not in entry.splits and split not in hub.splits:
        hint = f" ({entry.note})" if entry.note else ""
        raise DataError(f"dataset {name!r} has no split {split!r}; valid splits: {', '.join(entry.splits)}{hint}")
    try:
        folder = data_root(root)
    except DataError:
        if root is not None or os.environ.get(DATA_ENV_VAR):
            raise  # a folder named on purpose that does not exist is a typo, not a reason to download
        folder = None
    if folder is not None and split in entry.splits and (folder / _FOLDERS.get(name, name)).is_dir():
        return loader(folder, split)
    return _from_hub(name, split, folder)


@dataclass(frozen=True)
class HubSource:
    """Where the Hugging Face Hub holds a catalog dataset.

    Attributes:
        path, config: what ``datasets.load_dataset`` takes.
        splits: the splits it has.
        revision: for datasets published with a loading script, their parquet conversion
            (``refs/convert/parquet``), which ``datasets`` 4 and later can read.
    """

    path: str
    config: str | None
    splits: tuple[str, ...]
    revision: str | None = None


HUB_SOURCES = {
    "sst2": HubSource("nyu-mll/glue", "sst2", ("train", "validation")),
    "imdb": HubSource("stanfordnlp/imdb", None, ("train", "test")),
    "ag_news": HubSource("fancyzhx/ag_news", None, ("train", "test")),
    "reuters": HubSource("ucirvine/reuters21578", "ModApte", ("train", "test"), "refs/convert/parquet"),
    "trec": HubSource("CogComp/trec", None, ("train", "test"), "refs/convert/parquet"),
    "trec_fine": HubSource("CogComp/trec", None, ("train", "test"), "refs/convert/parquet"),
}
_FOLDERS = {"trec_fine": "trec"}  # the data folder's subfolder of each dataset, where it is not the name


def _from_hub(name: str, split: str, folder: Path | None) -> pd.DataFrame:
    source = HUB_SOURCES[name]
    where = f"{folder / _FOLDERS.get(name, name)}" if folder is not None else f"a data folder (${DATA_ENV_VAR})"
    try:
        import datasets  # deferred: only machines without the data folder need it, and it takes seconds to import

        splits = ("train", "test") if name == "reuters" else (split,)  # Reuters' R90 topics need both splits
        loaded = {
            s: datasets.load_dataset(source.path, source.config, split=s, revision=source.revision) for s in splits
        }
    except Exception as exc:  # offline, HF_HUB_OFFLINE=1, a proxy, or the Hub refused: one line, the two ways out
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"dataset {name!r} ({split}) is not in {where}, and the Hugging Face Hub copy "
            f"{source.path}{'/' + source.config if source.config else ''} could not be loaded ({reason}). "
            f"Either put the files in a data folder and set {DATA_ENV_VAR} to it (its README lists them), "
            "or connect to the internet once so that `datasets` can cache it."
        ) from None
    try:
        return hub_frame(name, split, loaded)
    except (KeyError, ValueError, TypeError) as exc:  # the Hub copy's columns are not what this version expects
        raise DataError(
            f"dataset {name!r}: the Hugging Face Hub copy {source.path} is laid out differently than "
            f"expected ({type(exc).__name__}: {exc}). Use a data folder ({DATA_ENV_VAR})."
        ) from None


def available_splits(name: str) -> tuple[str, ...]:
    """The splits :func:`load_split` can give for ``name``: the data folder's and the Hugging Face Hub's."""
    entry, _ = _lookup(name)
    return tuple(dict.fromkeys(entry.splits + HUB_SOURCES[name].splits))


def hub_frame(name: str, split: str, loaded: dict) -> pd.DataFrame:
    """The catalog frame of a split from the Hub's version of a dataset (``datasets.Dataset`` objects by split).

    Maps each Hub layout to what the data folder's loader returns: ``text``, ``label`` (class names, a list of
    them for Reuters) and the extra columns the Hub version has.
    """
    data = loaded[split]

    def names(column: str):
        return data.features[column].int2str

    if name == "sst2":
        return pd.DataFrame(
            {"text": [t.strip() for t in data["sentence"]], "label": [_SENTIMENT_NAMES[i] for i in data["label"]]}
        )
    if name == "imdb":
        return pd.DataFrame({"text": data["text"], "label": [_SENTIMENT_NAMES[i] for i in data["label"]]})
    if name == "ag_news":
        return pd.DataFrame({"text": [_clean_ag_news(t) for t in data["text"]], "label": names("label")(data["label"])})
    if name in ("trec", "trec_fine"):
        coarse, fine = names("coarse_label")(data["coarse_label"]), names("fine_label")(data["fine_label"])
        if name == "trec":
            return pd.DataFrame({"text": data["text"], "label": coarse, "label_fine": fine})
        return pd.DataFrame({"text": data["text"], "label": fine, "label_coarse": coarse})
    if name == "reuters":
        topics = {s: [list(dict.fromkeys(t)) for t in loaded[s]["topics"]] for s in ("train", "test")}
        r90 = {t for doc in topics["train"] for t in doc} & {t for doc in topics["test"] for t in doc}
        rows = []
        for title, body, doc_topics, new_id in zip(
            data["title"], data["text"], topics[split], data["new_id"], strict=True
        ):
            labels = [t for t in doc_topics if t in r90]
            number = int(str(new_id).strip('"'))  # the Hub copy keeps the SGML attribute's quotes: "\"7001\""
            if labels and number not in _REUTERS_NOT_IN_APTEMOD:
                text = html.unescape(f"{(title or '').strip()}\n{(body or '').strip()}").strip()  # &lt; as the SGML has
                rows.append({"text": text, "label": labels, "id": number})
        return pd.DataFrame(rows, columns=["text", "label", "id"])
    raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(HUB_SOURCES)}")


def split_sizes(name: str, root: str | Path | None = None) -> dict[str, int]:
    """Count the rows of every split of a named dataset.

    Args:
        name: A dataset name from :func:`list_datasets`.
        root: The data folder; None finds it with :func:`data_root`.

    Returns:
        ``{split: number of rows}`` in the entry's split order.

    Example::

        split_sizes("sst2")             # {'train': 67349, 'validation': 872}
    """
    entry, _ = _lookup(name)
    return {split: len(load_split(name, split, root)) for split in entry.splits}


def _lookup(name: str) -> tuple[CatalogEntry, Callable[[Path, str], pd.DataFrame]]:
    if name not in _CATALOG:
        raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(_CATALOG)}")
    return _CATALOG[name]


def _require(path: Path) -> Path:
    if not path.is_file():
        raise DataError(f"missing data file {path}; check the data folder against its README.md")
    return path


def _read_tsv(path: Path) -> pd.DataFrame:
    # QUOTE_NONE: sentences contain bare quote characters; keep_default_na=False: a text such as
    # "null" or "NA" must stay a string, not become NaN.
    return pd.read_csv(
        _require(path), sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False, encoding="utf-8"
    )


# --- SST-2 -------------------------------------------------------------------------------------

_SENTIMENT_NAMES = {0: "negative", 1: "positive"}
_SST2_FILES = {"train": "train.tsv", "validation": "dev.tsv"}


def _load_sst2(root: Path, split: str) -> pd.DataFrame:
    raw = _read_tsv(root / "sst2" / _SST2_FILES[split])
    # GLUE leaves a space before the tab on nearly every line.
    return pd.DataFrame({"text": raw["sentence"].str.strip(), "label": raw["label"].astype(int).map(_SENTIMENT_NAMES)})


# --- IMDB --------------------------------------------------------------------------------------


def _load_imdb(root: Path, split: str) -> pd.DataFrame:
    raw = pd.read_csv(
        _require(root / "imdb" / f"{split}.csv.gz"), dtype={"text": str, "id": str}, keep_default_na=False
    )
    return pd.DataFrame(
        {"text": raw["text"], "label": raw["label"].map(_SENTIMENT_NAMES), "id": raw["id"], "rating": raw["rating"]}
    )


# --- AG News -----------------------------------------------------------------------------------

# The AG corpus dropped the "&" of numeric entities and left a space in its place: "Wall Street #39;s".
_AG_ENTITY = re.compile(r" ?#(\d+);")
_AG_SPACES = re.compile(r" {2,}")


def _clean_ag_news(text: str) -> str:
    # In this copy a line break is a bare backslash ("social\network"), not a literal "\n": replacing
    # "\n" would eat the first letter of words such as "network". "\$" is an escaped dollar ("US\$").
    text = text.replace("\\$", "$")
    text = re.sub(r"\\+", " ", text)
    text = _AG_ENTITY.sub(lambda m: html.unescape(f"&#{m.group(1)};"), text)
    text = html.unescape(text)  # &lt;TXN.N&gt; -> <TXN.N>
    return _AG_SPACES.sub(" ", text).strip()


def _load_ag_news(root: Path, split: str) -> pd.DataFrame:
    folder = root / "ag_news"
    classes = _require(folder / "classes.txt").read_text(encoding="utf-8").split("\n")
    names = {index: name.strip() for index, name in enumerate(classes, start=1) if name.strip()}
    raw = pd.read_csv(
        _require(folder / f"{split}.csv"),
        header=None,
        names=["class_index", "title", "description"],
        dtype={"title": str, "description": str},
        keep_default_na=False,
    )
    text = [
        _clean_ag_news(f"{title}. {description}")
        for title, description in zip(raw["title"], raw["description"], strict=True)
    ]
    return pd.DataFrame({"text": text, "label": raw["class_index"].astype(int).map(names)})


# --- Reuters-21578 -----------------------------------------------------------------------------

_REUTERS_DOC = re.compile(r"<REUTERS([^>]*)>(.*?)</REUTERS>", re.S)
_REUTERS_ATTR = re.compile(r'(\w+)="([^"]*)"')
_REUTERS_SPLITS = {"TRAIN": "train", "TEST": "test"}

# NLTK's ApteMod copy (7,769 train docs) lacks NEWID 1199, a one-line "trade" brief, which the ModApte
# rule keeps (7,770). It is the only ModApte document whose <REUTERS> tag has the extra CSECS
# attribute, so the ApteMod converter most likely skipped it; dropping it makes our split the one
# that published R90 results use. Inferred from NLTK's per-category counts (trade: 485 docs, not 486).
_REUTERS_NOT_IN_APTEMOD = frozenset({1199})


def _tag(name: str, block: str) -> str | None:
    found = re.search(rf"<{name}[^>]*>(.*?)</{name}>", block, re.S)
    return found.group(1) if found else None


@functools.lru_cache(maxsize=4)
def _reuters_modapte(root: str) -> tuple[tuple[dict, ...], tuple[str, ...]]:
    # Parsing the 22 files takes about a second; every split and split_sizes() share one parse.
    paths = sorted((Path(root) / "reuters").glob("reut2-*.sgm"))
    if len(paths) != 22:
        raise DataError(f"expected 22 reut2-*.sgm files in {Path(root) / 'reuters'}, found {len(paths)}")
    docs = []
    for path in paths:
        # latin-1: reut2-017.sgm has one stray 0xFC byte; every other byte is ASCII.
        for match in _REUTERS_DOC.finditer(path.read_text(encoding="latin-1")):
            attrs = dict(_REUTERS_ATTR.findall(match.group(1)))
            split = _REUTERS_SPLITS.get(attrs["LEWISSPLIT"])
            if split is None or attrs["TOPICS"] != "YES" or int(attrs["NEWID"]) in _REUTERS_NOT_IN_APTEMOD:
                continue
            block = match.group(2)
            topics = list(dict.fromkeys(re.findall(r"<D>(.*?)</D>", _tag("TOPICS", block) or "")))  # dedupe, keep order
            title, body = _tag("TITLE", block), _tag("BODY", block)
            if title is None and body is None:
                # TYPE="UNPROC" stories have neither tag: their whole <TEXT> is the story.
                text = re.sub(r"<[^>]+>", "", _tag("TEXT", block) or "")
            else:
                text = f"{(title or '').strip()}\n{(body or '').strip()}"
            # html.unescape turns &lt; into < and drops the control-character references (&#2; &#3; ...).
            docs.append(
                {"split": split, "id": int(attrs["NEWID"]), "text": html.unescape(text).strip(), "topics": topics}
            )
    in_train = {t for doc in docs if doc["split"] == "train" for t in doc["topics"]}
    in_test = {t for doc in docs if doc["split"] == "test" for t in doc["topics"]}
    categories = tuple(sorted(in_train & in_test))  # R90: at least one train and one test document
    kept = []
    for doc in docs:
        labels = [t for t in doc["topics"] if t in in_train and t in in_test]
        if labels:
            kept.append({**doc, "topics": labels})
    return tuple(kept), categories


def _load_reuters(root: Path, split: str) -> pd.DataFrame:
    docs, _ = _reuters_modapte(str(root))
    rows = [doc for doc in docs if doc["split"] == split]
    # Fresh lists per call, so a caller editing labels cannot change the cached parse.
    return pd.DataFrame(
        {"text": [d["text"] for d in rows], "label": [list(d["topics"]) for d in rows], "id": [d["id"] for d in rows]}
    )


# --- TREC --------------------------------------------------------------------------------------


def _load_trec(root: Path, split: str) -> pd.DataFrame:
    raw = _read_tsv(root / "trec" / f"{split}.tsv")
    return pd.DataFrame({"text": raw["text"], "label": raw["label"], "label_fine": raw["label_fine"]})


def _load_trec_fine(root: Path, split: str) -> pd.DataFrame:
    raw = _read_tsv(root / "trec" / f"{split}.tsv")
    return pd.DataFrame({"text": raw["text"], "label": raw["label_fine"], "label_coarse": raw["label"]})


_CATALOG: dict[str, tuple[CatalogEntry, Callable[[Path, str], pd.DataFrame]]] = {
    entry.name: (entry, loader)
    for entry, loader in [
        (
            CatalogEntry(
                "sst2",
                "GLUE SST-2: movie review sentences, negative/positive",
                False,
                ("train", "validation"),
                ("label",),
                "the GLUE test split (1,821 sentences, sst2/test.tsv) has no labels and is not offered",
            ),
            _load_sst2,
        ),
        (
            CatalogEntry(
                "imdb",
                "IMDB Large Movie Review: full reviews, negative/positive",
                False,
                ("train", "test"),
                ("label",),
                "texts are raw and keep the <br /> line breaks",
            ),
            _load_imdb,
        ),
        (
            CatalogEntry(
                "ag_news",
                "AG News: news title + description, 4 topics",
                False,
                ("test",),
                ("label",),
                "the 120,000-row train split is absent from the data folder; only the 7,600-row test split exists, "
                "so carve train/validation out of test for small experiments",
            ),
            _load_ag_news,
        ),
        (
            CatalogEntry(
                "reuters",
                "Reuters-21578 ModApte, the 90 topics with train and test documents",
                True,
                ("train", "test"),
                ("label",),
                "R90 ApteMod as in NLTK: documents with no R90 topic are dropped (7,769 train / 3,019 test)",
            ),
            _load_reuters,
        ),
        (
            CatalogEntry(
                "trec",
                "TREC question classification, 6 coarse classes",
                False,
                ("train", "test"),
                ("label", "label_fine"),
            ),
            _load_trec,
        ),
        (
            CatalogEntry(
                "trec_fine",
                "TREC question classification, 50 fine classes such as 'HUM:ind'",
                False,
                ("train", "test"),
                ("label", "label_coarse"),
                "the test split has only 42 of the 50 fine classes",
            ),
            _load_trec_fine,
        ),
    ]
}
