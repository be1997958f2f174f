"""Tests for workbench.catalog against the real benchmark files in the shared data folder.

The expected counts are the ones that shared/data/README.md documents. Tests that need the real
data ask for conftest's `data_folder` fixture, which skips without the folder and fails under CI=1; the
WORKBENCH_DATA tests build a tiny fake folder.
"""

import pytest
from conftest import missing_prerequisite

from workbench.catalog import CatalogEntry, DataError, data_root, list_datasets, load_split, split_sizes


@pytest.mark.parametrize(
    ("name", "sizes"),
    [
        ("sst2", {"train": 67_349, "validation": 872}),
        ("imdb", {"train": 25_000, "test": 25_000}),
        ("ag_news", {"test": 7_600}),
        ("reuters", {"train": 7_769, "test": 3_019}),
        ("trec", {"train": 5_452, "test": 500}),
        ("trec_fine", {"train": 5_452, "test": 500}),
    ],
)
def test_split_sizes_match_the_data_readme(data_folder, name, sizes):
    assert split_sizes(name, data_folder) == sizes


def test_every_entry_loads_text_and_label_columns(data_folder):
    for entry in list_datasets():
        assert isinstance(entry, CatalogEntry)
        frame = load_split(entry.name, entry.splits[-1], data_folder)
        assert list(frame.columns[:2]) == ["text", "label"]
        assert set(entry.label_columns) <= set(frame.columns)
        assert isinstance(frame["text"].iloc[0], str) and frame["text"].str.len().min() > 0
        assert isinstance(frame["label"].iloc[0], list if entry.multi_label else str)


def test_sentiment_labels_are_names_with_readme_counts(data_folder):
    counts = load_split("sst2", "validation", data_folder)["label"].value_counts().to_dict()
    assert counts == {"positive": 444, "negative": 428}
    assert not load_split("sst2", "train", data_folder)["text"].str.endswith(" ").any()
    imdb = load_split("imdb", "test", data_folder)
    assert imdb["label"].value_counts().to_dict() == {"negative": 12_500, "positive": 12_500}
    assert imdb["text"].str.contains("<br />", regex=False).any()  # raw text, cleaned elsewhere


def test_reuters_has_90_categories_and_modapte_counts(data_folder):
    train, test = load_split("reuters", "train", data_folder), load_split("reuters", "test", data_folder)
    train_labels = {label for labels in train["label"] for label in labels}
    assert len(train_labels) == 90
    assert {label for labels in test["label"] for label in labels} == train_labels
    assert all(labels and len(labels) == len(set(labels)) for labels in train["label"])
    earn = sum("earn" in labels for labels in train["label"])
    assert earn == 2_877
    first = train.iloc[0]
    assert first["id"] == 1 and first["label"] == ["cocoa"] and first["text"].startswith("BAHIA COCOA REVIEW\nShowers")
    assert not train["text"].str.contains("&#", regex=False).any()
    assert not train["text"].str.contains("\x03", regex=False).any()


def test_ag_news_has_four_balanced_classes_and_no_escapes(data_folder):
    frame = load_split("ag_news", "test", data_folder)
    assert frame["label"].value_counts().to_dict() == {
        "World": 1_900,
        "Sports": 1_900,
        "Business": 1_900,
        "Sci/Tech": 1_900,
    }
    for leftover in ("#39;", "#36;", "\\n", "\\"):
        assert not frame["text"].str.contains(leftover, regex=False).any(), leftover
    assert "A second team of rocketeers competing for the $10 million" in frame["text"].iloc[1]
    assert any("train" in entry.note and "absent" in entry.note for entry in list_datasets() if entry.name == "ag_news")


def test_trec_coarse_and_fine_entries(data_folder):
    coarse = load_split("trec", "train", data_folder)
    assert coarse["label"].nunique() == 6 and coarse["label_fine"].nunique() == 50
    fine = load_split("trec_fine", "test", data_folder)
    assert fine["label"].nunique() == 42 and (fine["label"].str.split(":").str[0] == fine["label_coarse"]).all()


def test_unknown_dataset_names_the_valid_ones():
    with pytest.raises(DataError, match="sst2.*reuters.*trec_fine"):
        load_split("sst-2", "train")


