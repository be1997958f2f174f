"""Long-document benchmark (issue 22): IMDB and Reuters truncated against windowed, and AG News by cross-validation.

The long runs are ordinary runs, trained (and resumed, across sessions) with the command line, so a run that
outlives a session loses nothing::

    workbench train --config configs/imdb_head256.yaml        [--resume]
    workbench train --config configs/imdb_headtail512.yaml    [--resume]
    workbench train --config configs/imdb_windows.yaml        [--resume]
    workbench train --config configs/reuters_windows.yaml     [--resume]

``collect`` then reads the finished runs into one JSON: each run's test metrics, training time and machine. A
windowed run is scored on its validation and test splits once per window pooling (``mean``, ``max`` and
``attention``): every window trains on its text's label, so one training serves every row; attention pooling's
scorer is fitted on the validation texts' windows (``--max-texts`` of them at most), as training's end fits it,
when the run was trained with another pooling; a multi-label run's thresholds are tuned on validation for each
pooling. ``ag-news`` runs 5-fold
cross-validation on AG News' 7,600-story test split, the only split in the data folder (labelled as such)::

    python bench/long_documents.py collect --runs runs/imdb_head256 runs/imdb_windows --out bench/results/imdb.json
    python bench/long_documents.py ag-news --folds 5 --out bench/results/ag_news_cv.json

``--out`` is updated run by run, so a partial collection keeps what it has.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import transformers

from workbench import TextClassificationModel, load_config
from workbench.config import WINDOW_POOLING
from workbench.cv import cross_validate
from workbench.evaluation import evaluate_model, run_datamodule, run_split
from workbench.metrics import tune_thresholds
from workbench.runs import load_run, machine_info

SCORES = ("accuracy", "macro_f1", "micro_f1", "examples")


def _update(out: Path, key: str, value: dict) -> None:
    """Write ``value`` under ``key`` into the JSON at ``out``, keeping its other entries."""
    data = json.loads(out.read_text()) if out.exists() else {}
    data.setdefault("commands", [])
    command = "python " + " ".join(sys.argv)
    if command not in data["commands"]:
        data["commands"].append(command)
    data[key] = value
    data["machine"], data["versions"] = (
        machine_info(),
        {"torch": torch.__version__, "transformers": transformers.__version__},
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2))


def collect(runs: list[str], out: Path, max_texts: int) -> None:
    for path in runs:
        run = load_run(path)
        data = run.config.data
        entry = {
            "run_dir": str(run.path),
            "backbone": run.config.model.backbone,
            "truncation": data.truncation,
            "max_length": data.max_length,
            "train": run.metrics["train"],
            "validation": {k: v for k, v in run.metrics["validation"].items() if k in SCORES},
            "cpu": run.env.get("cpu"),
            "precision": run.env.get("precision"),
        }
        if data.truncation == "windows":
            entry.update(stride=data.window_stride, max_windows=data.max_windows, test={}, validation_by_pooling={})
            model = TextClassificationModel.from_pretrained(run.model_dir)
            dm = run_datamodule(run, model)
            test = run_split(run, model, "test")
            for pooling in WINDOW_POOLING:
                if pooling == "attention":  # the saved model again: a run trained with attention keeps its scorer
                    model = TextClassificationModel.from_pretrained(run.model_dir)
                model.use_data(processing=replace(model.processing, window_pooling=pooling))
                start = time.perf_counter()
                if pooling == "attention" and "window_attention" not in run.metrics["train"]:
                    # trained with another pooling: fit the scorer as training's end would have
                    entry["window_attention"] = model.fit_window_attention(
                        dm.val_dataset.features, max_texts=max_texts, seed=run.config.train.seed
                    )
                val_proba = model.predict_proba_features(dm.val_dataset)
                if model.multi_label:  # each pooling its own thresholds, tuned on validation as training tunes them
                    model.thresholds = tune_thresholds(
                        dm.val_dataset.labels, val_proba, default=model.model_config.multi_label_threshold
                    )
                entry["validation_by_pooling"][pooling] = {
                    k: v for k, v in evaluate_model(model, dm.val_dataset, val_proba).items() if k in SCORES
                }
                scores = evaluate_model(model, test)
                entry["test"][pooling] = {k: v for k, v in scores.items() if k in SCORES}
                entry["test"][pooling]["seconds"] = time.perf_counter() - start
        else:
            entry["test"] = {k: v for k, v in run.metrics.get("test", {}).items() if k in SCORES}
        _update(out, run.path.parent.name, entry)
        print(run.path, json.dumps(entry["test"]), flush=True)


def ag_news(folds: int, out: Path, overrides: list[str]) -> None:
    config = load_config("configs/ag_news_cv.yaml", overrides)
    start = time.perf_counter()
    result = cross_validate(config, n_folds=folds)
    summary = result.summary
    _update(
        out,
        "ag_news_cv",
        {
            "note": f"{folds}-fold cross-validation on the 7,600-story AG News test split (no train split here)",
            "config": config.to_dict(),
            "folds": summary["folds"],
            "mean": summary["mean"],
            "std": summary["std"],
            "wall_seconds": time.perf_counter() - start,
        },
    )
    print(json.dumps({k: summary["mean"][k] for k in ("accuracy", "macro_f1")}), json.dumps(summary["std"]["accuracy"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    gather = commands.add_parser("collect", help="finished runs into one JSON (windowed runs: each pooling)")
    gather.add_argument("--runs", nargs="+", required=True)
    gather.add_argument("--out", required=True, type=Path)
    gather.add_argument(
        "--max-texts", type=int, default=4000, help="validation texts that fit attention pooling's scorer (a sample)"
    )
    news = commands.add_parser("ag-news", help="k-fold cross-validation on AG News' test split")
    news.add_argument("--folds", type=int, default=5)
    news.add_argument("--out", required=True, type=Path)
    news.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.command == "collect":
        collect(args.runs, args.out, args.max_texts)
    else:
        ag_news(args.folds, args.out, args.overrides)


if __name__ == "__main__":
    main()
