"""Exporting a trained model for fast, torch-free serving, checked against PyTorch as soon as it is written.

Formats: ONNX (optionally with ONNX Runtime's transformer fusions and int8 dynamic quantization), TorchScript
(optionally with torch's dynamic int8 Linear layers) and ``torch.export`` (an ExportedProgram in a ``.pt2``
file). Each export is a self-contained folder: the model file, the tokenizer and ``export.json`` (labels,
thresholds, temperature, text processing, the run's metrics and a parity report measured right after export
on real examples). An export that breaks parity (:class:`~workbench.config.ParityConfig`: agreement where PyTorch
decides clearly, the accuracy change, and for fp32 the logits themselves) is refused and nothing is left behind::

    workbench export runs/sst2/version_0 --format onnx --optimize --quantize int8   # -> .../exports/onnx-int8
    meta = export_model("runs/sst2/version_0", engine="onnx-int8")
    meta["parity"]        # max |logit difference|, agreement (all, clearly decided), accuracy before and after
    export_engines("runs/sst2/version_0", ["onnx", "onnx-int8", "torch-int8"])   # a table; a refusal is a row
    engine_predictor("runs/sst2/version_0", "onnx-int8").predict(["a gripping film"])
    inference.compare_engines(partial(engine_predictor, "runs/sst2/version_0"), ["torch", "onnx-int8"], texts)

What the recipes rest on (torch 2.13, transformers 5, onnxruntime 1.32; bench/README.md "Export" has the numbers):

- Optimum's ONNX exporter does not support transformers 5, so this calls ``torch.onnx.export`` itself, with the
  TorchScript-based exporter (``dynamo=False``) on eager attention: its graph is what ONNX Runtime's fusions
  (Attention, SkipLayerNormalization, BiasGelu) and ``quantize_dynamic`` expect. SDPA attention exports a graph
  the attention fusion does not match.
- TorchScript is deprecated in favour of ``torch.export`` but still traces these encoders exactly (parity 0.0),
  so it is offered, and it is the container of torch's own int8 engine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pandas as pd
import torch
import transformers
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers import optimizer as ort_optimizer
from torch import nn

from workbench import __version__
from workbench.config import ENGINE_EXPORTS, ENGINES, ParityConfig, engine_of
from workbench.data import EncodedDataset, TextDataModule
from workbench.errors import ConfigError, ModelLoadError, ParityError, WorkbenchError
from workbench.evaluation import run_datamodule
from workbench.inference import torch_predictor
from workbench.metrics import decision_margin, predict_from_proba
from workbench.models import META_FILE, MODEL_FILE, TextClassificationModel
from workbench.runs import RunDir, load_run, model_folder
from workbench.runtime import EXPORT_FILE, EXPORT_FORMAT, MODEL_FILES, Predictor, load_export
from workbench.text import window_items

ONNX_OPSET = 17
FP32_TOLERANCE = 1e-4  # most |logit difference| an fp32 export may show against PyTorch eager
# ONNX Runtime's dynamic int8 quantization, chosen by bench/export.py int8 (SST-2 dev, Intel Xeon with AVX-512,
# one thread): signed int8 weights with one scale per output channel lose 0.2 points of accuracy where one scale
# per tensor loses 1.0, at the same speed (6.2x PyTorch eager at batch 1, 2.3x at batch 32); reduce_range
# (7-bit weights, advised for AVX2 CPUs without VNNI) cost accuracy and speed here.
ONNX_INT8 = {"weight_type": QuantType.QInt8, "per_channel": True, "reduce_range": False}
# ONNX Runtime's fusion patterns per backbone type: RoBERTa and DistilBERT share BERT's encoder blocks.
_ORT_MODEL_TYPES = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "distilbert": "bert", "mpnet": "bert"}


class _Logits(nn.Module):
    """The classifier as a function of token tensors in a fixed order, returning what an engine returns (logits,
    and a window score column for attention pooling: :meth:`TextClassificationModel.engine_output`); exporters
    trace it."""

    def __init__(self, model: TextClassificationModel):
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.model.engine_output(input_ids, attention_mask, token_type_ids)


def _load_source(source) -> tuple[TextClassificationModel, object | None]:
    """The model and, when ``source`` is a run directory, its :class:`~workbench.runs.Run`."""
    if isinstance(source, TextClassificationModel):
        return source, None
    path = Path(source)
    run = load_run(path) if (path / RunDir.CONFIG).exists() else None
    return TextClassificationModel.from_pretrained(path), run


def _parity_examples(model: TextClassificationModel, run, file: str | Path | None, max_examples: int) -> EncodedDataset:
    if file is not None:
        return TextDataModule.for_model(model).encode_file(file)
    if run is None:
        raise WorkbenchError(
            "A model folder carries no data to check the export on: pass examples=FILE "
            "(CLI: --file FILE, a table with the text and label columns), or export the run "
            "directory instead."
        )
    return run_datamodule(run, model).val_dataset


def parity_report(
    model: TextClassificationModel,
    predictor: Predictor,
    dataset: EncodedDataset,
    max_examples: int = 1000,
    *,
    margin: float = ParityConfig.margin,
) -> dict:
    """How an engine's outputs compare with PyTorch eager on the first ``max_examples`` examples of ``dataset``.

    Args:
        margin: an example is clearly decided when PyTorch's :func:`~workbench.metrics.decision_margin` is at least
            this (:attr:`ParityConfig.margin <workbench.config.ParityConfig>`).

    Returns:
        ``examples``, ``max_abs_logit_diff``, ``max_abs_proba_diff`` (how far the engine moves a probability),
        ``agreement`` (share of identical predictions; identical label sets for multi-label), ``margin``,
        ``clear_examples`` (how many PyTorch decides with at least that margin) and ``agreement_clear`` (the
        agreement on those; None when there are none), ``tokenization_matches`` (share of texts the engine's
        tokenizer encodes to the same ids, for single-text models) and, when the examples carry labels,
        ``accuracy_torch``, ``accuracy_export`` (exact match of label sets for multi-label) and ``accuracy_change``
        (export minus torch).

    Example:
        >>> parity_report(model, load_export("runs/trec/version_0/exports/onnx-int8"), dataset)  # doctest: +SKIP
        {'examples': 500, 'max_abs_logit_diff': 0.21, 'max_abs_proba_diff': 0.03, 'agreement': 0.994, ...}
    """
    features = dataset.features[:max_examples]
    reference = model.logits_of(features).numpy()  # (N, K)
    logits = predictor.logits(features)
    thresholds = model.thresholds if model.multi_label else None
    proba, engine_proba = model.proba_from_logits(reference), predictor.proba_from_logits(logits)
    before = predict_from_proba(proba, thresholds)
    after = predict_from_proba(engine_proba, thresholds)
    same = (before == after).reshape(len(features), -1).all(axis=1)
    clear = decision_margin(proba, thresholds) >= margin
    report = {
        "examples": len(features),
        "max_abs_logit_diff": float(np.abs(reference - logits).max()),
        "max_abs_proba_diff": float(np.abs(proba - engine_proba).max()),
        "agreement": float(same.mean()),
        "margin": margin,
        "clear_examples": int(clear.sum()),
        "agreement_clear": float(same[clear].mean()) if clear.any() else None,
    }
    if not model.processing.text_pair_column:
        encoded = predictor.encode(dataset.texts[:max_examples])
        report["tokenization_matches"] = float(
            np.mean([_token_ids(e) == _token_ids(f) for e, f in zip(encoded, features, strict=True)])
        )
    if features and "labels" in features[0]:
        truth = np.asarray([f["labels"] for f in features])
        right = [(predicted == truth).reshape(len(features), -1).all(axis=1) for predicted in (before, after)]
        report["accuracy_torch"], report["accuracy_export"] = (float(correct.mean()) for correct in right)
        # from counts, so that a change of exactly the allowed drop is not refused by a rounding error
        report["accuracy_change"] = (int(right[1].sum()) - int(right[0].sum())) / len(features)
        to_wrong, to_right = int((right[0] & ~right[1]).sum()), int((~right[0] & right[1]).sum())
        report["flips_to_wrong"], report["flips_to_right"] = to_wrong, to_right
        report["accuracy_drop_p"] = flip_test(to_wrong, to_right)
    return report


def _token_ids(feature: dict) -> list[list[int]]:
    """An encoded example's token ids: its windows, or its one sequence."""
    return [list(ids) for ids in feature.get("windows", [feature.get("input_ids")])]


