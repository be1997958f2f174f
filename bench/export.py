"""Export benchmarks (issues 12 and 20): which int8 recipe, every engine against PyTorch fp32 eager in one run, and
whether an engine's answer depends on its batch-mates.

Three parts, each written into its ``--out`` JSON; the first two on a run directory trained by ``make sst2``
(``workbench train --config configs/sst2.yaml``: all-MiniLM-L6-v2, one epoch of full SST-2):

- ``int8``: ONNX Runtime's dynamic int8 quantization with per-tensor or per-channel scales, with and without
  ``reduce_range``, on the plain and on the fused (``--optimize``) graph: SST-2 dev accuracy (872 sentences)
  and latency at batch 1 and 32 (natural lengths), next to PyTorch eager and fp32 ONNX measured in the same
  process. ``workbench.export.ONNX_INT8`` and ``config.ENGINE_EXPORTS`` hold the recipe this picked.
- ``engines``: :func:`workbench.inference.compare_engines` on SST-2 dev with every engine (torch, pt2,
  torchscript, torch-int8, onnx, onnx-optimized, onnx-int8): p50/p95/p99 latency per batch size, throughput,
  model size, peak memory added, dev accuracy, speed-up over torch. With ``--trec RUN_DIR`` it also reports
  each engine's accuracy on the TREC test questions (500).
- ``batching`` (issue 20), on a TREC run: each engine's answers to 300 test questions alone against the same
  questions in random groups of 32 (one call each, as the service's micro-batcher makes them), then int8 recipes
  side by side: dynamic int8 on the whole padded batch (the recipe before issue 20), dynamic int8 one example per
  call (``config.PER_EXAMPLE_ENGINES``), and ONNX Runtime's static QDQ int8 calibrated on 256 training examples
  (weight MatMuls only, or every MatMul): TREC test accuracy, batch 1 and 32 latency, batch dependence.

Run (from the repository root, nothing else running; bench/README.md's numbers came from these commands):
    python bench/export.py int8 runs/bench_export/sst2/version_0 --threads 1 --out bench/results/export_int8.json
    python bench/export.py engines runs/bench_export/sst2/version_0 --trec runs/bench_export/trec/version_0 \\
        --threads 1 --out bench/results/export_engines_1thread.json
    workbench train --config configs/trec.yaml train.epochs=1 data.train_subset=2000 run.name=trec_int8
    python bench/export.py batching runs/trec_int8/version_0 --threads 1 --out bench/results/export_int8_batching.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from tokenizers import Tokenizer

from workbench.config import ENGINES, PER_EXAMPLE_ENGINES
from workbench.evaluation import evaluate_run, run_datamodule
from workbench.export import engine_predictor
from workbench.inference import benchmark_inference, compare_engines
from workbench.models import TextClassificationModel
from workbench.runs import load_run, machine_info
from workbench.runtime import (
    EXPORT_FILE,
    TOKENIZER_FILE,
    Predictor,
    load_export,
    onnx_engine,
    torch_file_engine,
)


def _split(run_dir: str, split: str):
    evaluation = evaluate_run(run_dir, split)
    return list(evaluation.texts), np.asarray(evaluation.y_true), evaluation


def _measure(predictor, texts, labels, threads) -> dict:
    proba = predictor.predict_proba(texts)
    accuracy = float((proba.argmax(1) == labels).mean())
    table = benchmark_inference(
        predictor, texts, batch_sizes=(1, 32), repeats=5, batches=20, threads=threads, echo=None
    )
    cells = table.set_index("batch_size")
    return {
        "accuracy": accuracy,
        **{f"b{b}_p50_ms": float(cells.loc[b, "p50_ms"]) for b in (1, 32)},
        **{f"b{b}_examples_per_s": float(cells.loc[b, "examples_per_s"]) for b in (1, 32)},
    }


def int8(args) -> dict:
    texts, labels, _ = _split(args.run, "validation")
    results = {
        "machine": machine_info(),
        "command": " ".join(["python", *sys.argv]),
        "run": args.run,
        "threads": args.threads,
        "examples": len(texts),
        "recipes": {},
    }
    for engine in ("torch", "onnx", "onnx-optimized"):
        results["recipes"][engine] = _measure(
            engine_predictor(args.run, engine, threads=args.threads), texts, labels, args.threads
        )
        print(engine, results["recipes"][engine], flush=True)
    exports = Path(args.run) / "exports"
    with tempfile.TemporaryDirectory() as scratch:
        for graph in ("onnx", "onnx-optimized"):
            for per_channel in (False, True):
                for reduce_range in (False, True):
                    name = f"{graph}+int8 {'per-channel' if per_channel else 'per-tensor'}" + (
                        " reduce_range" if reduce_range else ""
                    )
                    folder = Path(scratch) / name.replace(" ", "_")
                    shutil.copytree(exports / graph, folder)
                    meta = json.loads((folder / EXPORT_FILE).read_text())
                    started = time.perf_counter()
                    quantize_dynamic(
                        str(exports / graph / meta["file"]),
                        str(folder / meta["file"]),
                        weight_type=QuantType.QInt8,
                        per_channel=per_channel,
                        reduce_range=reduce_range,
                        extra_options={"DefaultTensorType": 1},
                    )  # 1 = FLOAT
                    seconds = time.perf_counter() - started
                    row = _measure(load_export(folder, threads=args.threads), texts, labels, args.threads)
                    row.update(quantize_s=seconds, size_mb=(folder / meta["file"]).stat().st_size / 1e6)
                    results["recipes"][name] = row
                    print(name, row, flush=True)
                    Path(args.out).write_text(json.dumps(results, indent=2))
    base = results["recipes"]["torch"]
    for row in results["recipes"].values():
        row["speedup_b1"] = row["b1_examples_per_s"] / base["b1_examples_per_s"]
        row["speedup_b32"] = row["b32_examples_per_s"] / base["b32_examples_per_s"]
        row["accuracy_change_points"] = 100 * (row["accuracy"] - base["accuracy"])
    Path(args.out).write_text(json.dumps(results, indent=2))
    return results


def engines(args) -> dict:
    texts, labels, _ = _split(args.run, "validation")
    summary, latency = compare_engines(
        partial(engine_predictor, args.run),
        args.engines,
        texts,
        labels,
        batch_sizes=(1, 8, 32),
        repeats=5,
        batches=20,
        threads=args.threads,
    )
    results = {
        "machine": summary.attrs["machine"],
        "command": " ".join(["python", *sys.argv]),
        "run": args.run,
        "threads": args.threads,
        "examples": len(texts),
        "summary": summary.to_dict(orient="records"),
        "latency": latency.to_dict(orient="records"),
    }
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.trec:
        trec_texts, trec_labels, _ = _split(args.trec, "test")
        trec = {}
        for engine in args.engines:
            proba = engine_predictor(args.trec, engine, threads=args.threads).predict_proba(trec_texts)
            trec[engine] = float((proba.argmax(1) == trec_labels).mean())
        results["trec_test_accuracy"] = trec
        print("TREC test accuracy:", trec)
    Path(args.out).write_text(json.dumps(results, indent=2, default=str))
    return results


def _batch_dependence(predictor, texts, group: int, seed: int = 0) -> dict:
    """Each text alone against the same text in a random group of ``group`` texts (one call, as a micro-batch)."""
    alone = np.concatenate([predictor.predict_proba([text]) for text in texts])
    order = np.random.default_rng(seed).permutation(len(texts))
    batched = np.empty_like(alone)
    for start in range(0, len(texts), group):
        chosen = order[start : start + group]
        batched[chosen] = predictor.predict_proba([texts[i] for i in chosen])
    return {
        "max_abs_proba_diff": float(np.abs(alone - batched).max()),
        "predictions_changed": int((alone.argmax(1) != batched.argmax(1)).sum()),
    }


def _batched(folder: Path, threads) -> Predictor:
    """An int8 export as run before issue 20: the whole padded batch in one call (per-call activation scales)."""
    meta = json.loads((folder / EXPORT_FILE).read_text())
    run = (
        onnx_engine(folder / meta["file"], threads)
        if meta["model_format"] == "onnx"
        else torch_file_engine(folder / meta["file"], meta["model_format"], threads)
    )
    return Predictor(meta, Tokenizer.from_file(str(folder / TOKENIZER_FILE)), run, meta["engine"])


class _Calibration(CalibrationDataReader):
    """Training examples one at a time, unpadded, for ONNX Runtime's static activation ranges."""

    def __init__(self, predictor: Predictor, features: list[dict]):
        self.batches = iter([predictor.pad([f]) for f in features])

    def get_next(self):
        return next(self.batches, None)


