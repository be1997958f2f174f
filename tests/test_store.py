"""The encoded-data cache, the memory-mapped store, and what every dataset offers (EncodedExamples)."""

import tracemalloc

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from workbench import store
from workbench.config import AugmentConfig
from workbench.data import TextDataModule
from workbench.errors import DataError
from workbench.store import EncodedExamples, StoredDataset, encode_cached, store_file
from workbench.text import TextProcessor


def test_encoded_splits_are_cached_on_disk_and_read_back(tokenizer, tmp_path, monkeypatch, caplog):
    processor = TextProcessor(tokenizer=tokenizer, max_length=16)
    texts, pairs = ["a good film", "<b>bad</b> acting", "x " * 40], ["one", "two", "three"]
    first = encode_cached(processor, texts, pairs, folder=tmp_path, min_rows=0)
    files = list(tmp_path.glob("*.arrow"))
    assert len(files) == 1 and first == processor.encode(texts, pairs)
    monkeypatch.setattr(processor, "encode", lambda *a: pytest.fail("tokenized again despite the cache"))
    assert encode_cached(processor, texts, pairs, folder=tmp_path, min_rows=0) == first  # token types too
    monkeypatch.undo()
    other = TextProcessor(tokenizer=tokenizer, max_length=8)  # other processing: another key
    assert encode_cached(other, texts, pairs, folder=tmp_path, min_rows=0) != first
    assert len(list(tmp_path.glob("*.arrow"))) == 2
    encode_cached(processor, texts[:2], folder=tmp_path, min_rows=0)  # other texts: another key
    assert len(list(tmp_path.glob("*.arrow"))) == 3
    files[0].write_bytes(b"not arrow")
    assert encode_cached(processor, texts, pairs, folder=tmp_path, min_rows=0) == first
    assert "unreadable" in caplog.text and files[0].read_bytes()[:6] == b"ARROW1"  # rewritten
    assert encode_cached(processor, texts, folder=tmp_path / "unused") == processor.encode(texts)  # small: no file
    assert not (tmp_path / "unused").exists()
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "root"))
    monkeypatch.setattr(store, "CACHE_MIN_ROWS", 0)
    rows = pd.DataFrame({"text": ["good", "bad", "fine film", "awful"], "label": ["p", "n", "p", "n"]})
    rows.to_csv(tmp_path / "t.csv", index=False)
    dm = TextDataModule(
        train_file=str(tmp_path / "t.csv"), val_file=str(tmp_path / "t.csv"), tokenizer=tokenizer
    ).setup()
    assert len(list((tmp_path / "root" / "encoded").glob("*.arrow"))) == 1  # train and validation share the texts
    assert [f["labels"] for f in dm.val_dataset.features] == [1, 0, 1, 0]


def _same_splits(memory: TextDataModule, stored: TextDataModule) -> None:
    for split in ("train_dataset", "val_dataset", "test_dataset"):
        a, b = getattr(memory, split), getattr(stored, split)
        if a is None:
            assert b is None
            continue
        assert isinstance(b, StoredDataset)
        assert list(a.rows) == list(b.rows) and list(a.texts) == list(b.texts)
        assert [a[i] for i in range(len(a))] == [b[i] for i in range(len(b))]
        assert (a.lengths == b.lengths).all() and (np.asarray(a.labels) == b.labels).all()
    assert memory.label_names == stored.label_names
    assert list(memory.train_batch_sampler()) == list(stored.train_batch_sampler())