def flip_test(to_wrong: int, to_right: int) -> float:
    """McNemar's exact one-sided test: the chance of ``to_wrong`` or more of the ``to_wrong + to_right`` flipped
    predictions going from right to wrong if each flip went either way with probability 1/2 (as noise on near ties
    does). A small value says the engine loses accuracy beyond chance.

    Example:
        >>> round(flip_test(10, 4), 3)  # 14 flips, 10 of them to wrong: not beyond chance
        0.09
    """
    flips = to_wrong + to_right
    return sum(math.comb(flips, k) for k in range(to_wrong, flips + 1)) / 2**flips


def _write_onnx(
    wrapper: _Logits, names: list[str], example: tuple, path: Path, optimize: bool, quantize: str | None
) -> dict:
    model = wrapper.model
    axes = {name: {0: "batch", 1: "sequence"} for name in names} | {"logits": {0: "batch"}}
    raw = path.with_name("raw.onnx")
    attention = model.backbone.config._attn_implementation
    model.backbone.set_attn_implementation("eager")  # the graph ONNX Runtime's fusions and quantizer expect
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about Python conditions on shapes (checked by parity)
            torch.onnx.export(
                wrapper,
                example,
                str(raw),
                input_names=names,
                output_names=["logits"],
                dynamic_axes=axes,
                opset_version=ONNX_OPSET,
                dynamo=False,
                do_constant_folding=True,
            )
    finally:
        model.backbone.set_attn_implementation(attention)  # a model passed in comes back as it was
    details: dict = {"opset": ONNX_OPSET}
    current = raw
    if optimize:
        config = model.backbone.config
        heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", 0)
        hidden = getattr(config, "hidden_size", None) or getattr(config, "dim", 0)
        fused = ort_optimizer.optimize_model(
            str(raw), model_type=_ORT_MODEL_TYPES.get(config.model_type, "bert"), num_heads=heads, hidden_size=hidden
        )
        details["fused_operators"] = {k: v for k, v in fused.get_fused_operator_statistics().items() if v}
        current = path.with_name("optimized.onnx")
        fused.save_model_to_file(str(current))
    if quantize:
        # the fused graph's com.microsoft operators defeat ONNX shape inference: their outputs are fp32
        quiet = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)  # its advice to run a pre-processing step (shape inference)
        try:
            quantize_dynamic(
                str(current), str(path), **ONNX_INT8, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT}
            )
        finally:
            logging.getLogger().setLevel(quiet)
        details["int8"] = {k: str(v) for k, v in ONNX_INT8.items()}
    else:
        shutil.copyfile(current, path)
    for scratch in (raw, path.with_name("optimized.onnx")):
        scratch.unlink(missing_ok=True)
    return details


