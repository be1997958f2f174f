"""Export benchmarks (issue 12): which int8 recipe, and every engine against PyTorch fp32 eager in one run.

Two parts, each written into its ``--out`` JSON, both on a run directory trained by ``make sst2``
(``workbench train --config configs/sst2.yaml``: all-MiniLM-L6-v2, one epoch of full SST-2):

- ``int8``: ONNX Runtime's dynamic int8 quantization with per-tensor or per-channel scales, with and without
  ``reduce_range``, on the plain and on the fused (``--optimize``) graph: SST-2 dev accuracy (872 sentences)
  and latency at batch 1 and 32 (natural lengths), next to PyTorch eager and fp32 ONNX measured in the same
  process. ``workbench.export.ONNX_INT8`` and ``config.ENGINE_EXPORTS`` hold the recipe this picked.
- ``engines``: :func:`workbench.inference.compare_engines` on SST-2 dev with every engine (torch, pt2,
  torchscript, torch-int8, onnx, onnx-optimized, onnx-int8): p50/p95/p99 latency per batch size, throughput,
  model size, peak memory added, dev accuracy, speed-up over torch. With ``--trec RUN_DIR`` it also reports
  each engine's accuracy on the TREC test questions (500).

Run (from the repository root, nothing else running; bench/README.md's numbers came from these commands):
    python bench/export.py int8 runs/bench_export/sst2/version_0 --threads 1 --out bench/results/export_int8.json
    python bench/export.py engines runs/bench_export/sst2/version_0 --trec runs/bench_export/trec/version_0 \\
        --threads 1 --out bench/results/export_engines_1thread.json
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

from onnxruntime.quantization import QuantType, quantize_dynamic  # noqa: E402

from workbench.config import ENGINES  # noqa: E402
from workbench.evaluation import evaluate_run  # noqa: E402
from workbench.export import engine_predictor  # noqa: E402
from workbench.inference import benchmark_inference, compare_engines  # noqa: E402
from workbench.runs import machine_info  # noqa: E402
from workbench.runtime import EXPORT_FILE, load_export  # noqa: E402


def _split(run_dir: str, split: str):
    evaluation = evaluate_run(run_dir, split)
    return list(evaluation.texts), np.asarray(evaluation.y_true), evaluation


def _measure(predictor, texts, labels, threads) -> dict:
    proba = predictor.predict_proba(texts)
    accuracy = float((proba.argmax(1) == labels).mean())
    table = benchmark_inference(predictor, texts, batch_sizes=(1, 32), repeats=5, batches=20, threads=threads, echo=None)
    cells = table.set_index("batch_size")
    return {"accuracy": accuracy, **{f"b{b}_p50_ms": float(cells.loc[b, "p50_ms"]) for b in (1, 32)},
            **{f"b{b}_examples_per_s": float(cells.loc[b, "examples_per_s"]) for b in (1, 32)}}


def int8(args) -> dict:
    texts, labels, _ = _split(args.run, "validation")
    results = {"machine": machine_info(), "command": " ".join(["python", *sys.argv]), "run": args.run,
               "threads": args.threads, "examples": len(texts), "recipes": {}}
    for engine in ("torch", "onnx", "onnx-optimized"):
        results["recipes"][engine] = _measure(engine_predictor(args.run, engine, threads=args.threads), texts, labels,
                                              args.threads)
        print(engine, results["recipes"][engine], flush=True)
    exports = Path(args.run) / "exports"
    with tempfile.TemporaryDirectory() as scratch:
        for graph in ("onnx", "onnx-optimized"):
            for per_channel in (False, True):
                for reduce_range in (False, True):
                    name = f"{graph}+int8 {'per-channel' if per_channel else 'per-tensor'}" + \
                           (" reduce_range" if reduce_range else "")
                    folder = Path(scratch) / name.replace(" ", "_")
                    shutil.copytree(exports / graph, folder)
                    meta = json.loads((folder / EXPORT_FILE).read_text())
                    started = time.perf_counter()
                    quantize_dynamic(str(exports / graph / meta["file"]), str(folder / meta["file"]),
                                     weight_type=QuantType.QInt8, per_channel=per_channel, reduce_range=reduce_range,
                                     extra_options={"DefaultTensorType": 1})  # 1 = FLOAT
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
    summary, latency = compare_engines(partial(engine_predictor, args.run), args.engines, texts, labels,
                                       batch_sizes=(1, 8, 32), repeats=5, batches=20, threads=args.threads)
    results = {"machine": summary.attrs["machine"], "command": " ".join(["python", *sys.argv]), "run": args.run,
               "threads": args.threads,
               "examples": len(texts), "summary": summary.to_dict(orient="records"),
               "latency": latency.to_dict(orient="records")}
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["int8", "engines"])
    parser.add_argument("run", help="the SST-2 run directory (make sst2)")
    parser.add_argument("--trec", help="a TREC run directory (configs/trec.yaml) for the TREC test accuracy")
    parser.add_argument("--engines", nargs="+", default=list(ENGINES))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    {"int8": int8, "engines": engines}[args.part](args)


if __name__ == "__main__":
    main()
