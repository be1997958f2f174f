"""Reading, checking, cleaning, tokenizing and batching data."""

import json
import re

import numpy as np
import pandas as pd
import pytest

from workbench.config import DataConfig
from workbench.data import TextDataModule
from workbench.datafiles import read_table
from workbench.errors import ConfigError, DataError
from workbench.sampler import LengthBucketedBatchSampler
from workbench.store import encode_cached
from workbench.text import TextProcessor


def write(path, text, mode="w"):
    path.write_text(text) if mode == "w" else path.write_bytes(text)
    return path


# -- formats --------------------------------------------------------------------------------------


def test_reads_every_format_with_row_numbers(tmp_path):
    frame = pd.DataFrame({"text": ["a b", "c d"], "label": ["x", "y"]})
    frame.to_csv(tmp_path / "f.csv", index=False)
    frame.to_csv(tmp_path / "f.tsv", index=False, sep="\t")
    frame.to_json(tmp_path / "f.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "f.parquet")
    for name in ("f.csv", "f.tsv", "f.jsonl", "f.parquet"):
        read = read_table(tmp_path / name)
        assert read["text"].tolist() == ["a b", "c d"], name
    assert read_table(tmp_path / "f.csv")["_row"].tolist() == [2, 3]  # line numbers after the header
    assert read_table(tmp_path / "f.jsonl")["_row"].tolist() == [1, 2]


def test_text_pairs_get_segment_ids(tmp_path, tiny_bert):
    pd.DataFrame(
        {
            "premise": ["a man sleeps", "a dog runs"] * 10,
            "hypothesis": ["he rests", "it sits"] * 10,
            "label": ["yes", "no"] * 10,
        }
    ).to_csv(tmp_path / "pairs.csv", index=False)
    dm = TextDataModule(
        train_file=str(tmp_path / "pairs.csv"),
        model_name=tiny_bert,
        text_column="premise",
        text_pair_column="hypothesis",
    ).setup()
    feature = dm.train_dataset[0]
    assert set(feature["token_type_ids"]) == {0, 1}
    assert feature["input_ids"].count(dm.tokenizer.sep_token_id) == 2


@pytest.mark.parametrize("cell_column", ["delimited", "json", "list"])
def test_multi_label_cells(tmp_path, tiny_bert, cell_column):
    labels = [["earn"], ["acq", "earn"], ["crude"], ["acq"]] * 5
    frame = pd.DataFrame({"text": [f"story {i}" for i in range(20)]})
    if cell_column == "delimited":
        frame["label"] = ["|".join(names) for names in labels]
        path = tmp_path / "ml.csv"
        frame.to_csv(path, index=False)
    elif cell_column == "json":
        frame["label"] = [json.dumps(names) for names in labels]
        path = tmp_path / "ml.csv"
        frame.to_csv(path, index=False)
    else:
        frame["label"] = labels
        path = tmp_path / "ml.jsonl"
        frame.to_json(path, orient="records", lines=True)
    dm = TextDataModule(train_file=str(path), model_name=tiny_bert, multi_label=True).setup()
    assert dm.label_names == ["acq", "crude", "earn"]
    assert all(sum(f["labels"]) >= 1 for f in dm.train_dataset.features)


# -- bad input ------------------------------------------------------------------------------------

# (case id, the training file t.csv (bytes are written as they are), TextDataModule options, what the error says)
BAD_TRAINING_FILES = [
    (
        "missing column",
        "review,label\ngood,1\nbad,0\n",
        {},
        r"t.csv has no column 'text'. Its columns are: review, label.*data.text_column",
    ),
    ("wrong delimiter", "text\tlabel\ngood film\t1\nbad film\t0\n", {}, "delimiter looks wrong"),
    (
        "empty and NaN text",
        "text,label\ngood,1\n,0\n   ,1\nfine,0\n",
        {},
        r"2 row\(s\) have empty or missing text in column 'text' \(rows 3, 4\)",
    ),
    ("missing label", "text,label\ngood,1\nbad,\nok,1\nmeh,0\n", {}, r"have no label in column 'label' \(rows 3\)"),
    (
        "unparseable multi-label cell",
        'text,label\ngood,"[""a"", ""b"""\nbad,a\n',
        {"multi_label": True},
        r"t.csv row 2: the labels .* look like a JSON list but do not parse",
    ),
    (
        "not UTF-8",
        "text,label\ngood,1\ncaf\xe9 bad,0\n".encode("latin-1"),
        {},
        r"t.csv is not UTF-8: byte 0xe9 on line 3.*iconv",
    ),
]


@pytest.mark.parametrize("case, content, options, expected", BAD_TRAINING_FILES, ids=[c[0] for c in BAD_TRAINING_FILES])
def test_bad_training_file_names_file_rows_and_fix(case, content, options, expected, tmp_path, tiny_bert):
    path = write(tmp_path / "t.csv", content, mode="wb" if isinstance(content, bytes) else "w")
    with pytest.raises(DataError, match=expected):
        TextDataModule(train_file=str(path), model_name=tiny_bert, **options).setup()


def test_unknown_label_in_validation(tmp_path, tiny_bert):
    train = write(tmp_path / "train.csv", "text,label\ngood,pos\nbad,neg\nfine,pos\nawful,neg\n")
    val = write(tmp_path / "val.csv", "text,label\ngood,pos\nso-so,neutral\n")
    with pytest.raises(DataError, match=r"val.csv: 1 label\(s\) are not among the 2 labels.*'neutral' \(row 3\)"):
        TextDataModule(train_file=str(train), val_file=str(val), model_name=tiny_bert).setup()


# (case id, file name, its content or None for no file, what read_table's error says)
UNREADABLE_TABLES = [
    ("empty", "e.csv", "", "is empty"),
    ("header only", "h.csv", "text,label\n", "has a header but no rows"),
    ("missing", "missing.csv", None, "does not exist"),
    ("unknown format", "x.xlsx", "a", "unknown format '.xlsx'"),
    (
        "malformed CSV",
        "t.csv",
        'text,label\ngood,1\n"unclosed,0\nbad,1,extra,fields\n',
        r"t.csv could not be parsed as CSV",
    ),
]


@pytest.mark.parametrize("case, name, content, expected", UNREADABLE_TABLES, ids=[c[0] for c in UNREADABLE_TABLES])
def test_unreadable_table_is_named(case, name, content, expected, tmp_path):
    path = tmp_path / name if content is None else write(tmp_path / name, content)
    with pytest.raises(DataError, match=expected):
        read_table(path)


def test_unknown_option_is_a_config_error_listing_the_valid_ones(tiny_bert):
    with pytest.raises(ConfigError, match=r"TextDataModule got unknown option\(s\) batchsize. Valid: batch_size, "):
        TextDataModule(train_file="t.csv", model_name=tiny_bert, batchsize=16)


# -- splits ---------------------------------------------------------------------------------------


def test_a_single_class_is_an_error(tmp_path, tiny_bert):
    path = write(tmp_path / "t.csv", "text,label\ngood,pos\nfine,pos\nnice,pos\n")
    with pytest.raises(DataError, match=r"has only the label\(s\) \['pos'\]"):
        TextDataModule(train_file=str(path), model_name=tiny_bert, val_fraction=0.34).setup()


@pytest.mark.usefixtures("data_folder")
def test_misspelled_catalog_split_is_an_error(tiny_bert):
    with pytest.raises(DataError, match="Dataset 'trec' has no split 'tst'; it has train, test"):
        TextDataModule(dataset="trec", model_name=tiny_bert, test_split="tst").setup()


def test_subsets_too_small_to_stratify_still_split(tmp_path, tiny_bert):
    rows = [(f"text {i}", f"c{i % 5}") for i in range(12)]
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(tmp_path / "t.csv", index=False)
    dm = TextDataModule(
        train_file=str(tmp_path / "t.csv"), model_name=tiny_bert, val_fraction=0.2, train_subset=8
    ).setup()
    assert len(dm.train_dataset) == 8


def test_stratified_validation_split(tmp_path, tiny_bert):
    rows = [(f"pos text {i}", "pos") for i in range(80)] + [(f"neg text {i}", "neg") for i in range(20)]
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(tmp_path / "t.csv", index=False)
    dm = TextDataModule(train_file=str(tmp_path / "t.csv"), model_name=tiny_bert, val_fraction=0.2).setup()
    val_labels = [dm.label_names[f["labels"]] for f in dm.val_dataset.features]
    assert len(dm.val_dataset) == 20 and len(dm.train_dataset) == 80
    assert val_labels.count("neg") == 4  # 20% of each class
    assert not set(dm.val_dataset.texts) & set(dm.train_dataset.texts)


# -- cleaning and truncation ----------------------------------------------------------------------


def test_cleaning(tokenizer):
    p = TextProcessor(tokenizer=tokenizer, mask_urls=True, mask_emails=True)
    assert p.clean("Great<br /><br />film &amp; cast!\u00a0 ") == "Great film & cast!"
    assert p.clean("see https://x.org/a?b=1 or mail me@ex.com") == "see [URL] or mail [EMAIL]"
    assert p.clean("ﬁne \t\n  caf\u0065\u0301") == "fine café"  # NFKC folds the ligature and composes é


def test_truncation_strategies(tokenizer):
    words = " ".join(f"w{i}" for i in range(300))
    ids = {}
    for strategy in ("head", "tail", "head+tail"):
        p = TextProcessor(tokenizer=tokenizer, max_length=32, truncation=strategy)
        ids[strategy] = p.encode([words])[0]["input_ids"]
        assert len(ids[strategy]) == 32
        assert ids[strategy][0] == tokenizer.cls_token_id and ids[strategy][-1] == tokenizer.sep_token_id
    decode = lambda x: tokenizer.decode(x, skip_special_tokens=True)
    assert decode(ids["head"]).startswith("w0")
    assert decode(ids["tail"]).endswith("w299")
    assert decode(ids["head+tail"]).startswith("w0") and decode(ids["head+tail"]).endswith("w299")
    nearly_all_head = TextProcessor(tokenizer=tokenizer, max_length=32, truncation="head+tail", head_fraction=0.99)
    assert len(nearly_all_head.encode([words])[0]["input_ids"]) == 32  # the tail keeps at least one token


def test_windows_cover_the_whole_text_and_overlap_by_the_stride(tokenizer):
    words = " ".join(f"w{i}" for i in range(40))
    content = tokenizer(words, add_special_tokens=False)["input_ids"]
    p = TextProcessor(tokenizer=tokenizer, max_length=32, truncation="windows", stride=6)
    windows = p.encode([words])[0]["windows"]
    inner = [w[1:-1] for w in windows]  # 30 text tokens a window
    assert all(w[0] == tokenizer.cls_token_id and w[-1] == tokenizer.sep_token_id and len(w) == 32 for w in windows)
    assert inner[0] == content[:30] and inner[1] == content[24:54] and inner[-1] == content[-30:]
    assert len(windows) == len(range(0, len(content) - 30, 24)) + 1 > 2  # steps of 24, then the last 30 tokens
    assert sorted({t for w in inner for t in w}) == sorted(set(content))  # no token lost
    head = TextProcessor(tokenizer=tokenizer, max_length=32).encode(["a short text"])[0]["input_ids"]
    assert p.encode(["a short text"])[0] == {"windows": [head]}  # shorter than one window: unchanged


@pytest.mark.parametrize(
    "options, message",
    [
        ({"stride": -1}, "data.stride=-1 must be 0 or more"),
        ({"stride": 16}, "data.stride=16 must be below half of data.max_length=32"),
        ({"stride": 40}, "data.stride=40 must be below half"),
        ({"window_pooling": "median"}, "data.window_pooling='median' is not one of mean, max"),
        ({"max_windows": -2}, "data.max_windows=-2 must be 0"),
        ({"text_pair_column": "hypothesis"}, "data.truncation=windows reads single texts"),
    ],
)
def test_bad_window_settings_name_the_key(options, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        DataConfig(max_length=32, truncation="windows", **options)


def test_windowed_training_split_caps_windows_per_text_and_draws_them_by_epoch(tokenizer, tmp_path):
    long_text = " ".join(f"w{i}" for i in range(200))
    rows = [(long_text, "pos"), ("a short one", "neg"), (long_text + " end", "neg")] * 4
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(tmp_path / "train.csv", index=False)
    options = {"max_length": 32, "truncation": "windows", "stride": 8, "max_windows": 3}
    dm = TextDataModule(str(tmp_path / "train.csv"), str(tmp_path / "train.csv"), tokenizer=tokenizer, **options)
    dm.setup()
    train = dm.train_dataset
    assert len(dm.val_dataset) == 12 and "windows" in dm.val_dataset[0]  # evaluation: one item per text
    assert len(dm.val_dataset.features[0]["windows"]) > 3  # every window, however many
    assert len(train) == 4 * (3 + 1 + 3) and (np.bincount(train.documents) <= 3).all()
    assert list(train.labels) == [dm.val_dataset.labels[d] for d in train.documents]
    first = [f["input_ids"] for f in train.features]
    train.set_epoch(1)
    assert [f["input_ids"] for f in train.features] != first  # other windows in another epoch ...
    assert len(train) == 28 and (train.epoch_lengths(0) <= train.planning_lengths).all()
    assert [f["input_ids"] for f in train.features] == first  # ... and the same ones when epoch 0 comes back


def test_windowed_splits_use_the_encoded_data_cache(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    p = TextProcessor(tokenizer=tokenizer, max_length=16, truncation="windows", stride=4)
    texts = [" ".join(f"w{i}" for i in range(n % 50 + 1)) for n in range(200)]
    first = encode_cached(p, texts, min_rows=1)
    assert len(list((tmp_path / "cache" / "encoded").glob("*.arrow"))) == 1
    assert encode_cached(p, texts, min_rows=1) == first == p.encode(texts)


def test_enormous_text_is_cut_before_tokenizing(tokenizer):
    p = TextProcessor(tokenizer=tokenizer, max_length=64)
    ids = p.encode(["word " * 2_000_000])[0]["input_ids"]  # 10 MB of text
    assert len(ids) == 64


def test_process_text_rejects_empty(tokenizer):
    with pytest.raises(DataError, match="empty text"):
        TextProcessor(tokenizer=tokenizer).process_text("   ")


# -- batching -------------------------------------------------------------------------------------


def test_length_bucketed_batches_respect_budget_and_cover_everything():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 120, size=1000)
    sampler = LengthBucketedBatchSampler(lengths, max_tokens=1024, max_batch_size=64, seed=3)
    counts = set()
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        counts.add(len(batches))
        flat = sorted(i for b in batches for i in b)
        assert flat == list(range(1000))  # every example exactly once
        for b in batches:
            assert len(b) <= 64 and lengths[b].max() * len(b) <= 1024
    assert counts == {len(sampler)}  # the same number of batches every epoch
    assert sampler.padding_ratio() < 1.05  # almost no padding
    short = [b for b in batches if lengths[b].max() < 16]
    long = [b for b in batches if lengths[b].max() > 100]
    assert min(map(len, short)) > max(map(len, long))  # the token budget gives short texts bigger batches


def test_batches_are_deterministic_per_epoch_and_differ_across_epochs():
    lengths = np.full(200, 10)
    a = LengthBucketedBatchSampler(lengths, 100, 10, seed=1)
    b = LengthBucketedBatchSampler(lengths, 100, 10, seed=1)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)


def test_example_longer_than_budget_is_an_error():
    with pytest.raises(DataError, match="exceeds data.max_tokens"):
        LengthBucketedBatchSampler([10, 500], max_tokens=256, max_batch_size=8)


def test_reading_in_pieces_matches_reading_whole_and_numbers_rows(tmp_path):
    from workbench.datafiles import read_table, read_table_chunks

    rows = pd.DataFrame({"text": [f"text number {i}" for i in range(23)], "label": ["a", "b"] * 11 + ["a"]})
    for name in ("t.csv", "t.tsv", "t.jsonl", "t.parquet", "t.csv.gz"):
        path = tmp_path / name
        if name.endswith(".jsonl"):
            rows.to_json(path, orient="records", lines=True)
        elif name.endswith(".parquet"):
            rows.to_parquet(path)
        else:
            rows.to_csv(path, sep="\t" if name.endswith(".tsv") else ",", index=False)
        pieces = list(read_table_chunks(path, rows=5))
        assert [len(p) for p in pieces] == [5, 5, 5, 5, 3], name
        whole = pd.concat(pieces, ignore_index=True)
        pd.testing.assert_frame_equal(
            whole[["text", "label", "_row"]], read_table(path)[["text", "label", "_row"]], check_dtype=False
        )


def test_a_file_read_in_pieces_names_bad_bytes_and_rows(tmp_path):
    from workbench.datafiles import read_table_chunks

    path = tmp_path / "big.csv"
    lines = ["text,label"] + [f"row {i} is fine,a" for i in range(100_000)]  # 1.7 MB: the bad byte is past 1 MB
    lines[90_000] = "caf\xe9 latin-1,a"
    path.write_bytes("\n".join(lines).encode("utf-8").replace("caf\xe9".encode(), b"caf\xe9"))
    with pytest.raises(DataError, match=r"big.csv is not UTF-8: byte 0xe9 on line 90001 cannot be decoded"):
        next(read_table_chunks(path))
    (tmp_path / "header.csv").write_text("text,label\n")
    with pytest.raises(DataError, match="has a header but no rows"):
        list(read_table_chunks(tmp_path / "header.csv"))


def test_sharded_batches_differ_between_ranks_and_change_every_epoch():
    """With several processes accelerate wraps the sampler in a BatchSamplerShard; the epoch must still reach it."""
    from accelerate.data_loader import BatchSamplerShard, DataLoaderShard

    lengths = np.random.default_rng(0).integers(5, 40, size=101)
    plans = {}
    for rank in (0, 1):
        sampler = LengthBucketedBatchSampler(lengths, max_tokens=200, max_batch_size=8, seed=3, shards=2)
        loader = DataLoaderShard(
            list(range(101)), batch_sampler=BatchSamplerShard(sampler, 2, rank), collate_fn=lambda rows: rows
        )
        epochs = []
        for epoch in (0, 1):
            loader.set_epoch(epoch)
            epochs.append([list(batch) for batch in loader])
        assert sampler.epoch == 1 and epochs[0] != epochs[1]  # a new shuffle each epoch
        plans[rank] = epochs
    for epoch in (0, 1):
        mine, theirs = plans[0][epoch], plans[1][epoch]
        assert len(mine) == len(theirs)  # the same number of steps
        seen = [i for batch in mine + theirs for i in batch]
        assert sorted(seen) == list(range(101))  # every example once an epoch, on one rank or the other


def test_pieces_of_a_json_array_and_bad_piece_requests(tmp_path):
    from workbench.datafiles import read_table_chunks

    (tmp_path / "a.json").write_text(json.dumps([{"text": f"t{i}", "label": "a"} for i in range(5)]))
    assert [len(p) for p in read_table_chunks(tmp_path / "a.json", rows=2)] == [2, 2, 1]
    with pytest.raises(DataError, match="Rows per piece must be at least 1"):
        next(read_table_chunks(tmp_path / "a.json", rows=0))
    (tmp_path / "blank.csv").write_text("\n\n\n")
    with pytest.raises(DataError, match="blank.csv is empty"):
        list(read_table_chunks(tmp_path / "blank.csv"))
