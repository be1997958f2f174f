"""Exports of tiny trained models: every format round-trips with parity, bad exports are refused and leave
nothing, and the engines compare in one table."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from workbench import TextClassificationModel, export
from workbench.cli import main
from workbench.config import ENGINE_EXPORTS, ENGINES, PER_EXAMPLE_ENGINES, ParityConfig
from workbench.errors import ConfigError, ParityError, WorkbenchError
from workbench.export import engine_predictor, export_engines, export_model
from workbench.metrics import decision_margin
from workbench.runs import RunDir
from workbench.runtime import EXPORT_FORMAT, load_export

TEXTS = [
    "a good and great film",
    "terrible acting, hated it",
    "<b>Wonderful</b> acting https://x.org/y",
    "a bad " * 200 + "but a great ending",
]  # HTML, a URL, and a text far over max_length


@pytest.mark.parametrize("engine", list(ENGINE_EXPORTS))
def test_every_engine_exports_with_parity(tiny_run, tmp_path, engine):
    meta = export_model(tiny_run, tmp_path / engine, engine=engine, echo=None)
    parity = meta["parity"]
    assert parity["examples"] == 16 and parity["tokenization_matches"] == 1.0 and parity["agreement"] == 1.0
    assert parity["accuracy_export"] == parity["accuracy_torch"] and parity["accuracy_change"] == 0.0
    assert parity["margin"] == ParityConfig.margin and parity["agreement_clear"] in (1.0, None)
    assert 0 <= parity["clear_examples"] <= 16 and meta["parity_limits"]["min_agreement"] == ParityConfig.min_agreement
    if meta["quantized"]:
        assert 0 < parity["max_abs_logit_diff"] < 0.5  # int8 moves the logits a little, never a lot
    else:
        assert parity["max_abs_logit_diff"] <= export.FP32_TOLERANCE
    assert meta["format"] == EXPORT_FORMAT and meta["engine"] == engine and meta["labels"] == ["neg", "pos"]
    assert meta["run_metrics"]["validation"]["accuracy"] == parity["accuracy_torch"]
    assert {p.name for p in (tmp_path / engine).iterdir()} >= {"export.json", "tokenizer.json", meta["file"]}
    model = TextClassificationModel.from_pretrained(tiny_run)
    predictor = load_export(tmp_path / engine)
    tolerance = 0.05 if meta["quantized"] else 1e-5
    assert np.abs(predictor.predict_proba(TEXTS) - model.predict_proba(TEXTS)).max() < tolerance
    assert predictor.predict(TEXTS) == model.predict(TEXTS)


@pytest.mark.parametrize("engine", ENGINES)
def test_every_engine_answers_a_text_alike_alone_and_in_any_batch(tiny_run, tmp_path, engine):
    # A service's answer must not depend on its batch-mates. Dynamic int8 scales activations by the largest value in
    # a call, padding included, so the int8 engines run each example alone (PER_EXAMPLE_ENGINES): exactly equal. The
    # fp32 engines run the padded batch: a row's numbers do not depend on the others, but a longer padded shape can
    # change the kernels' summation order (blocking, vector tails), so they may differ by float rounding (< 1e-5).
    predictor = engine_predictor(tiny_run, engine, workdir=tmp_path, echo=None)
    texts = [*TEXTS, "ok", "the plot is thin but the acting is great and the music is better", "bad bad bad"]
    alone = np.concatenate([predictor.predict_proba([text]) for text in texts])
    for batch_size in (len(texts), 3):
        predictor.batch_size = batch_size  # one padded call with every text, then calls of three texts
        together = predictor.predict_proba(texts[::-1])[::-1]
        if engine in PER_EXAMPLE_ENGINES:
            np.testing.assert_array_equal(together, alone)
        else:
            np.testing.assert_allclose(together, alone, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["roberta", "distilbert"])
def test_fusions_fire_for_each_architecture(tiny_backbones, tiny_bert, tmp_path, kind):
    model = TextClassificationModel(tiny_backbones[kind], labels=["neg", "pos"])
    model.save_pretrained(tmp_path / "model")
    pd.DataFrame({"text": TEXTS * 2, "label": ["pos", "neg"] * 4}).to_csv(tmp_path / "rows.csv", index=False)
    meta = export_model(
        tmp_path / "model", tmp_path / "export", engine="onnx-optimized", examples=tmp_path / "rows.csv", echo=None
    )
    assert meta["fused_operators"]["Attention"] == 2 and meta["fused_operators"]["SkipLayerNormalization"] == 4
    assert meta["parity"]["max_abs_logit_diff"] <= export.FP32_TOLERANCE and meta["inputs"] == [
        "input_ids",
        "attention_mask",
    ]  # these backbones take no token types


def test_temperature_thresholds_and_multi_label_travel_with_the_export(tiny_bert, multilabel_file, tmp_path):
    from workbench import load_config, train

    config = load_config(
        None,
        {
            "data.train_file": str(multilabel_file),
            "data.text_column": "text",
            "data.label_column": "labels",
            "data.multi_label": True,
            "data.val_fraction": 0.25,
            "model.backbone": tiny_bert,
            "train.epochs": 2,
            "train.lr": 3e-3,
            "run.name": "ml",
        },
    )
    run = train(config).run_dir
    model = TextClassificationModel.from_pretrained(run)
    model.temperature, model.thresholds = 1.7, np.array([0.3, 0.5, 0.6], dtype=np.float32)
    model.save_pretrained(RunDir(run).best)
    meta = export_model(run, engine="onnx", echo=None)
    predictor = load_export(RunDir(run).export_folder("onnx"))
    assert meta["temperature"] == pytest.approx(1.7) and meta["thresholds"] == pytest.approx([0.3, 0.5, 0.6])
    texts = ["the team won the match", "stocks and profit rose and the team won the match", "the weather was mild"]
    assert np.abs(predictor.predict_proba(texts) - model.predict_proba(texts)).max() < 1e-5
    assert predictor.predict(texts) == model.predict(texts) and predictor.multi_label


def test_broken_parity_is_refused_and_leaves_nothing(tiny_run, tmp_path, monkeypatch):
    out = tmp_path / "onnx"
    export_model(tiny_run, out, engine="onnx", echo=None)
    before = json.loads((out / "export.json").read_text())
    monkeypatch.setattr(export, "FP32_TOLERANCE", 0.0)  # ONNX's fused kernels round differently: never exactly 0
    with pytest.raises(
        WorkbenchError,
        match=r"onnx export of .* is refused: its logits differ from PyTorch's by up "
        r"to .* \(tolerance 0.0\)\. .*Nothing was written",
    ):
        export_model(tiny_run, out, engine="onnx", echo=None)
    assert json.loads((out / "export.json").read_text()) == before  # the previous export is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx"]  # no staging folder left behind
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(WorkbenchError, match="mine exists and is not an export folder; nothing in it is replaced"):
        export_model(tiny_run, mine, engine="onnx", echo=None)
    assert (mine / "notes.txt").read_text() == "keep me"
    _plant(monkeypatch, _flip(slice(None)))  # an engine that swaps the classes
    # the tiny model decides none of its examples by a margin of 0.1: the accuracy change refuses it
    with pytest.raises(
        ParityError,
        match=r"onnx-int8 export of .* is refused: its accuracy falls from 1.0000 to "
        r"0.0000 \(at most 5 points allowed; 16 predictions flipped to wrong against 0 to right, p=1.53e-05 < "
        r"0.05\)\. .*Nothing was written",
    ) as refused:
        export_model(tiny_run, tmp_path / "int8", engine="onnx-int8", echo=None)
    assert refused.value.engine == "onnx-int8" and refused.value.parity["agreement"] == 0.0
    assert refused.value.parity["clear_examples"] == 0 and not (tmp_path / "int8").exists()
    with pytest.raises(ConfigError, match="max_examples=0 must be at least 1"):
        export_model(tiny_run, tmp_path / "none", engine="onnx", max_examples=0)


def _plant(monkeypatch, change, model=None, engine=None):
    """Make the exports (or only ``engine``'s) answer PyTorch's own logits ``(N, K)``, passed through ``change``."""
    real = export.load_export

    def planted(folder, *args, **kwargs):
        predictor = real(folder, *args, **kwargs)
        if engine in (None, predictor.engine):
            reference = model or TextClassificationModel.from_pretrained(predictor.meta["source"])
            predictor.logits = lambda features: change(reference.logits_of(features).numpy())
        return predictor

    monkeypatch.setattr(export, "load_export", planted)


def _flip(rows):
    def change(logits):
        logits[rows] = logits[rows][:, ::-1].copy()  # the other of the two classes
        return logits

    return change


def test_parity_judges_agreement_where_pytorch_decides_clearly_and_the_accuracy_change(tiny_run, tmp_path, monkeypatch):
    model = TextClassificationModel.from_pretrained(tiny_run)
    texts = [
        "a good and great film",
        "wonderful acting, loved it",
        "great fun, a fine movie",
        "a bad and awful film",
        "terrible acting, hated it",
        "awful mess, a poor movie",
        "a good and awful film",
        "great acting, hated it",
        "a fine mess",
        "bad story and great cast",
        "a dull but wonderful film",
        "a poor and fine movie",
    ]
    proba = model.predict_proba(texts)
    margins = decision_margin(proba)
    margin = float(np.median(margins))  # half the texts are near ties, the other half clearly decided
    near = np.flatnonzero(margins < margin)
    predicted = proba.argmax(1)
    truth = predicted.copy()
    truth[near[0]] = 1 - truth[near[0]]  # PyTorch gets one near tie wrong: accuracy 11/12
    rows = tmp_path / "rows.csv"
    pd.DataFrame({"text": texts, "label": np.array(["neg", "pos"])[truth]}).to_csv(rows, index=False)
    limits = ParityConfig(margin=margin)

    # quantization noise flipping two near ties, one to right and one to wrong: the old 90% floor refused this
    _plant(monkeypatch, _flip(near[:2]), model)
    meta = export_model(model, tmp_path / "ties", engine="onnx-int8", examples=rows, parity=limits, echo=None)
    parity = meta["parity"]
    assert parity["agreement"] == pytest.approx(10 / 12) and parity["agreement_clear"] == 1.0
    assert parity["clear_examples"] == 12 - len(near) == 6 and parity["margin"] == margin
    assert parity["accuracy_torch"] == pytest.approx(11 / 12) and parity["accuracy_change"] == 0.0

    # one near tie PyTorch got right flipped to wrong costs 1/12 of accuracy, beyond the 5 points, but one flip
    # is what chance does half the time (McNemar): accepted
    _plant(monkeypatch, _flip(near[1:2]), model)
    meta = export_model(model, tmp_path / "one", engine="onnx-int8", examples=rows, parity=limits, echo=None)
    assert meta["parity"]["accuracy_change"] == -1 / 12 and meta["parity"]["accuracy_drop_p"] == 0.5
    assert (meta["parity"]["flips_to_wrong"], meta["parity"]["flips_to_right"]) == (1, 0)

    # every near tie PyTorch got right flipped to wrong (5 of 5: p = 1/32): refused beyond the drop, not at it
    _plant(monkeypatch, _flip(near[1:]), model)
    with pytest.raises(
        ParityError,
        match=r"its accuracy falls from 0.9167 to 0.5000 \(at most 5 points allowed; 5 predictions flipped to "
        r"wrong against 0 to right, p=0.0312 < 0.05\)",
    ):
        export_model(model, tmp_path / "worse", engine="onnx-int8", examples=rows, parity=limits, echo=None)
    at_bound = ParityConfig(margin=margin, max_accuracy_drop=5 / 12)
    meta = export_model(model, tmp_path / "worse", engine="onnx-int8", examples=rows, parity=at_bound, echo=None)
    assert meta["parity"]["accuracy_change"] == -5 / 12 and meta["parity"]["agreement_clear"] == 1.0

    # a broken engine disagrees where PyTorch is sure, whatever the margin
    _plant(monkeypatch, _flip(np.arange(12)), model)
    with pytest.raises(
        ParityError,
        match=r"on the 6 examples PyTorch decides with a margin of at least .*, it agrees "
        r"with PyTorch on 0.0% of predictions",
    ):
        export_model(model, tmp_path / "broken", engine="onnx-int8", examples=rows, parity=limits, echo=None)
    # fp32 engines keep their tight check: the same near-tie flips are refused there
    _plant(monkeypatch, _flip(near[:2]), model)
    with pytest.raises(ParityError, match=r"its logits differ from PyTorch's by up to .* \(tolerance 0.0001\)"):
        export_model(model, tmp_path / "fp32", engine="onnx", examples=rows, parity=limits, echo=None)


def test_export_engines_shows_a_refused_export_as_a_row(tiny_run, tmp_path, monkeypatch):
    _plant(monkeypatch, _flip(slice(None)), engine="torch-int8")
    table = export_engines(tiny_run, ["onnx", "torch-int8"], workdir=tmp_path, echo=None)
    rows = table.set_index("engine")
    assert list(table["engine"]) == ["onnx", "torch-int8"] and list(table["status"]) == ["exported", "refused"]
    assert rows.loc["onnx", "reason"] == "" and rows.loc["onnx", "agreement"] == 1.0 and rows.loc["onnx", "size_mb"] > 0
    assert rows.loc["torch-int8", "reason"] == (
        "its accuracy falls from 1.0000 to 0.0000 (at most 5 points allowed; 16 predictions flipped to wrong against 0 "
        "to right, p=1.53e-05 < 0.05)"
    )
    assert rows.loc["torch-int8", "agreement"] == 0.0 and pd.isna(rows.loc["torch-int8", "size_mb"])
    assert rows.loc["torch-int8", "quantized"] == "int8" and rows.loc["torch-int8", "format"] == "torchscript"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx"]  # the refused export left nothing


def test_bad_export_requests(tiny_run, tmp_path, capsys):
    with pytest.raises(ConfigError, match="engine='torch' has no export; .*'torch' is the trained model itself"):
        export_model(tiny_run, engine="torch")
    with pytest.raises(ConfigError, match="int8 is offered for --format onnx .* not pt2"):
        export_model(tiny_run, model_format="pt2", quantize="int8")
    with pytest.raises(ConfigError, match="--optimize applies ONNX Runtime's fusions: use it with --format onnx"):
        export_model(tiny_run, model_format="torchscript", optimize=True)
    with pytest.raises(WorkbenchError, match="A model folder carries no data to check the export on: pass examples"):
        export_model(RunDir(tiny_run).best, tmp_path / "x", engine="onnx")
    with pytest.raises(ConfigError, match="engine='tensorrt' is unknown; choose one of torch, pt2"):
        engine_predictor(tiny_run, "tensorrt")
    empty_run = tmp_path / "runs" / "empty" / "version_0"
    empty_run.mkdir(parents=True)
    assert main(["export", str(empty_run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("workbench export: error:") and len(err.strip().splitlines()) == 1
    assert main(["export", str(tiny_run), "--format", "pt2", "--quantize", "int8"]) == 2
    assert "not pt2" in capsys.readouterr().err
    assert main(["export", str(tiny_run), "--engine", "onnx-int8", "--max-accuracy-drop", "2"]) == 2
    assert "parity.max_accuracy_drop=2.0 must be in [0, 1]" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # argparse refuses an unknown format with its usage line
        main(["export", str(tiny_run), "--format", "tflite"])
    assert exit_info.value.code == 2 and "invalid choice: 'tflite'" in capsys.readouterr().err


def test_the_cli_exports_into_the_run_and_speed_compares_engines(tiny_run, capsys):
    assert main(["export", str(tiny_run), "--format", "onnx", "--quantize", "int8"]) == 0
    assert "onnx-int8: " in capsys.readouterr().out
    assert (RunDir(tiny_run).export_folder("onnx-int8") / "model.onnx").is_file()
    val = Path(tiny_run).parent.parent.parent / "val.csv"
    assert (
        main(
            [
                "speed",
                str(tiny_run),
                "--file",
                str(val),
                "--engine",
                "torch",
                "onnx-int8",
                "--batch-sizes",
                "1",
                "4",
                "--repeats",
                "2",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "speedup_b1" in printed and "onnx-int8" in printed
    summary = printed[printed.index("size_mb") - 60 :]
    assert "accuracy" in summary and "agreement_with_torch" in summary  # the file's labels give each engine's accuracy


def test_a_windowed_model_exports_and_serves_with_its_windows_pooled(tiny_bert, tmp_path):
    from fastapi.testclient import TestClient

    from workbench.inference import benchmark_inference
    from workbench.serve import create_app
    from workbench.text import TextProcessing

    processing = TextProcessing(max_length=16, truncation="windows", stride=4, window_pooling="max")
    model = TextClassificationModel(tiny_bert, labels=["neg", "pos"], processing=processing, seed=3)
    texts = [" ".join(["the plot", "was long"] * n) + (" great" if n % 2 else " awful") for n in range(1, 13)]
    rows = tmp_path / "long.csv"
    pd.DataFrame({"text": texts, "label": ["pos", "neg"] * 6}).to_csv(rows, index=False)
    meta = export_model(model, tmp_path / "onnx", engine="onnx", examples=rows, echo=None)
    parity = meta["parity"]
    assert parity["tokenization_matches"] == 1.0 and parity["max_abs_logit_diff"] <= export.FP32_TOLERANCE
    assert parity["agreement"] == 1.0 and meta["processing"]["truncation"] == "windows"
    predictor = load_export(tmp_path / "onnx")
    windows = predictor.encode(texts)[-1]["windows"]
    assert len(windows) > 3  # the longest text is many windows, pooled into one answer per class ...
    alone = predictor.logits([{"input_ids": window} for window in windows])
    np.testing.assert_allclose(predictor.logits(predictor.encode(texts[-1:]))[0], alone.max(0), atol=1e-6)
    np.testing.assert_allclose(predictor.predict_proba(texts), model.predict_proba(texts), atol=1e-5)
    timing = benchmark_inference(predictor, texts, batch_sizes=[4], warmup=1, repeats=1, batches=2, echo=None)
    assert timing["mean_tokens"].max() <= 16  # the engine is timed on windows, the calls it makes
    with TestClient(create_app(predictor)) as client:  # ... and the service windows and pools inside
        answer = client.post("/v1/predict", json={"texts": texts[-2:]}).json()["predictions"]
        assert [p["label"] for p in answer] == model.predict(texts[-2:])


@pytest.mark.parametrize("engine", list(ENGINE_EXPORTS))
def test_attention_pooled_windows_export_and_serve_with_the_pytorch_answer(tiny_bert, tmp_path, engine):
    from fastapi.testclient import TestClient

    from workbench.inference import torch_predictor
    from workbench.metrics import pool_windows
    from workbench.serve import create_app
    from workbench.text import TextProcessing

    processing = TextProcessing(max_length=16, truncation="windows", stride=4, window_pooling="attention")
    model = TextClassificationModel(tiny_bert, labels=["neg", "pos"], processing=processing, seed=3)
    with torch.no_grad():  # a scorer as fit_window_attention would leave it: windows weighed unequally
        model.window_attention.weight.normal_(generator=torch.Generator().manual_seed(0))
    texts = [" ".join(["the plot", "was long"] * n) + (" great" if n % 2 else " awful") for n in range(1, 13)]
    rows = tmp_path / "long.csv"
    pd.DataFrame({"text": texts, "label": ["pos", "neg"] * 6}).to_csv(rows, index=False)
    meta = export_model(model, tmp_path / engine, engine=engine, examples=rows, echo=None)  # parity passed
    exact = engine not in PER_EXAMPLE_ENGINES  # int8 engines pass by agreement, their logits move
    assert meta["parity"]["agreement"] == 1.0 or not exact
    for predictor in (load_export(tmp_path / engine), torch_predictor(model)):
        windows = [{"input_ids": w} for w in predictor.encode(texts[-1:])[0]["windows"]]
        engine_rows = predictor.run(predictor.pad(windows))  # each window's logits and its score
        assert engine_rows.shape == (len(windows), 3) and np.ptp(engine_rows[:, 2]) > 0
        pooled = pool_windows(engine_rows[:, :2], [len(windows)], "attention", engine_rows[:, 2])
        np.testing.assert_allclose(predictor.logits(predictor.encode(texts[-1:])), pooled, atol=1e-5)
        assert not np.allclose(pooled, engine_rows[:, :2].mean(0, keepdims=True), atol=1e-4)  # not the mean
        assert predictor.logits(windows).shape == (len(windows), 2)  # windows alone: logits, the score left out
        if exact:
            np.testing.assert_allclose(predictor.predict_proba(texts), model.predict_proba(texts), atol=1e-5)
    with TestClient(create_app(load_export(tmp_path / engine))) as client:
        answer = client.post("/v1/predict", json={"texts": texts[-3:]}).json()["predictions"]
        assert len(answer) == 3 and (not exact or [p["label"] for p in answer] == model.predict(texts[-3:]))