def test_unknown_split_names_the_valid_ones(data_folder):
    with pytest.raises(DataError, match="train, validation"):
        load_split("sst2", "test", data_folder)
    with pytest.raises(DataError, match="valid splits: train, validation"):
        load_split("sst2", "unsupervised", data_folder)


def _fake_trec(folder):
    (folder / "trec").mkdir(parents=True)
    rows = 'text\tlabel\tlabel_fine\nWho wrote "Hamlet" ?\tHUM\tHUM:ind\nWhat is NA ?\tDESC\tDESC:def\n'
    (folder / "trec" / "train.tsv").write_text(rows, encoding="utf-8")


def test_workbench_data_env_var_overrides_the_default(monkeypatch, tmp_path):
    _fake_trec(tmp_path)
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path))
    assert data_root() == tmp_path.resolve()
    frame = load_split("trec", "train")
    assert frame["text"].tolist() == ['Who wrote "Hamlet" ?', "What is NA ?"]
    assert frame["label"].tolist() == ["HUM", "DESC"]


def test_explicit_root_beats_env_and_missing_folders_raise(monkeypatch, tmp_path):
    _fake_trec(tmp_path / "explicit")
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path / "nowhere"))
    assert len(load_split("trec", "train", root=tmp_path / "explicit")) == 2
    with pytest.raises(DataError, match="WORKBENCH_DATA"):
        data_root()
    with pytest.raises(DataError, match="missing data file"):
        load_split("trec", "test", root=tmp_path / "explicit")


@pytest.mark.parametrize(
    ("ci", "outcome"),
    [
        ("1", pytest.fail.Exception),
        ("true", pytest.fail.Exception),
        (None, pytest.skip.Exception),
        ("", pytest.skip.Exception),
    ],
)
def test_a_missing_prerequisite_fails_under_ci_and_skips_elsewhere(monkeypatch, ci, outcome):
    """conftest's one rule for the data folder (`data_folder`), Chromium and PostgreSQL: CI installs all three."""
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises((pytest.fail.Exception, pytest.skip.Exception)) as stopped:  # a skip must not skip this test
        missing_prerequisite("the benchmark data folder is missing: set WORKBENCH_DATA")
    assert stopped.type is outcome
    stopped.match("^the benchmark data folder is missing: set WORKBENCH_DATA")


def _reuters_hub_split(titles, bodies, topics, ids):
    """A split with the Hub Reuters-21578 (ucirvine/reuters21578) schema."""
    from datasets import Dataset, Features, Sequence, Value

    return Dataset.from_dict(
        {"title": titles, "text": bodies, "topics": topics, "new_id": ids},
        Features(
            {
                "title": Value("string"),
                "text": Value("string"),
                "topics": Sequence(Value("string")),
                "new_id": Value("string"),
            }
        ),
    )


def _hub_like(tmp_path) -> dict:
    """Small datasets with the Hub versions' schemas, built here and saved to disk (the Hub is not reachable)."""
    import datasets
    from datasets import ClassLabel, Dataset, Features, Value

    built = {
        "nyu-mll/glue": {
            "train": Dataset.from_dict(
                {"sentence": ["a gripping film ", "dull "], "label": [1, 0], "idx": [0, 1]},
                Features(
                    {
                        "sentence": Value("string"),
                        "label": ClassLabel(names=["negative", "positive"]),
                        "idx": Value("int32"),
                    }
                ),
            )
        },
        "fancyzhx/ag_news": {
            "train": Dataset.from_dict(
                {"text": ["Stocks rise #39;s gains", "Team wins\\final"], "label": [2, 1]},
                Features(
                    {"text": Value("string"), "label": ClassLabel(names=["World", "Sports", "Business", "Sci/Tech"])}
                ),
            )
        },
        "CogComp/trec": {
            "test": Dataset.from_dict(
                {"text": ["Who wrote Hamlet ?"], "coarse_label": [3], "fine_label": [1]},
                Features(
                    {
                        "text": Value("string"),
                        "coarse_label": ClassLabel(names=["ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"]),
                        "fine_label": ClassLabel(names=["HUM:gr", "HUM:ind", "HUM:title", "HUM:desc"]),
                    }
                ),
            )
        },
        "ucirvine/reuters21578": {
            split: _reuters_hub_split(titles, bodies, topics, ids)
            for split, titles, bodies, topics, ids in (
                (
                    "train",
                    ["GRAIN", "TRADE BRIEF", "RARE"],
                    ["wheat up", "a brief", "only in train"],
                    [["grain", "wheat"], ["trade"], ["rare"]],
                    ["1", "1199", "3"],
                ),
                ("test", ["WHEAT", "NONE"], ["wheat down", "no topic"], [["wheat", "wheat"], []], ["5", "6"]),
            )
        },
    }
    saved = {}
    for path, splits in built.items():
        for split, dataset in splits.items():
            folder = tmp_path / path.replace("/", "__") / split
            dataset.save_to_disk(str(folder))
            saved[(path, split)] = folder
    return {key: datasets.load_from_disk(str(folder)) for key, folder in saved.items()}


