"""The inference benchmark harness on a tiny model: the table's shape, lengths, and bad requests; engines side
by side, a refused one as a row."""

from functools import partial
from pathlib import Path

import pandas as pd
import pytest

from workbench import TextClassificationModel, plots
from workbench.config import ENGINES
from workbench.errors import ConfigError, ParityError, WorkbenchError
from workbench.export import engine_predictor, exports_table
from workbench.inference import benchmark_inference, compare_engines


def test_table_covers_every_cell_and_fixed_lengths_are_exact(tiny_bert):
    model = TextClassificationModel(tiny_bert, labels=["neg", "pos"])
    texts = ["a good film", "bad", "the plot was thin but the acting was fine"]
    table = benchmark_inference(
        model, texts, batch_sizes=(1, 4), seq_lengths=(None, 16), warmup=1, repeats=2, batches=3, echo=None
    )
    assert list(zip(table["seq_length"], table["batch_size"], strict=True)) == [
        ("natural", 1),
        ("natural", 4),
        (16, 1),
        (16, 4),
    ]
    assert (table["p50_ms"] <= table["p95_ms"]).all() and (table["p95_ms"] <= table["p99_ms"]).all()
    assert (table["examples_per_s"] > 0).all() and (table["timed_calls"] == 6).all()
    assert table.loc[table["seq_length"] == 16, "mean_tokens"].eq(16).all()
    assert table["threads"].iloc[0] >= 1 and table["engine"].eq("torch").all()
    assert len(plots.latency_figure(table).axes) == 2


def test_bad_requests(tiny_bert):
    model = TextClassificationModel(tiny_bert, labels=["neg", "pos"])
    with pytest.raises(WorkbenchError, match="at least one text"):
        benchmark_inference(model, [])


def _val(tiny_run) -> tuple[list[str], list[int]]:
    val = pd.read_csv(Path(tiny_run).parent.parent.parent / "val.csv")
    return val["text"].tolist(), (val["label"] == "pos").astype(int).tolist()


def test_compare_engines_measures_every_engine_on_the_same_texts(tiny_run):
    texts, labels = _val(tiny_run)
    engines = ["torch", "onnx", "onnx-int8", "pt2"]
    summary, latency = compare_engines(
        partial(engine_predictor, tiny_run), engines, texts, labels, batch_sizes=(1, 4), repeats=2, batches=3, echo=None
    )
    assert list(summary["engine"]) == engines and sorted(set(latency["engine"])) == sorted(engines)
    assert (summary["status"] == "ok").all() and (summary["reason"] == "").all()
    assert summary["speedup_b1"].iloc[0] == 1.0 and (summary["speedup_b4"] > 0).all()
    assert (summary["agreement_with_torch"] == 1.0).all() and summary["accuracy"].nunique() == 1
    assert summary.set_index("engine").loc["onnx-int8", "size_mb"] < summary.set_index("engine").loc["torch", "size_mb"]
    assert (summary["peak_rss_added_mb"] >= 0).all() and set(ENGINES) >= set(summary["engine"])
    table = exports_table(tiny_run)
    assert {"onnx", "onnx-int8", "pt2"} <= set(table["engine"]) and (table["agreement"] == 1.0).all()


def test_a_refused_engine_is_a_row_with_its_reason_and_is_not_timed(tiny_run):
    def predictor_of(engine, threads=None):  # the export of torch-int8 breaks parity; the others load
        if engine == "torch-int8":
            raise ParityError("refused", engine=engine, reason="it agrees on 50.0% of predictions", parity={})
        return engine_predictor(tiny_run, engine, threads=threads, echo=None)

    texts, labels = _val(tiny_run)
    summary, latency = compare_engines(
        predictor_of, ["torch", "torch-int8", "onnx"], texts, labels, batch_sizes=(1,), repeats=1, batches=2, echo=None
    )
    rows = summary.set_index("engine")
    assert list(summary["status"]) == ["ok", "refused", "ok"] and sorted(set(latency["engine"])) == ["onnx", "torch"]
    assert rows.loc["torch-int8", "reason"] == "it agrees on 50.0% of predictions"
    assert pd.isna(rows.loc["torch-int8", "speedup_b1"]) and pd.isna(rows.loc["torch-int8", "accuracy"])
    assert rows.loc["onnx", "agreement_with_torch"] == 1.0 and rows.loc["onnx", "speedup_b1"] > 0
    with pytest.raises(ConfigError, match="engine tensorrt: choose from torch, pt2"):
        compare_engines(predictor_of, ["torch", "tensorrt"], texts, labels)
