"""Ray against in-process, side by side in one run (issue 25): a 4-experiment grid, 5-fold cross-validation, Ray's
overhead per task, and batch prediction of a large file.

Each section runs the same work twice, first in this process (the default executor) and then on a Ray instance
started here with the machine's cores (``--executor ray`` without an address: 2 workers on a 2-core machine, one
CPU and so one torch thread each). On 2 cores no gain is expected, since the in-process run already uses both
cores through torch's threads; the point is that the same command spreads over a cluster, and this measures what
Ray costs on top.

- grid: ``notebooks/02_train`` on 500 TREC questions, 1 epoch of MiniLM, four learning rates (experiments file
  written here); wall time of ``run_experiments`` and each experiment's node.
- cv: ``cross_validate`` of MiniLM on 1,000 TREC questions, 5 folds, 1 epoch each; wall time and mean accuracy.
- overhead: 200 empty tasks through ``Executor.map`` (per-task round trip), and Ray's start-up.
- predict: ``predict_file`` on 100,000 TREC-like rows with a MiniLM ONNX export, and on 1,000,000 rows with a tiny
  2-layer encoder's export (where the per-row work is small and the framework's share shows).

Run (from the repository root, nothing else running; bench/README.md's numbers came from this command):
    python bench/scale_out.py --run runs/trec_cv/cv/fold_0/version_0 --out bench/results/scale_out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np
import pandas as pd
import yaml

from workbench import load_config
from workbench.backbones import load_tokenizer
from workbench.catalog import load_split
from workbench.cluster import Executor, predict_file
from workbench.cv import cross_validate
from workbench.export import export_model
from workbench.reports import run_experiments
from workbench.runs import machine_info
from workbench.runtime import load_export
from workbench.trainer import train


def _noop(item):
    return item


def _both(work, label: str) -> dict:
    """``work(executor)`` in process, then on a local Ray instance: wall seconds and what it returned."""
    out = {}
    for kind in ("local", "ray"):
        began = time.perf_counter()
        with Executor(kind) as executor:
            entered = time.perf_counter()
            result = work(executor, kind)
        out[kind] = {"wall_s": round(time.perf_counter() - began, 4), **result}
        if kind == "ray":
            out[kind]["ray_start_s"] = round(entered - began, 2)
        print(f"{label} {kind}: {out[kind]}", flush=True)
    out["ray_over_local"] = round(out["ray"]["wall_s"] / max(out["local"]["wall_s"], 1e-6), 3)
    return out


def grid(folder: Path) -> dict:
    experiments = {
        "notebooks_dir": str(ROOT / "notebooks"),
        "experiments": [
            {
                "name": "trec",
                "notebooks": ["02_train"],
                "parameters": {
                    "dataset": "trec",
                    "train_subset": 500,
                    "val_subset": 200,
                    "epochs": 1,
                    "max_length": 32,
                    "run_root": str(folder / "runs"),
                },
                "grid": {"lr": [5e-5, 1e-4, 2e-4, 4e-4]},
            }
        ],
    }
    path = folder / "grid.yaml"
    path.write_text(yaml.safe_dump(experiments))

    def work(executor, kind):
        state = run_experiments(path, reports_dir=folder / f"reports_{kind}", progress=False, executor=executor)
        entries = state["experiments"].values()
        return {
            "failed": state["failed"],
            "notebook_s": [e["notebooks"]["02_train"]["duration_s"] for e in entries],
            "nodes": len({e.get("node") for e in entries}),
        }

    return _both(work, "grid")


def cv(folder: Path) -> dict:
    overrides = {
        "data.dataset": "trec",
        "data.train_subset": 1000,
        "data.max_length": 32,
        "train.epochs": 1,
        "train.lr": 2e-4,
        "run.root": str(folder / "runs"),
    }

    def work(executor, kind):
        result = cross_validate(load_config(overrides={**overrides, "run.name": f"cv_{kind}"}), 5, executor=executor)
        return {"accuracy_mean": round(result.summary["mean"]["accuracy"], 4), "folds": result.summary["n_folds"]}

    return _both(work, "cv")


def overhead() -> dict:
    def work(executor, kind):
        executor.map(_noop, [0, 1], names=["warm0", "warm1"])  # Ray starts its worker processes on first use
        began = time.perf_counter()
        executor.map(_noop, list(range(200)), names=[f"t{i}" for i in range(200)])
        timed = {"per_task_ms": round((time.perf_counter() - began) / 200 * 1000, 4)}
        if kind == "ray":  # the same empty tasks on bare Ray, without the executor's shared folder and waiting
            import ray

            bare = ray.remote(_noop)
            began = time.perf_counter()
            ray.get([bare.remote(i) for i in range(200)])
            timed["bare_ray_per_task_ms"] = round((time.perf_counter() - began) / 200 * 1000, 4)
        return timed

    return _both(work, "overhead")


def _texts(n: int) -> list[str]:
    questions = load_split("trec", "train")["text"].tolist()
    rng = np.random.default_rng(0)
    return [questions[i] for i in rng.integers(0, len(questions), n)]


def tiny_run(folder: Path) -> Path:
    """A run of a random 2-layer, 64-wide BERT on MiniLM's tokenizer (200 TREC questions, 1 epoch): a model whose
    per-row cost is small, so the framework's share of batch prediction shows."""
    from transformers import AutoModel, BertConfig

    tokenizer = load_tokenizer("minilm")
    backbone = folder / "tiny_backbone"
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2)
    AutoModel.from_config(config.__class__(**{**config.to_dict(), "intermediate_size": 128})).save_pretrained(backbone)
    tokenizer.save_pretrained(backbone)
    overrides = {"model.backbone": str(backbone), "data.dataset": "trec", "data.train_subset": 200}
    overrides.update({"data.max_length": 32, "train.epochs": 1, "run.root": str(folder / "runs"), "run.name": "tiny"})
    return train(load_config(overrides=overrides)).run_dir


