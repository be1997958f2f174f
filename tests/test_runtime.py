"""The torch-free side of an export: encoding with the tokenizers library as the model does, loading errors,
and an ONNX prediction in a process that never imports torch or transformers."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from workbench import TextClassificationModel
from workbench.errors import DataError, ModelLoadError
from workbench.export import export_model
from workbench.inference import torch_predictor
from workbench.runs import RunDir
from workbench.runtime import EXPORT_FILE, load_export, one_example_per_call
from workbench.text import TextProcessing

ODD_TEXTS = [
    "Café naïve résumé — ünïcödé",
    "<p>Great<br/>film!</p> &amp; more",
    "visit https://example.com/a?b=c now",
    "write to me@example.org",
    "🙂 emoji 🙃",
    "   spaced    out   ",
    "a " * 400 + "tail words here",
    "ALL CAPS AND lower",
    "tab\tand\nnewline",
]


@pytest.fixture(scope="module")
def onnx_export(tiny_run) -> Path:
    export_model(tiny_run, engine="onnx", echo=None)
    return RunDir(tiny_run).export_folder("onnx")


@pytest.mark.parametrize(
    "processing",
    [
        {"max_length": 32, "truncation": "head"},
        {"max_length": 24, "truncation": "head+tail", "head_fraction": 0.5, "mask_urls": True, "mask_emails": True},
        {"max_length": 16, "truncation": "tail", "lowercase": True, "clean_html": False},
    ],
)
def test_the_tokenizers_path_encodes_exactly_as_the_model(tiny_backbones, processing):
    for kind in ("bert", "roberta", "distilbert"):
        model = TextClassificationModel(
            tiny_backbones[kind], labels=["a", "b"], processing=TextProcessing(**processing)
        )
        expected = model.processor().encode(ODD_TEXTS)
        got = torch_predictor(model).encode(ODD_TEXTS)
        assert [e["input_ids"] for e in got] == [e["input_ids"] for e in expected], kind


def test_sentence_pairs_encode_as_the_model_does(tiny_bert):
    model = TextClassificationModel(
        tiny_bert, labels=["a", "b"], processing=TextProcessing(max_length=20, text_pair_column="hypothesis")
    )
    firsts, seconds = ODD_TEXTS[:4], ODD_TEXTS[4:8]
    expected = model.processor().encode(firsts, seconds)
    predictor = torch_predictor(model)
    assert predictor.encode(firsts, seconds) == expected
    with pytest.raises(DataError, match="reads text pairs: give a second text for each text"):
        predictor.encode(firsts)
    with pytest.raises(DataError, match="4 texts but 3 second texts"):
        predictor.encode(firsts, seconds[:3])
    with pytest.raises(DataError, match=r"Second text #2 is empty or not a string \(' '\)"):
        predictor.encode(firsts, [*seconds[:2], " ", "x"])


def test_an_onnx_export_predicts_without_torch_or_transformers(onnx_export, tiny_run):
    code = (
        "import sys, json; from workbench.runtime import load_export; "
        f"p = load_export({str(onnx_export)!r}); "
        "print(json.dumps({'labels': p.predict(['a good and great film', 'a bad and awful film']), "
        "'proba': p.predict_proba(['a good and great film']).tolist(), "
        "'heavy': sorted(m for m in ('torch', 'transformers') if m in sys.modules)}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []  # onnxruntime, tokenizers and numpy only
    model = TextClassificationModel.from_pretrained(tiny_run)
    assert result["labels"] == model.predict(["a good and great film", "a bad and awful film"])
    assert np.abs(np.array(result["proba"]) - model.predict_proba(["a good and great film"])).max() < 1e-5


def test_bad_texts_are_named(onnx_export):
    predictor = load_export(onnx_export)
    with pytest.raises(DataError, match=r"Text #1 is empty or not a string \('  '\)"):
        predictor.predict(["fine", "  "])
    with pytest.raises(DataError, match=r"Text #0 is empty or not a string \(3\)"):
        predictor.predict([3])
    assert predictor.predict_proba(["x" * 2_000_000]).shape == (1, 2)  # enormous text: cut first, then encoded


def test_one_example_per_call_answers_each_row_as_if_alone():
    def run(batch):  # an answer that depends on the whole call and its padding, as a dynamic int8 scale does
        ids = batch["input_ids"].astype(np.float32)
        return ids.sum(axis=1, keepdims=True) / ids.max() + ids.shape[1]  # (batch, 1)

    batch = {"input_ids": np.array([[5, 6, 0, 0], [9, 9, 9, 9]]), "attention_mask": np.array([[1, 1, 0, 0], [1] * 4])}
    assert run(batch)[0, 0] == pytest.approx(11 / 9 + 4)  # batched, row 0 takes row 1's max and the padded length
    assert one_example_per_call(run)(batch)[:, 0] == pytest.approx([11 / 6 + 2, 36 / 9 + 4])


def _copy(folder: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(folder, tmp_path / "copy"))


def test_loading_errors_name_the_file_and_the_fix(onnx_export, tmp_path):
    with pytest.raises(ModelLoadError, match=f"{tmp_path} has no export.json, so it is not an export folder"):
        load_export(tmp_path)
    folder = _copy(onnx_export, tmp_path)
    with pytest.raises(ModelLoadError, match="holds the onnx engine, not onnx-int8. Leave --engine out"):
        load_export(folder, "onnx-int8")
    (folder / "model.onnx").write_bytes((folder / "model.onnx").read_bytes()[:5000])  # truncated
    with pytest.raises(ModelLoadError, match=r"model.onnx is not a loadable ONNX model .*workbench export RUN_DIR"):
        load_export(folder)
    meta = json.loads((folder / EXPORT_FILE).read_text())
    (folder / EXPORT_FILE).write_text(json.dumps({**meta, "format": "workbench-export/0"}))
    with pytest.raises(
        ModelLoadError,
        match="is of format 'workbench-export/0'; this workbench reads 'workbench-export/1'. Export the run again",
    ):
        load_export(folder)
    (folder / EXPORT_FILE).write_text("{not json")
    with pytest.raises(ModelLoadError, match="export.json is corrupt"):
        load_export(folder)
    (folder / EXPORT_FILE).write_text(json.dumps(meta))
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError, match="lacks tokenizer.json, so the export is incomplete"):
        load_export(folder)
