"""Benchmarks of the evaluation suite, on the default backbone and this machine.

- ``cv``: TREC-6, 5-fold cross-validation (train split), mean ± std accuracy and macro-F1 on the held-out
  folds and on the 500 test questions. Calibration is measured twice: in distribution, by cross-fitting
  on each fold's held-out part (fit the temperature on one half, score the other half, and swap), and on
  the test questions, with the temperature fitted on the fold's whole held-out part.
- ``noise``: SST-2, a stratified training subset with 2% of its labels flipped (known only here), k-fold
  out-of-fold probabilities, cleanlab's label-issue finder; precision and recall at catching the flips.
- ``attribution``: seconds per example and peak memory of integrated gradients (n_steps 50) on SST-2 dev
  sentences and on 512-token IMDB reviews.
- ``inference``: the PyTorch eager latency / throughput table on SST-2 dev, batch 1 to 64.

Run:
    python bench/evaluation_suite.py --out bench/results/evaluation_suite.json            # everything
    python bench/evaluation_suite.py --only inference attribution --out /tmp/part.json

``--out`` is updated section by section, so a partial run keeps the other sections of an earlier one.
``--work DIR`` reuses the cross-validation folds that an earlier run finished there.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

import workbench
from workbench import TextClassificationModel, TextDataModule
from workbench.analysis import label_issues
from workbench.calibration import calibrate_model, calibration_metrics, fit_temperature, rescale
from workbench.cv import cross_validate
from workbench.explain import token_attributions
from workbench.inference import benchmark_inference
from workbench.runs import load_run, machine_info


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cv_benchmark(work: Path, folds: int, epochs: float) -> dict:
    config = workbench.load_config(
        "configs/trec.yaml",
        {"train.epochs": epochs, "run.root": str(work), "run.name": "trec_cv", "data.test_split": "test"},
    )
    start = time.perf_counter()
    result = cross_validate(config, n_folds=folds)
    seconds = time.perf_counter() - start
    test_ece = []
    held_out = _cross_fitted_calibration(result)
    for fold in result.summary["folds"]:
        run = load_run(fold["run_dir"])
        model = TextClassificationModel.from_pretrained(run.model_dir)
        dm = TextDataModule.for_model(model, text_column="text", label_column="label")
        test = dm.encode_file(Path(run.config.data.test_file))
        logits = model.logits_of(test.features).numpy()
        y = np.asarray([f["labels"] for f in test.features])
        before = model.proba_from_logits(logits)
        temperature = calibrate_model(model, dm.encode_file(Path(run.config.data.val_file)))["temperature"]
        after = model.proba_from_logits(logits)
        test_ece.append(
            {
                "fold": fold["fold"],
                "temperature": temperature,
                "accuracy": float((logits.argmax(1) == y).mean()),
                "mean_confidence_before": float(before.max(1).mean()),
                "mean_confidence_after": float(after.max(1).mean()),
                "before": calibration_metrics(y, before),
                "after": calibration_metrics(y, after),
            }
        )
    mean, std = result.summary["mean"], result.summary["std"]
    return {
        "folds": folds,
        "epochs": epochs,
        "seconds": seconds,
        "examples": result.summary["examples"],
        "held_out": {k: {"mean": mean[k], "std": std[k]} for k in ("accuracy", "macro_f1")},
        "test": {k: {"mean": mean[f"test_{k}"], "std": std[f"test_{k}"]} for k in ("accuracy", "macro_f1")},
        "held_out_calibration": held_out,
        "test_calibration": test_ece,
        "test_ece_before": float(np.mean([r["before"]["ece"] for r in test_ece])),
        "test_ece_after": float(np.mean([r["after"]["ece"] for r in test_ece])),
    }


def _cross_fitted_calibration(result, seed: int = 0) -> dict:
    """ECE before and after temperature scaling on the held-out folds, never scoring where T was fitted.

    Each fold's held-out examples are split in two random halves; the temperature fitted on one half
    rescales the other half's out-of-fold probabilities, and then the halves swap.
    """
    names = result.label_names
    proba = result.proba
    y = np.asarray([names.index(label) for label in result.given_labels])
    after = np.empty_like(proba)
    temperatures = []
    rng = np.random.default_rng(seed)
    folds = result.oof["fold"].to_numpy()
    for fold in np.unique(folds):
        index = rng.permutation(np.flatnonzero(folds == fold))
        halves = np.array_split(index, 2)
        for fit, score in ((halves[0], halves[1]), (halves[1], halves[0])):
            temperature = fit_temperature(np.log(np.clip(proba[fit], 1e-12, 1.0)), y[fit])
            after[score] = rescale(proba[score], temperature)
            temperatures.append(temperature)
    return {
        "examples": len(y),
        "accuracy": float((proba.argmax(1) == y).mean()),
        "mean_confidence_before": float(proba.max(1).mean()),
        "mean_confidence_after": float(after.max(1).mean()),
        "temperatures": temperatures,
        "before": calibration_metrics(y, proba),
        "after": calibration_metrics(y, after),
    }


def noise_benchmark(work: Path, subset: int, folds: int, rate: float, epochs: float) -> dict:
    from workbench.catalog import load_split

    train = load_split("sst2", "train").sample(n=subset, random_state=0).reset_index(drop=True)
    rng = np.random.default_rng(1)
    flipped = rng.choice(len(train), round(rate * len(train)), replace=False)
    noisy = train.copy()
    noisy.loc[flipped, "label"] = noisy.loc[flipped, "label"].map(
        {"positive": "negative", "negative": "positive", "0": "1", "1": "0"}
    )
    assert noisy["label"].notna().all(), noisy["label"].unique()
    path = work / "sst2_noisy.parquet"
    noisy[["text", "label"]].to_parquet(path)
    config = workbench.load_config(
        "configs/sst2.yaml",
        {
            "data.dataset": None,
            "data.train_file": str(path),
            "train.eval_every": 0,
            "train.epochs": epochs,
            "run.root": str(work),
            "run.name": f"sst2_noise_{epochs:g}ep",
        },
    )
    start = time.perf_counter()
    result = cross_validate(config, n_folds=folds)
    issues = label_issues(result.given_labels, result.proba, result.label_names, thresholds=result.thresholds)
    ranked = issues["example"].tolist()  # most suspect first
    found, truth = set(ranked), {int(i) for i in flipped}
    hits = len(found & truth)
    first = set(ranked[: len(truth)])  # the suspects a person would read first
    return {
        "subset": subset,
        "noise_rate": rate,
        "flipped": len(truth),
        "folds": folds,
        "epochs": epochs,
        "seconds": time.perf_counter() - start,
        "flagged": len(found),
        "caught": hits,
        "precision": hits / len(found) if found else 0.0,
        "recall": hits / len(truth),
        "precision_at_flipped": len(first & truth) / len(truth),  # among the first len(truth) suspects
        "oof_accuracy_vs_noisy_labels": float((result.oof["predicted"] == result.oof["label"]).mean()),
    }


def attribution_benchmark(model: TextClassificationModel, sentences: int, reviews: int) -> dict:
    from workbench.catalog import load_split

    out = {}
    dev = load_split("sst2", "validation")["text"].tolist()[:sentences]
    imdb = [t for t in load_split("imdb", "test")["text"].tolist() if len(t.split()) > 600][:reviews]
    trained = model.processing
    for name, texts, max_length in (("sst2_dev", dev, 128), ("imdb_512", imdb, 512)):
        model.use_data(processing=replace(trained, max_length=max_length))  # let the reviews through at 512 tokens
        token_counts = [len(model.processor().encode([t])[0]["input_ids"]) for t in texts]
        rss_before = _rss_mib()
        start = time.perf_counter()
        results = token_attributions(model, texts, n_steps=50, internal_batch_size=10)
        seconds = time.perf_counter() - start
        model.use_data(processing=trained)
        out[name] = {
            "examples": len(texts),
            "mean_tokens": float(np.mean(token_counts)),
            "n_steps": 50,
            "internal_batch_size": 10,
            "seconds_per_example": seconds / len(texts),
            "peak_rss_mib": _rss_mib(),
            "peak_rss_growth_mib": _rss_mib() - rss_before,
            "mean_delta": float(np.mean([r.delta for r in results])),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, choices=["cv", "noise", "attribution", "inference"])
    parser.add_argument(
        "--model",
        default=None,
        help="a trained SST-2 run/model for attribution and inference "
        "(default: train 1 epoch on 8,000 sentences first)",
    )
    parser.add_argument(
        "--out",
        default="bench/results/evaluation_suite.json",
        help="JSON result; the sections run now replace those of an earlier run, the rest stay",
    )
    parser.add_argument(
        "--work",
        default=None,
        help="working folder (default: a new temporary one); an earlier "
        "run's folder lets the cross-validation reuse finished folds",
    )
    parser.add_argument("--noise-epochs", type=float, default=1.0, help="epochs of each out-of-fold model")
    args = parser.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="workbench_evaluation_"))
    wanted = set(args.only or ["cv", "noise", "attribution", "inference"])
    command = "python " + " ".join(sys.argv)
    out: dict = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    earlier = out.pop("command", None)  # older results named one command for the whole file
    commands = out.setdefault("commands", {})
    commands.update(
        {
            section: earlier
            for section in ("cv", "noise", "attribution", "inference")
            if section in out and earlier and section not in commands
        }
    )
    commands.update(dict.fromkeys(wanted, command))
    out["machine"] = machine_info()
    if args.work:  # folds finished by an earlier run are read back, so "seconds" below covers only this rerun
        out["reused_folds_from"] = dict.fromkeys(wanted & {"cv", "noise"}, args.work)
    if "cv" in wanted:
        out["cv"] = cv_benchmark(work, folds=5, epochs=2)
        print(
            "cv",
            json.dumps({k: out["cv"][k] for k in ("held_out", "test", "test_ece_before", "test_ece_after")}),
            flush=True,
        )
        print("held-out calibration", json.dumps(out["cv"]["held_out_calibration"]), flush=True)
    if "noise" in wanted:
        out["noise"] = noise_benchmark(work, subset=8000, folds=4, rate=0.02, epochs=args.noise_epochs)
        print("noise", json.dumps(out["noise"]), flush=True)
    if wanted & {"attribution", "inference"}:
        if args.model:
            model = TextClassificationModel.from_pretrained(args.model)
        else:
            config = workbench.load_config(
                "configs/sst2.yaml",
                {"data.train_subset": 8000, "train.eval_every": 0, "run.root": str(work), "run.name": "sst2_small"},
            )
            model = workbench.train(config).model
        model.eval()
        if "inference" in wanted:
            from workbench.catalog import load_split

            texts = load_split("sst2", "validation")["text"].tolist()
            table = benchmark_inference(
                model, texts, batch_sizes=(1, 2, 4, 8, 16, 32, 64), seq_lengths=(None,), repeats=5, batches=10
            )
            out["inference"] = table.to_dict("records")
            print(table.to_string(index=False), flush=True)
        if "attribution" in wanted:
            out["attribution"] = attribution_benchmark(model, sentences=20, reviews=3)
            print("attribution", json.dumps(out["attribution"]), flush=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
