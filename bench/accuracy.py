"""Accuracy benchmark: train one experiment config end to end and record its metrics and cost.

Runs exactly what ``workbench train --config CONFIG`` runs, times the whole fit on this machine and writes
the validation/test metrics, wall time and training throughput to a JSON file, next to the TF-IDF +
logistic-regression reference for the same dataset (from bench/results/tfidf_baselines.json, produced
by bench/tfidf_baselines.py).

Run:
    python bench/accuracy.py --config configs/sst2_full.yaml --out bench/results/sst2_accuracy.json
    python bench/accuracy.py --config configs/reuters.yaml --out bench/results/reuters_accuracy.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import transformers

from workbench import TextClassificationModel, TextDataModule, Trainer, load_config
from workbench.runs import machine_info

REFERENCE = Path(__file__).resolve().parent / "results" / "tfidf_baselines.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("overrides", nargs="*", help="dotted overrides, as for workbench train")
    args = parser.parse_args()
    cfg = load_config(args.config, args.overrides)
    transformers.set_seed(cfg.train.seed)
    start = time.perf_counter()
    dm = TextDataModule(config=cfg.data, model_name=cfg.model.backbone, seed=cfg.train.seed).setup()
    setup_seconds = time.perf_counter() - start
    model = TextClassificationModel(cfg.model, labels=dm.label_names, multi_label=dm.multi_label, seed=cfg.train.seed)
    result = Trainer(cfg, checkpoint_dir=None).fit(model, dm, full_config=cfg)
    wall = time.perf_counter() - start
    reference = None
    if REFERENCE.exists():
        reference = json.loads(REFERENCE.read_text()).get("datasets", {}).get(cfg.data.dataset)
    out = {
        "command": "python " + " ".join(sys.argv),
        "config": cfg.to_dict(),
        "run_dir": str(result.run_dir),
        "train_examples": len(dm.train_dataset),
        "validation_examples": len(dm.val_dataset),
        "test_examples": len(dm.test_dataset) if dm.test_dataset is not None else None,
        "setup_seconds": setup_seconds,
        "wall_seconds": wall,
        "train": result.metrics["train"],
        "validation": {k: v for k, v in result.metrics["validation"].items() if not isinstance(v, (dict, list))},
        "test": {k: v for k, v in result.metrics.get("test", {}).items() if not isinstance(v, (dict, list))} or None,
        "tfidf_reference": reference,
        "machine": machine_info(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    scores = out["test"] or out["validation"]
    print(
        json.dumps({k: scores[k] for k in ("accuracy", "macro_f1", "micro_f1") if k in scores}),
        f"wall {wall:.0f} s, {result.metrics['train']['samples_per_s']:.1f} train samples/s",
    )


if __name__ == "__main__":
    main()