@pytest.mark.parametrize("kind", ["single", "multi", "pairs", "numbers"])
def test_a_file_read_in_pieces_trains_on_the_same_examples(tmp_path, tiny_bert, multilabel_file, kind, monkeypatch):
    """data.stream_from_mb=0 reads every file in pieces (of 7 rows here) into a memory-mapped store: the splits,
    held-out validation, subsets, label ids and batches are exactly those of the file read into memory."""
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(store, "STORE_PIECE_ROWS", 7)
    if kind == "numbers":  # one piece reads its labels as floats (0.5), the others as integers: still one "1"
        rows = [{"text": f"text {i}", "label": 0.5 if i == 30 else i % 2} for i in range(60)]
        pd.DataFrame(rows).to_json(tmp_path / "n.jsonl", orient="records", lines=True)
        options = {"train_file": str(tmp_path / "n.jsonl")}
    elif kind == "single":
        rows = [(f"text {i} " + "good " * (i % 7), ["neg", "pos", "mid"][i % 3]) for i in range(300)]
        pd.DataFrame(rows, columns=["text", "label"]).to_csv(tmp_path / "t.csv", index=False)
        pd.DataFrame(rows[::10], columns=["text", "label"]).to_json(
            tmp_path / "test.jsonl", orient="records", lines=True
        )
        options = {
            "train_file": str(tmp_path / "t.csv"),
            "test_file": str(tmp_path / "test.jsonl"),
            "train_subset": 200,
        }
    elif kind == "multi":
        options = {"train_file": str(multilabel_file), "multi_label": True, "label_column": "labels"}
    else:
        pd.DataFrame(
            {
                "premise": [f"a man sleeps {i}" for i in range(40)],
                "hypothesis": ["he rests", "it sits"] * 20,
                "label": ["yes", "no"] * 20,
            }
        ).to_csv(tmp_path / "pairs.csv", index=False)
        options = {
            "train_file": str(tmp_path / "pairs.csv"),
            "text_column": "premise",
            "text_pair_column": "hypothesis",
        }
    memory = TextDataModule(model_name=tiny_bert, **options).setup()
    stored = TextDataModule(model_name=tiny_bert, stream_from_mb=0, **options).setup()
    _same_splits(memory, stored)
    assert len(stored.train_dataset._batches) > 3  # several pieces
    if kind == "numbers":
        assert stored.label_names == ["0", "0.5", "1"]
    if kind == "pairs":
        assert list(stored.train_dataset.pairs) == [
            memory.read_split("train").pairs[r - 2] for r in stored.train_dataset.rows
        ]


def test_a_stored_file_is_reused_remade_when_broken_and_keyed_by_content(tmp_path, tiny_bert, sentiment_files, caplog):
    dm = TextDataModule(model_name=tiny_bert, train_file=str(sentiment_files["train"]))
    settings = {"text_column": "text"}
    first = store_file(sentiment_files["train"], dm.processor, dm._labelled, settings=settings, folder=tmp_path / "s")
    stamp = first.stat().st_mtime_ns
    assert (
        store_file(sentiment_files["train"], dm.processor, dm._labelled, settings=settings, folder=tmp_path / "s")
        == first
        and first.stat().st_mtime_ns == stamp
    )  # read, not remade
    first.write_bytes(first.read_bytes()[:100])  # a store cut short (a crash, a full disk)
    again = store_file(sentiment_files["train"], dm.processor, dm._labelled, settings=settings, folder=tmp_path / "s")
    assert again == first and "unreadable" in caplog.text and len(again.read_bytes()) > 100
    with open(sentiment_files["train"], "a") as handle:
        handle.write("one more good film,pos\n")
    changed = store_file(sentiment_files["train"], dm.processor, dm._labelled, settings=settings, folder=tmp_path / "s")
    assert changed != first  # the key is the file's content, not its name
    assert (
        store_file(
            sentiment_files["train"],
            dm.processor,
            dm._labelled,
            settings={"text_column": "other"},
            folder=tmp_path / "s",
        )
        != changed
    )
    assert not list((tmp_path / "s").glob(".*.tmp"))


def test_stored_files_name_bad_rows_and_refuse_augmentation(tmp_path, tiny_bert, sentiment_files, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    train = str(sentiment_files["train"])
    (tmp_path / "v.csv").write_text("text,label\nfine,pos\nodd,meh\n" + "odd,meh\n" * 9)
    with pytest.raises(DataError, match=r"v.csv: 10 label\(s\).*'meh' \(row 3\)"):
        TextDataModule(
            model_name=tiny_bert, train_file=train, val_file=str(tmp_path / "v.csv"), stream_from_mb=0
        ).setup()
    (tmp_path / "b.csv").write_text("text,label\n" + "fine,pos\n" * 30 + ",neg\n")
    with pytest.raises(DataError, match=r"b.csv: 1 row\(s\) have empty or missing text.*rows 32"):
        TextDataModule(model_name=tiny_bert, train_file=str(tmp_path / "b.csv"), stream_from_mb=0).setup()
    assert not list((tmp_path / "cache" / "encoded").glob("*.tmp"))  # a failed encoding leaves no half file
    with pytest.raises(DataError, match="augmentation needs every training text in memory"):
        TextDataModule(
            model_name=tiny_bert, train_file=train, stream_from_mb=0, augment=AugmentConfig(ops=["swap"])
        ).setup()


def test_a_stored_split_holds_a_few_bytes_per_example(tmp_path, tokenizer, monkeypatch):
    """Memory of a stored split is its arrays of per-example numbers, not its texts or tokens (which stay in the
    mapped file): 30,000 rows as train and again as validation, labelled and planned into an epoch, hold under 3 MB
    (the rows read into memory hold over 30 MB). The peak adds a constant: the tokenizer's definition, hashed."""
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    words = "the a film good bad plot acting long short fine dull great".split()
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, 20)) for _ in range(30_000)]
    pd.DataFrame({"text": texts, "label": rng.choice(["pos", "neg"], 30_000)}).to_csv(tmp_path / "big.csv", index=False)
    options = {
        "model_name": "minilm",
        "tokenizer": tokenizer,
        "train_file": str(tmp_path / "big.csv"),
        "val_file": str(tmp_path / "big.csv"),
    }
    TextDataModule(stream_from_mb=0, **options).setup()  # encodes and stores once
    held, peaks = {}, {}
    for name, threshold in (("stored", 0), ("memory", 10_000)):
        tracemalloc.start()
        dm = TextDataModule(stream_from_mb=threshold, **options).setup()
        sum(len(b) for b in dm.train_batch_sampler())
        held[name], peaks[name] = (size / 2**20 for size in tracemalloc.get_traced_memory())
        tracemalloc.stop()
        if name == "stored":  # nor in Arrow's own memory pool, which tracemalloc does not see
            assert pa.total_allocated_bytes() < 2**20
        del dm
    assert held["stored"] < 3 < 30 < held["memory"], held
    assert peaks["stored"] < 15 < 60 < peaks["memory"], peaks


