"""Active-learning benchmark (issue 24): simulated learning curves of query strategies against random.

Each (dataset, strategy, seed) is one `workbench.active.simulate` study: a cold start of ``--initial`` random texts,
then rounds of ``--batch`` until ``--max-labels``, each round a MiniLM fine-tuning run scored on the dataset's
evaluation split. Studies resume from their ``curve.json``, so an interrupted benchmark loses at most a round::

    python bench/active_learning.py --datasets trec --strategies random breaking_ties --seeds 0 1 2 \\
        --max-labels 500 --out bench/results/active_learning.json

- SST-2: scored on dev (872); the pool is train less 200 held out for validation.
- TREC-6: scored on test (500); the pool is train less 200 held out for validation.
- AG News: its 7,600-story test split only, split (seed 0) into a pool of 5,600 and an evaluation part of 2,000.

The JSON has every curve, and per dataset and strategy the mean curve's area (mean accuracy over the labels
range), last accuracy and the labels at which it first reaches random's last accuracy (the goal: at most half of
random's labels).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import transformers
from splits import ag_news_test_parts

from workbench import load_config
from workbench.active import curve_points, curve_table, simulate
from workbench.runs import machine_info

WORK = Path("runs/active_bench")
DATASETS = {
    "sst2": {"data.dataset": "sst2", "data.test_split": "validation", "data.val_split": None},
    "trec": {"data.dataset": "trec", "data.test_split": "test", "data.val_split": None},
    "ag_news": {},
}


def ag_news_files() -> dict:
    pool, evaluation = WORK / "ag_news_pool.parquet", WORK / "ag_news_eval.parquet"
    if not (pool.exists() and evaluation.exists()):
        WORK.mkdir(parents=True, exist_ok=True)
        scored, rest = ag_news_test_parts(2000, None)
        rest.to_parquet(pool)
        scored.to_parquet(evaluation)
    return {"data.train_file": str(pool), "data.test_file": str(evaluation), "data.max_length": 128}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["trec"], choices=list(DATASETS))
    parser.add_argument("--strategies", nargs="+", default=["random", "breaking_ties"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--initial", type=int, default=20)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--max-labels", type=int, default=500)
    parser.add_argument("--pool-size", type=int, default=None)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. train.epochs=5")
    args = parser.parse_args()
    data = json.loads(args.out.read_text()) if args.out.exists() else {}
    command = "python " + " ".join(sys.argv)
    if command not in data.setdefault("commands", []):  # studies added by later calls keep the earlier calls' commands
        data["commands"].append(command)
    for dataset in args.datasets:
        base = {
            "data.max_length": 64,
            "data.val_subset": 200,
            "train.epochs": 5,
            "train.lr": 1e-4,
            "data.batch_size": 16,
            "active.initial": args.initial,
            "active.batch": args.batch,
            "active.max_labels": args.max_labels,
            "active.pool_size": args.pool_size,
            "run.root": str(WORK),
            "run.name": dataset,
            **DATASETS[dataset],
            **(ag_news_files() if dataset == "ag_news" else {}),
        }
        curves = data.setdefault("curves", {}).setdefault(dataset, {})
        for strategy in args.strategies:
            for seed in args.seeds:
                start = time.perf_counter()
                config = load_config(None, {**base, "train.seed": seed}).updated(args.overrides)
                curve = simulate(config, strategy)
                curve["wall_seconds_this_call"] = time.perf_counter() - start
                curves[f"{strategy}/seed{seed}"] = curve
                points = curve_points(list(curves.values()))
                random = points[points["strategy"] == "random"].groupby("labels")["accuracy"].mean()
                target = float(random.iloc[-1]) if len(random) else None
                data.setdefault("summary", {})[dataset] = {
                    "random_last_accuracy": target,
                    "strategies": curve_table(points, target).reset_index().to_dict(orient="records"),
                }
                data.update(
                    command=command,
                    settings=base,
                    machine=machine_info(),
                    versions={"torch": torch.__version__, "transformers": transformers.__version__},
                )
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(data, indent=2))
                last = curve["rounds"][-1]
                print(f"{dataset} {strategy} seed {seed}: {last['labels']} labels, {last['accuracy']:.4f}", flush=True)


if __name__ == "__main__":
    main()
