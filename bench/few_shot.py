"""Few-shot benchmark (issue 23): SetFit against standard fine-tuning against frozen embeddings + logistic regression.

For each dataset, shot count (examples per class; 0 = zero-shot, SetFit on templated label descriptions) and seed,
one ordinary run per method, all on the same backbone (MiniLM unless ``--backbone``), scored on a split no method
uses for anything else::

    python bench/few_shot.py --datasets sst2 trec ag_news --shots 0 8 16 32 64 --seeds 0 1 2 3 4 \\
        --out bench/results/few_shot.json

- SST-2: scored on its dev split (872); validation (the fine-tuning's checkpoint choice) is 200 sentences held out
  of train, the shots drawn from the rest.
- TREC-6: scored on its test split (500); validation as SST-2's.
- AG News: only its 7,600-story test split is in the data folder, so it is split (seed 0, stratified) into a labelled
  pool of 2,000 stories (200 of them held out for validation, the shots drawn from the rest) and an evaluation part
  of 2,000 others.

Methods: ``setfit`` (train.method=setfit, the setfit section's defaults: 20 pair iterations, 1 epoch, logistic
regression), ``frozen`` (the same head on the untrained sentence encoder: setfit.body_epochs=0), ``finetune`` (the
workbench's fine-tuning: batch 8, 20 epochs, lr 1e-4, the best epoch on validation kept). ``--out`` is rewritten
after every run and runs already in it are skipped, so an interrupted benchmark resumes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers
from splits import ag_news_test_parts

from workbench import load_config, train
from workbench.runs import machine_info

SCORES = ("accuracy", "macro_f1")
WORK = Path("runs/few_shot")

DATASETS = {
    "sst2": {
        "overrides": {"data.dataset": "sst2", "data.test_split": "validation", "data.max_length": 64},
        "template": "This sentence is {}.",
        "descriptions": {"negative": "negative", "positive": "positive"},
        "scored_on": "SST-2 dev (872 sentences)",
    },
    "trec": {
        "overrides": {"data.dataset": "trec", "data.test_split": "test", "data.max_length": 64},
        "template": "This question asks for {}.",
        "descriptions": {
            "ABBR": "an abbreviation",
            "DESC": "a description",
            "ENTY": "an entity",
            "HUM": "a person",
            "LOC": "a location",
            "NUM": "a number",
        },
        "scored_on": "TREC-6 test (500 questions)",
    },
    "ag_news": {
        "overrides": {"data.max_length": 128},
        "template": "This news story is about {}.",
        "descriptions": {
            "World": "world politics",
            "Sports": "sports",
            "Business": "business",
            "Sci/Tech": "science and technology",
        },
        "scored_on": "AG News: 2,000 stories of its test split, apart from a 2,000-story labelled pool",
    },
}

METHODS = {
    "setfit": {"train.method": "setfit"},
    "frozen": {"train.method": "setfit", "setfit.body_epochs": 0},
    "setfit_templates": {"train.method": "setfit", "setfit.template_examples": 8},  # + 8 templated examples a label
    "finetune": {"train.method": "finetune", "data.batch_size": 8, "train.epochs": 20, "train.lr": 1e-4},
}


def ag_news_files() -> dict:
    """The AG News pool (2,000) and evaluation part (2,000) of its test split, written once under ``WORK``."""
    pool, evaluation = WORK / "ag_news_pool.parquet", WORK / "ag_news_eval.parquet"
    if not (pool.exists() and evaluation.exists()):
        WORK.mkdir(parents=True, exist_ok=True)
        labelled, scored = ag_news_test_parts(2000, 2000)
        labelled.to_parquet(pool)
        scored.to_parquet(evaluation)
    return {"data.train_file": str(pool), "data.test_file": str(evaluation)}


def config_for(dataset: str, method: str, shots: int, seed: int, backbone: str):
    spec = DATASETS[dataset]
    overrides = {
        **spec["overrides"],
        **(ag_news_files() if dataset == "ag_news" else {"data.val_split": None}),
        "data.val_subset": 200,
        "model.backbone": backbone,
        "train.seed": seed,
        "run.root": str(WORK),
        "run.name": f"{dataset}_{method}_{shots}_{seed}",
        **METHODS[method],
    }
    if dataset == "ag_news":  # no validation file: 10% of the 2,000-story pool is held out
        overrides["data.val_fraction"] = 0.1
    if method == "setfit_templates":
        overrides.update({"setfit.template": spec["template"], "data.label_descriptions": spec["descriptions"]})
    if shots:
        overrides["data.shots"] = shots
    else:
        overrides.update(
            {
                "setfit.zero_shot": True,
                "setfit.template": spec["template"],
                "data.label_descriptions": spec["descriptions"],
            }
        )
    return load_config(None, overrides)


def summarise(results: dict) -> dict:
    """Mean and standard deviation of each (dataset, method, shots) over its seeds."""
    groups: dict[str, list] = {}
    for key, entry in results.items():
        groups.setdefault(key.rsplit("/seed", 1)[0], []).append(entry)
    table = {}
    for key, entries in sorted(groups.items()):
        scores = [e["test"]["accuracy"] for e in entries]
        table[key] = {
            "seeds": len(scores),
            "accuracy_mean": statistics.mean(scores),
            "accuracy_std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
            "macro_f1_mean": statistics.mean(e["test"]["macro_f1"] for e in entries),
            "train_seconds_mean": statistics.mean(e["train_seconds"] for e in entries),
        }
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--shots", nargs="+", type=int, default=[0, 8, 16, 32, 64])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--methods", nargs="+", default=["setfit", "frozen", "finetune"], choices=list(METHODS))
    parser.add_argument("--backbone", default="minilm")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    data = json.loads(args.out.read_text()) if args.out.exists() else {}
    results = data.get("runs", {})
    for dataset in args.datasets:
        for shots in args.shots:
            for method in ["setfit"] if shots == 0 else args.methods:
                for seed in args.seeds:
                    key = f"{dataset}/{method}/{shots}/seed{seed}"
                    if key in results:
                        continue
                    start = time.perf_counter()
                    run = train(config_for(dataset, method, shots, seed, args.backbone))
                    results[key] = {
                        "test": {k: run.metrics["test"][k] for k in SCORES},
                        "validation": {k: run.metrics["validation"][k] for k in SCORES},
                        "train_seconds": run.metrics["train"]["runtime_s"],
                        "wall_seconds": time.perf_counter() - start,
                        "run_dir": str(run.run_dir),
                    }
                    print(key, json.dumps(results[key]["test"]), f"{results[key]['wall_seconds']:.0f} s", flush=True)
                    data.update(
                        {
                            "command": "python " + " ".join(sys.argv),
                            "backbone": args.backbone,
                            "scored_on": {name: DATASETS[name]["scored_on"] for name in DATASETS},
                            "methods": METHODS,
                            "machine": machine_info(),
                            "versions": {
                                "torch": torch.__version__,
                                "transformers": transformers.__version__,
                            },
                            "runs": results,
                            "summary": summarise(results),
                        }
                    )
                    args.out.parent.mkdir(parents=True, exist_ok=True)
                    args.out.write_text(json.dumps(data, indent=2))


if __name__ == "__main__":
    main()