def _write_torch(
    wrapper: _Logits, names: list[str], example: tuple, path: Path, model_format: str, quantize: str | None
) -> dict:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript's and torch.ao's deprecation notices
        if model_format == "pt2":
            # inputs are never longer than the model's max_length, which fits its position table
            longest = wrapper.model.processing.max_length
            batch, sequence = (
                torch.export.Dim("batch", min=1, max=4096),
                torch.export.Dim("sequence", min=2, max=longest),
            )
            shapes = {name: {0: batch, 1: sequence} for name in names}
            torch.export.save(torch.export.export(wrapper, example, dynamic_shapes=shapes), str(path))
            return {"exporter": "torch.export"}
        module = wrapper
        if quantize:
            module = torch.ao.quantization.quantize_dynamic(wrapper, {nn.Linear}, dtype=torch.qint8)
        torch.jit.save(torch.jit.trace(module, example, strict=False), str(path))
    return {"exporter": "torch.jit.trace"} | ({"int8": "torch.ao dynamic, Linear layers, qint8"} if quantize else {})


def _check_parity(parity: dict, quantized: bool, limits: ParityConfig) -> str | None:
    """Why the export is refused, or None."""
    if parity.get("tokenization_matches", 1.0) < 1.0:
        return (
            f"its tokenizer encodes {100 * (1 - parity['tokenization_matches']):.1f}% of the texts differently "
            "from the model's"
        )
    if not quantized and parity["max_abs_logit_diff"] > FP32_TOLERANCE:
        return (
            f"its logits differ from PyTorch's by up to {parity['max_abs_logit_diff']:.2e} (tolerance {FP32_TOLERANCE})"
        )
    if parity["agreement_clear"] is not None and parity["agreement_clear"] < limits.min_agreement:
        return (
            f"on the {parity['clear_examples']} examples PyTorch decides with a margin of at least "
            f"{parity['margin']}, it agrees with PyTorch on {100 * parity['agreement_clear']:.1f}% of predictions "
            f"(minimum {100 * limits.min_agreement:g}%)"
        )
    drop_is_real = parity.get("accuracy_drop_p", 0.0) < limits.accuracy_alpha
    if parity.get("accuracy_change", 0.0) < -limits.max_accuracy_drop and drop_is_real:
        return (
            f"its accuracy falls from {parity['accuracy_torch']:.4f} to {parity['accuracy_export']:.4f} "
            f"(at most {100 * limits.max_accuracy_drop:g} points allowed; {parity['flips_to_wrong']} predictions "
            f"flipped to wrong against {parity['flips_to_right']} to right, p={parity['accuracy_drop_p']:.3g} "
            f"< {limits.accuracy_alpha:g})"
        )
    return None


