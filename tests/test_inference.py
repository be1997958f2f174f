"""The inference benchmark harness on a tiny model: the table's shape, lengths, and bad requests."""

import pytest

from workbench import TextClassificationModel, plots
from workbench.errors import WorkbenchError
from workbench.inference import benchmark_inference


def test_table_covers_every_cell_and_fixed_lengths_are_exact(tiny_bert):
    model = TextClassificationModel(tiny_bert, labels=["neg", "pos"])
    texts = ["a good film", "bad", "the plot was thin but the acting was fine"]
    table = benchmark_inference(model, texts, batch_sizes=(1, 4), seq_lengths=(None, 16), warmup=1, repeats=2,
                                batches=3, echo=None)
    assert list(zip(table["seq_length"], table["batch_size"])) == [("natural", 1), ("natural", 4), (16, 1), (16, 4)]
    assert (table["p50_ms"] <= table["p95_ms"]).all() and (table["p95_ms"] <= table["p99_ms"]).all()
    assert (table["examples_per_s"] > 0).all() and (table["timed_calls"] == 6).all()
    assert table.loc[table["seq_length"] == 16, "mean_tokens"].eq(16).all()
    assert table["threads"].iloc[0] >= 1 and table["engine"].eq("torch").all()
    assert len(plots.latency_figure(table).axes) == 2


def test_bad_requests(tiny_bert):
    model = TextClassificationModel(tiny_bert, labels=["neg", "pos"])
    with pytest.raises(WorkbenchError, match="at least one text"):
        benchmark_inference(model, [])