def predict(folder: Path, export: Path, rows: int, label: str) -> dict:
    source = folder / f"{label}.csv"
    pd.DataFrame({"text": _texts(rows)}).to_csv(source, index=False)

    def work(executor, kind):
        target = folder / f"{label}_{kind}.jsonl"
        predictor = str(export) if executor.distributed else load_export(export)
        with open(target, "w") as out:
            written = predict_file(predictor, source, out, executor=executor, actors=2, rows=4096)
        return {"rows": written, "file": str(target)}

    out = _both(work, f"predict {label}")
    for kind in ("local", "ray"):
        out[kind]["rows_per_s"] = round(rows / out[kind]["wall_s"], 1)
    local, spread = (Path(out[k].pop("file")).read_text().splitlines() for k in ("local", "ray"))
    labels = [json.loads(a)["label"] == json.loads(b)["label"] for a, b in zip(local, spread, strict=True)]
    out["same_labels"] = float(np.mean(labels))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a finished MiniLM run to export for the prediction section")
    parser.add_argument("--no-tiny", action="store_true", help="skip the 1M-row section with a tiny encoder")
    parser.add_argument("--sections", nargs="+", default=["overhead", "predict", "cv", "grid"])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result = {"command": "python " + " ".join(sys.argv), "machine": machine_info(), "sections": {}}
    if Path(args.out).exists():  # sections measured before stay, with the commands that measured them
        before = json.loads(Path(args.out).read_text())
        result["sections"] = before["sections"]
        result["command"] = " ; ".join(dict.fromkeys([before["command"], result["command"]]))
    with tempfile.TemporaryDirectory(prefix="scale_out_", dir=ROOT / "runs") as scratch:
        folder = Path(scratch)
        for section in args.sections:
            if section == "overhead":
                result["sections"]["overhead"] = overhead()
            elif section == "predict":
                export = folder / "minilm_onnx"
                export_model(args.run, export, engine="onnx", echo=None)
                result["sections"]["predict_minilm_100k"] = predict(folder, export, 100_000, "minilm_100k")
                if not args.no_tiny:
                    tiny = folder / "tiny_onnx"
                    export_model(tiny_run(folder), tiny, engine="onnx", echo=None)
                    result["sections"]["predict_tiny_1m"] = predict(folder, tiny, 1_000_000, "tiny_1m")
            elif section == "cv":
                result["sections"]["cv_5_folds"] = cv(folder)
            elif section == "grid":
                result["sections"]["grid_4_experiments"] = grid(folder)
            Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result["sections"], indent=2))


if __name__ == "__main__":
    main()