def _protocol_members() -> set[str]:
    """What EncodedExamples names: its annotated values, its methods and properties, items and length."""
    defined = {name for name in vars(EncodedExamples) if not name.startswith("_")}
    return set(EncodedExamples.__annotations__) | defined | {"__len__", "__getitem__"}


@pytest.mark.parametrize("kind", ["EncodedDataset", "StoredDataset", "AugmentedDataset"])
def test_every_dataset_offers_what_encoded_examples_names(tmp_path, tiny_bert, monkeypatch, kind):
    """Each dataset class (and a stored split's selection) names the protocol among its bases and gives each of
    its members, with values that agree with its items and with the file it came from."""
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    lines = [(" ".join([f"text {i}"] + ["good"] * (i % 5)), ["neg", "pos"][i % 2]) for i in range(40)]
    pd.DataFrame(lines, columns=["text", "label"]).to_csv(tmp_path / "t.csv", index=False)
    options = {
        "StoredDataset": {"stream_from_mb": 0},
        "EncodedDataset": {},
        "AugmentedDataset": {"augment": AugmentConfig(ops=["swap"], variants=2)},
    }[kind]
    dm = TextDataModule(train_file=str(tmp_path / "t.csv"), model_name=tiny_bert, **options).setup()
    assert type(dm.train_dataset).__name__ == kind
    datasets = [dm.train_dataset, dm.val_dataset] + ([dm.val_dataset.take([2, 0])] if kind == "StoredDataset" else [])
    assert {"features", "texts", "rows", "lengths", "labels", "epoch_lengths"} <= _protocol_members()
    for dataset in datasets:
        assert EncodedExamples in type(dataset).__mro__
        assert all(hasattr(dataset, name) for name in _protocol_members()), type(dataset)
        items = [dataset[i] for i in range(len(dataset))]
        assert len(items) > 0 and list(dataset.features) == items
        assert isinstance(dataset.lengths, np.ndarray)
        assert dataset.lengths.tolist() == [len(f["input_ids"]) for f in items]
        assert isinstance(dataset.labels, np.ndarray) and dataset.labels.tolist() == [f["labels"] for f in items]
        texts, rows, n = list(dataset.texts), [int(r) for r in dataset.rows], dataset.original_count
        assert len(texts) == len(rows) == len(items) and all(isinstance(t, str) for t in texts)
        assert isinstance(dataset.source, str) and str(tmp_path / "t.csv") in dataset.source
        originals = [(text, dm.label_names[label]) for text, label in zip(texts[:n], dataset.labels[:n], strict=True)]
        assert originals == [lines[row - 2] for row in rows[:n]]  # a CSV's rows count from 2, after the header
        if dataset is dm.train_dataset and kind == "AugmentedDataset":  # two variants of each example follow
            assert (len(items), dataset.epoch) == (3 * n, 0) and rows == rows[:n] * 3
            assert (dataset.planning_lengths == np.tile(dataset.lengths[:n], 3)).all()
            first = texts
            assert (dataset.epoch_lengths(1) == dataset.lengths).all() and dataset.epoch == 1
            assert list(dataset.texts)[:n] == first[:n] and list(dataset.texts)[n:] != first[n:]
        else:  # a split whose items never change
            assert (n, dataset.epoch) == (len(items), 0)
            assert (dataset.planning_lengths == dataset.lengths).all()
            assert (dataset.epoch_lengths(3) == dataset.lengths).all()