def _export_metadata(
    model: TextClassificationModel, run, source_path, model_file: Path, recipe: dict, details: dict, seconds: float
) -> dict:
    """What ``export.json`` records: the model's own metadata, the engine and its recipe, the backbone, where the
    model came from, the file's size and hash, and the library versions."""
    return {
        **model.metadata(),
        "format": EXPORT_FORMAT,
        "engine": recipe["engine"],
        "model_format": recipe["model_format"],
        "file": model_file.name,
        "optimized": recipe["optimized"],
        "quantized": recipe["quantized"],
        **details,
        "inputs": model.input_names,
        "pad_token_id": model.tokenizer.pad_token_id,
        "backbone": {
            key: getattr(model.backbone.config, key, None)
            for key in ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")
        },
        "source": str(source_path) if source_path is not None else None,
        "run_metrics": {k: v for k, v in (run.metrics if run else {}).items() if k in ("validation", "test")},
        "size_bytes": model_file.stat().st_size,
        "model_sha256": _sha256(model_file),
        "export_seconds": round(seconds, 2),
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": {
            "workbench": __version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
    }


def export_model(
    source: TextClassificationModel | str | Path,
    out: str | Path | None = None,
    *,
    engine: str | None = None,
    model_format: str = "onnx",
    optimize: bool = False,
    quantize: str | None = None,
    examples: str | Path | None = None,
    max_examples: int = 1000,
    parity: ParityConfig | None = None,
    echo: Callable[[str], None] | None = print,
) -> dict:
    """Export a trained model into a self-contained folder, then check it against PyTorch on real examples.

    Args:
        source: a run directory (its best model; parity is measured on its validation split), a saved model
            folder, or a loaded :class:`~workbench.models.TextClassificationModel` (both need ``examples``).
        out: the export folder (replaced if it exists); default ``RUN_DIR/exports/<engine>``.
        engine: an engine name of :data:`workbench.config.ENGINE_EXPORTS` (sets format, optimize and quantize).
        model_format: ``onnx``, ``torchscript`` or ``pt2``.
        optimize: apply ONNX Runtime's transformer fusions (ONNX only).
        quantize: ``"int8"``: dynamic int8 weights (ONNX Runtime for ONNX, torch.ao for TorchScript).
        examples: a labelled table to measure parity on, instead of the run's validation split.
        max_examples: examples the parity report uses.
        parity: what the export must show against PyTorch (default :class:`~workbench.config.ParityConfig`):
            agreement where PyTorch decides clearly, the accuracy change. fp32 exports must also match its logits
            within ``FP32_TOLERANCE``.

    Returns:
        The export's ``export.json`` as a dict, with its ``parity`` report.

    Raises:
        WorkbenchError: unknown engine or format, a folder without a model; ParityError: broken parity (nothing
            is written either way).

    Example:
        >>> meta = export_model("runs/trec/version_0", engine="onnx-int8")  # doctest: +SKIP
        >>> meta["parity"]["accuracy_torch"], meta["parity"]["accuracy_export"]  # doctest: +SKIP
    """
    if engine is not None:
        if engine not in ENGINE_EXPORTS:
            raise ConfigError(
                f"engine={engine!r} has no export; choose one of {', '.join(ENGINE_EXPORTS)}"
                + (" ('torch' is the trained model itself)." if engine == "torch" else ".")
            )
        model_format, optimize, quantize = ENGINE_EXPORTS[engine]
    engine = engine_of(model_format, optimize, quantize)
    model, run = _load_source(source)
    if out is None and run is None:
        raise WorkbenchError("Give the export folder (out=..., CLI: --out DIR): only a run directory has a default.")
    out = Path(out).resolve() if out is not None else RunDir(run.path).export_folder(engine)
    if out.exists() and not (out / EXPORT_FILE).exists() and (not out.is_dir() or any(out.iterdir())):
        raise WorkbenchError(
            f"{out} exists and is not an export folder; nothing in it is replaced. Export into a "
            "new or empty folder, or over an earlier export."
        )
    if max_examples < 1:
        raise ConfigError(f"max_examples={max_examples} must be at least 1 (the parity report needs examples).")
    dataset = _parity_examples(model, run, examples, max_examples)
    if not dataset.features:
        raise WorkbenchError("There are no examples to check the export on; give a labelled file with examples=FILE.")
    names = model.input_names
    sample = window_items(dataset.features[:2]) or (dataset.features[:2],)  # a windowed text: its windows
    example = tuple(torch.as_tensor(v) for v in torch_predictor(model).pad(sample[0][:2]).values())
    staging = out.parent / f".{out.name}.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        started = time.perf_counter()
        model_file = staging / MODEL_FILES[model_format]
        wrapper = _Logits(model).eval()
        if model_format == "onnx":
            details = _write_onnx(wrapper, names, example, model_file, optimize, quantize)
        else:
            details = _write_torch(wrapper, names, example, model_file, model_format, quantize)
        export_seconds = time.perf_counter() - started
        model.tokenizer.save_pretrained(staging)
        source_path = run.path if run is not None else (None if isinstance(source, TextClassificationModel) else source)
        recipe = {"engine": engine, "model_format": model_format, "optimized": optimize, "quantized": quantize}
        meta = _export_metadata(model, run, source_path, model_file, recipe, details, export_seconds)
        (staging / EXPORT_FILE).write_text(json.dumps(meta, indent=2))
        limits = parity or ParityConfig()
        meta["parity"] = parity_report(model, load_export(staging), dataset, max_examples, margin=limits.margin)
        meta["parity_limits"] = dataclasses.asdict(limits) | {"fp32_tolerance": FP32_TOLERANCE}
        problem = _check_parity(meta["parity"], bool(quantize), limits)
        if problem:
            raise ParityError(
                f"The {engine} export of {source_path or 'the model'} is refused: {problem}. "
                f"Parity: {json.dumps(meta['parity'])}. Nothing was written.",
                engine=engine,
                reason=problem,
                parity=meta["parity"],
            )
        (staging / EXPORT_FILE).write_text(json.dumps(meta, indent=2))
        _replace_folder(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if echo:
        echo(_parity_line(meta, out))
    return meta


def _parity_line(meta: dict, out: Path) -> str:
    p = meta["parity"]
    accuracy = f", accuracy {p['accuracy_torch']:.4f} -> {p['accuracy_export']:.4f}" if "accuracy_torch" in p else ""
    clear = f"{p['agreement_clear']:.4f}" if p["agreement_clear"] is not None else "-"
    return (
        f"{meta['engine']}: {out} ({meta['size_bytes'] / 1e6:.1f} MB); on {p['examples']} examples max |logit "
        f"diff| {p['max_abs_logit_diff']:.2e}, agreement {p['agreement']:.4f} ({clear} on the "
        f"{p['clear_examples']} decided by a margin of {p['margin']}){accuracy}"
    )


def _replace_folder(new: Path, out: Path) -> None:
    """Move ``new`` to ``out`` so that ``out`` is never a half-written export (the old one goes only after)."""
    old = out.with_name(f".{out.name}.{os.getpid()}.old")
    if out.exists():
        os.replace(out, old)
    try:
        os.replace(new, out)
    except OSError:
        if old.exists():
            os.replace(old, out)  # the earlier export stays
        raise
    shutil.rmtree(old, ignore_errors=True)


def engine_predictor(
    source: TextClassificationModel | str | Path,
    engine: str,
    *,
    threads: int | None = None,
    batch_size: int = 32,
    workdir: str | Path | None = None,
    spin_wait: bool = True,
    echo: Callable[[str], None] | None = print,
) -> Predictor:
    """A :class:`~workbench.runtime.Predictor` of ``source`` on ``engine``.

    ``torch`` runs the trained model itself. Any other engine loads ``source`` when it is an export folder of that
    engine, else the run's export (``RUN_DIR/exports/<engine>``, made now if missing, or into ``workdir``).
    """
    if engine not in ENGINES:
        raise ConfigError(f"engine={engine!r} is unknown; choose one of {', '.join(ENGINES)}.")
    path = None if isinstance(source, TextClassificationModel) else Path(source)
    if path is not None and (path / EXPORT_FILE).exists():
        return load_export(path, engine, threads=threads, batch_size=batch_size, spin_wait=spin_wait)
    if engine == "torch":
        if threads:
            torch.set_num_threads(threads)
        model = source if path is None else TextClassificationModel.from_pretrained(path)
        predictor = torch_predictor(model, batch_size)
        if path is not None:
            predictor.meta["model_sha256"] = _sha256(model_folder(path) / MODEL_FILE)
            predictor.meta["size_bytes"] = (model_folder(path) / MODEL_FILE).stat().st_size  # as an export's
            predictor.meta["source"] = str(path)
        return predictor
    folder = Path(workdir) / engine if workdir is not None else None
    if folder is None and path is not None and (path / RunDir.CONFIG).exists():
        folder = RunDir(path).export_folder(engine)
    if folder is None and path is not None and not (path / META_FILE).exists():
        raise ModelLoadError(
            f"{path} is neither an export folder ({EXPORT_FILE}), a run directory ({RunDir.CONFIG}) "
            f"nor a saved model folder ({META_FILE}). Pass one of those."
        )
    if folder is None:
        raise WorkbenchError(
            f"Engine {engine} needs an export, and a model folder has no data to check one on: run "
            f"`workbench export {path or 'MODEL'} --engine {engine} --file LABELLED.csv --out DIR`, "
            "then use DIR."
        )
    if not (folder / EXPORT_FILE).exists():
        export_model(source, folder, engine=engine, echo=echo)
    return load_export(folder, engine, threads=threads, batch_size=batch_size, spin_wait=spin_wait)


def export_engines(
    source: TextClassificationModel | str | Path,
    engines: Sequence[str],
    *,
    workdir: str | Path | None = None,
    examples: str | Path | None = None,
    max_examples: int = 1000,
    parity: ParityConfig | None = None,
    echo: Callable[[str], None] | None = print,
) -> pd.DataFrame:
    """Export ``source`` for each of ``engines`` (:func:`export_model`); a refused export is a row, not an error.

    Args:
        source: as :func:`export_model`; exports go to ``RUN_DIR/exports/<engine>``, or ``workdir/<engine>``.
        engines: names from :data:`workbench.config.ENGINE_EXPORTS`.
        examples, max_examples, parity: as :func:`export_model`.

    Returns:
        One row per engine, in order: ``status`` (``exported`` or ``refused``), ``reason`` (why it was refused),
        the columns of :func:`exports_table` and the parity report (a refused export's too).

    Example:
        >>> table = export_engines("runs/trec/version_0", ["onnx", "onnx-int8", "torch-int8"])  # doctest: +SKIP
        >>> table[["engine", "status", "agreement_clear", "accuracy_change", "reason"]]  # doctest: +SKIP
    """
    rows = []
    for engine in engines:
        out = Path(workdir) / engine if workdir is not None else None
        try:
            meta = export_model(
                source, out, engine=engine, examples=examples, max_examples=max_examples, parity=parity, echo=echo
            )
            status, reason = "exported", ""
        except ParityError as refused:
            model_format, optimize, quantize = ENGINE_EXPORTS[engine]
            meta = {
                "engine": engine,
                "model_format": model_format,
                "optimized": optimize,
                "quantized": quantize,
                "parity": refused.parity,
            }
            status, reason = "refused", refused.reason
        rows.append({"engine": engine, "status": status, "reason": reason, **_export_row(meta)})
    return pd.DataFrame(rows)


def exports_table(run_dir: str | Path) -> pd.DataFrame:
    """One row per export of a run (``RUN_DIR/exports/*``): engine, size, export time and its parity report."""
    return pd.DataFrame(
        [
            _export_row(json.loads(meta_file.read_text()))
            for meta_file in sorted((Path(run_dir) / RunDir.EXPORTS).glob(f"*/{EXPORT_FILE}"))
        ]
    )


def _export_row(meta: dict) -> dict:
    return {
        "engine": meta["engine"],
        "format": meta["model_format"],
        "optimized": meta["optimized"],
        "quantized": meta["quantized"] or "",
        "size_mb": meta["size_bytes"] / 1e6 if "size_bytes" in meta else None,
        "export_s": meta.get("export_seconds"),
        **meta.get("parity", {}),
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