def _static_int8(run_dir: str, onnx_folder: Path, out: Path, calibration: int, weights_only: bool) -> float:
    """The fp32 ONNX export quantized statically (QDQ, per-channel int8 weights, uint8 activations calibrated
    by min/max on ``calibration`` training examples); seconds taken."""
    shutil.copytree(onnx_folder, out)
    meta = json.loads((out / EXPORT_FILE).read_text())
    model = TextClassificationModel.from_pretrained(run_dir)
    features = run_datamodule(load_run(run_dir), model).train_dataset.features[:calibration]
    started = time.perf_counter()
    quantize_static(
        str(onnx_folder / meta["file"]),
        str(out / meta["file"]),
        _Calibration(load_export(onnx_folder), features),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul", "Gemm"],
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        extra_options={"MatMulConstBOnly": weights_only},
    )
    return time.perf_counter() - started


def batching(args) -> dict:
    """Every engine's batch dependence, then int8 recipes side by side: TREC test accuracy, speed, dependence."""
    texts, labels, _ = _split(args.run, "test")
    probe = texts[: args.texts]
    results = {
        "machine": machine_info(),
        "command": " ".join(["python", *sys.argv]),
        "run": args.run,
        "threads": args.threads,
        "examples": len(texts),
        "probe_texts": len(probe),
        "group": args.group,
        "engines": {},
        "recipes": {},
    }

    def save():
        Path(args.out).write_text(json.dumps(results, indent=2))

    predictors = {}
    for engine in args.engines:
        predictors[engine] = engine_predictor(args.run, engine, threads=args.threads)
        results["engines"][engine] = _batch_dependence(predictors[engine], probe, args.group)
        if engine in PER_EXAMPLE_ENGINES:
            folder = Path(args.run) / "exports" / engine
            results["engines"][engine + " (batched, before)"] = _batch_dependence(
                _batched(folder, args.threads), probe, args.group
            )
        print(engine, results["engines"], flush=True)
        save()
    recipes = {"torch": predictors.get("torch") or engine_predictor(args.run, "torch", threads=args.threads)}
    exports = Path(args.run) / "exports"
    for engine in ("onnx-int8", "torch-int8"):
        recipes[f"{engine} dynamic, batched (before)"] = _batched(exports / engine, args.threads)
        recipes[f"{engine} dynamic, one example per call"] = load_export(exports / engine, threads=args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        for weights_only in (True, False):
            name = "onnx static QDQ, " + ("weight MatMuls only" if weights_only else "every MatMul")
            folder = Path(scratch) / name.replace(" ", "_").replace(",", "")
            seconds = _static_int8(args.run, exports / "onnx", folder, args.calibration, weights_only)
            recipes[name] = load_export(folder, threads=args.threads)
            results["recipes"][name] = {"quantize_s": seconds}
        for name, predictor in recipes.items():
            row = results["recipes"].setdefault(name, {})
            row.update(_measure(predictor, texts, labels, args.threads))
            row.update(_batch_dependence(predictor, probe, args.group))
            print(name, row, flush=True)
            save()
    base = results["recipes"]["torch"]
    for row in results["recipes"].values():
        row["speedup_b1"] = row["b1_examples_per_s"] / base["b1_examples_per_s"]
        row["speedup_b32"] = row["b32_examples_per_s"] / base["b32_examples_per_s"]
        row["accuracy_change_points"] = 100 * (row["accuracy"] - base["accuracy"])
    save()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["int8", "engines", "batching"])
    parser.add_argument("run", help="the SST-2 run directory (make sst2); for batching, a TREC run (its test split)")
    parser.add_argument("--trec", help="a TREC run directory (configs/trec.yaml) for the TREC test accuracy")
    parser.add_argument("--engines", nargs="+", default=list(ENGINES))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--texts", type=int, default=300, help="batching: texts compared alone and in a batch")
    parser.add_argument("--group", type=int, default=32, help="batching: texts per call, as a micro-batch")
    parser.add_argument(
        "--calibration", type=int, default=256, help="batching: training examples calibrating static int8"
    )
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    {"int8": int8, "engines": engines, "batching": batching}[args.part](args)


if __name__ == "__main__":
    main()