def test_hub_versions_map_to_the_catalog_frames(tmp_path):
    from workbench.catalog import hub_frame

    hub = _hub_like(tmp_path)
    sst2 = hub_frame("sst2", "train", {"train": hub[("nyu-mll/glue", "train")]})
    assert sst2.to_dict("list") == {"text": ["a gripping film", "dull"], "label": ["positive", "negative"]}
    ag = hub_frame("ag_news", "train", {"train": hub[("fancyzhx/ag_news", "train")]})
    assert ag.to_dict("list") == {"text": ["Stocks rise's gains", "Team wins final"], "label": ["Business", "Sports"]}
    trec = hub_frame("trec", "test", {"test": hub[("CogComp/trec", "test")]})
    assert trec.to_dict("list") == {"text": ["Who wrote Hamlet ?"], "label": ["HUM"], "label_fine": ["HUM:ind"]}
    fine = hub_frame("trec_fine", "test", {"test": hub[("CogComp/trec", "test")]})
    assert fine["label"].tolist() == ["HUM:ind"] and fine["label_coarse"].tolist() == ["HUM"]
    reuters = {s: hub[("ucirvine/reuters21578", s)] for s in ("train", "test")}
    train = hub_frame("reuters", "train", reuters)
    # R90: topics with a train and a test document (wheat only); NEWID 1199 is not in ApteMod (see the local loader)
    assert train.to_dict("list") == {"text": ["GRAIN\nwheat up"], "label": [["wheat"]], "id": [1]}
    assert hub_frame("reuters", "test", reuters)["label"].tolist() == [
        ["wheat"]
    ]  # duplicates dropped, no-topic dropped


def test_a_dataset_missing_from_the_data_folder_comes_from_the_hub(tmp_path, monkeypatch):
    import datasets

    hub = _hub_like(tmp_path)
    calls = []

    def from_saved(path, config, split, revision):  # what the Hub would send, from the datasets saved above
        calls.append((path, config, split, revision))
        return hub[(path, split)]

    monkeypatch.setattr(datasets, "load_dataset", from_saved)
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path / "data"))  # a data folder without sst2/
    assert load_split("sst2", "train")["label"].tolist() == ["positive", "negative"]
    assert calls == [("nyu-mll/glue", "sst2", "train", None)]
    load_split("trec", "test")
    assert calls[-1] == ("CogComp/trec", None, "test", "refs/convert/parquet")


def test_offline_without_the_files_says_which_dataset_and_the_two_ways(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path))
    with pytest.raises(DataError) as error:
        load_split("imdb", "train")
    message = str(error.value)
    assert len(message.splitlines()) == 1 and f"dataset 'imdb' (train) is not in {tmp_path / 'imdb'}" in message
    assert "stanfordnlp/imdb could not be loaded" in message
    assert "set WORKBENCH_DATA to it" in message and "connect to the internet once" in message


def test_reuters_hub_ids_keep_their_quotes_and_ag_news_train_is_offered(tmp_path):

    from workbench.catalog import available_splits, hub_frame

    loaded = {
        "train": _reuters_hub_split(["A &lt;B&gt;"], ["up"], [["grain"]], ['"7001"']),
        "test": _reuters_hub_split(["C"], ["down"], [["grain"]], ['"7002"']),
    }
    frame = hub_frame("reuters", "train", loaded)
    assert frame.to_dict("list") == {"text": ["A <B>\nup"], "label": [["grain"]], "id": [7001]}
    assert available_splits("ag_news") == ("test", "train")  # the data folder's test, the Hub's 120k train
