"""Dataset exploration tables on a small file with planted duplicates, a leak and a conflict."""

import pandas as pd
import pytest

from workbench import TextDataModule, explore


def test_tables_find_duplicates_leaks_and_conflicts(tmp_path, tiny_bert):
    train = pd.DataFrame(
        {
            "text": [
                "good film",
                "Good film!",
                "bad film",
                "dull plot",
                "great cast",
                "awful mess",
                "fine acting",
                "poor script",
            ],
            "label": ["pos", "pos", "neg", "neg", "pos", "neg", "pos", "neg"],
        }
    )
    val = pd.DataFrame(
        {"text": ["good film", "bad film", "nice one", "weak end"], "label": ["pos", "pos", "pos", "neg"]}
    )
    train.to_csv(tmp_path / "train.csv", index=False)
    val.to_csv(tmp_path / "val.csv", index=False)
    dm = TextDataModule(str(tmp_path / "train.csv"), str(tmp_path / "val.csv"), model_name=tiny_bert).setup()

    labels = explore.label_table(dm)
    assert labels.set_index("label")["train"].to_dict() == {"neg": 4, "pos": 4}
    assert labels.set_index("label")["validation"].to_dict() == {"neg": 1, "pos": 3}

    duplicates = explore.duplicate_texts(dm).set_index("text")
    assert duplicates.loc["good film", "count"] == 3 and duplicates.loc["good film", "splits"] == "train+validation"
    conflicts = explore.conflicting_labels(dm)
    assert conflicts["text"].tolist() == ["bad film"] and conflicts.loc[0, "labels"] == "neg / pos"

    summary = explore.dataset_summary(dm)
    assert summary["examples"] == {"train": 8, "validation": 4}
    assert (summary["duplicated_texts"], summary["duplicated_across_splits"], summary["conflicting_labels"]) == (
        2,
        2,
        1,
    )

    lengths = explore.token_lengths(dm)
    assert len(lengths) == 8 and lengths["tokens"].min() >= 3  # [CLS] word word [SEP]
    samples = explore.sample_texts(dm, per_label=2)
    assert samples["label"].value_counts().to_dict() == {"neg": 2, "pos": 2}


def test_multi_label_counts(multilabel_file, tiny_bert):
    dm = TextDataModule(str(multilabel_file), model_name=tiny_bert, label_column="labels", multi_label=True).setup()
    table = explore.label_table(dm).set_index("label")
    assert table.loc["sports", "train"] + table.loc["sports", "validation"] == 20
    assert "|" in " ".join(explore.examples_table(dm)["label"])  # an example with two labels


def test_truncation_table_counts_what_max_length_cuts_and_the_windows_it_would_take(tokenizer):
    from workbench.text import TextProcessor

    lengths = pd.DataFrame({"label": ["long", "long", "short"], "tokens": [40, 300, 20]})
    table = explore.truncation_table(lengths, max_length=64, stride=16).set_index("label")
    assert table.loc["long", "over_share"] == 0.5 and table.loc["short", "over_share"] == 0.0
    assert table.loc["long", "median_excess_of_those_over"] == 236
    assert table.loc["long", "tokens_kept_by_truncation"] == pytest.approx((40 + 64) / 340)
    processor = TextProcessor(tokenizer=tokenizer, max_length=64, truncation="windows", stride=16)
    windows = len(processor.encode([" ".join(["word"] * 298)])[0]["windows"])  # starts 0, 46, ..., 230, then 236
    assert table.loc["long", "most_windows"] == windows == 7 and table.loc["short", "most_windows"] == 1
