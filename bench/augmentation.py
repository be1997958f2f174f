"""Augmentation benchmarks (issue 11): does it help, what does each operation cost, what does it add to training.

Three parts, each written into its ``--out`` JSON (updated after every run, so an interrupted benchmark keeps
what finished and ``--out`` of the same file resumes it):

- ``accuracy``: SST-2 and TREC-6 training subsets of 100, 500 and 2,000 examples, 5 seeds each, the default
  MiniLM backbone, augmentation none vs EDA vs AEDA. Every run sees the same number of training items: an
  augmented epoch holds each example and one fresh variant (augment.variants=1), so it runs half the epochs
  of the unaugmented one. Validation (for the best checkpoint) is 500 examples held out of the *rest* of the
  training set; the score is SST-2's GLUE dev accuracy (872 sentences) and TREC's test accuracy (500
  questions), neither seen during training or selection. Back-translation and contextual substitution need
  a MarianMT pair and a masked LM, which this offline machine does not have: pass --ops to add them where
  they exist (e.g. ``--ops none eda aeda back_translation`` with augment.translation_models reachable).
- ``throughput``: sentences per second of each word operation on 20,000 SST-2 training sentences (one
  process, one variant each), with and without the tokenizer encoding the variants as training does; and the
  padding of full SST-2's batches without augmentation, with EDA batched by each epoch's own lengths (what
  training does) and with EDA batched by the originals' lengths. The model operations' throughput is measured
  on models of the real architectures with random weights (see ``_model_throughput``).
- ``overhead``: in one process, the time to make and encode one epoch's EDA variants of all 67,349 SST-2
  training sentences (what every augmented epoch adds, median of three epochs), against the time of a
  training epoch at the items per second that ``train()`` reaches on a tenth of full SST-2 without
  augmentation. Reports the overhead in percent of the augmented epoch (134,698 items with variants=1)
  and, stricter, of an unaugmented one.

Run (from the repository root; bench/README.md's numbers came from these commands):
    python bench/augmentation.py accuracy --out bench/results/augment_accuracy.json
    python bench/augmentation.py throughput --out bench/results/augment_throughput.json
    python bench/augmentation.py overhead --out bench/results/augment_overhead.json
    python bench/augmentation.py markdown --out bench/results/augment_accuracy.json   (the README's table)
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from workbench.augment import Augmenter
from workbench.catalog import load_split
from workbench.config import WORD_AUGMENT_OPS, AugmentConfig, load_config
from workbench.runs import machine_info
from workbench.text import TextProcessor
from workbench.trainer import train

BENCH_ROOT = ROOT / "runs" / "bench_augment"
DATASETS = {
    # validation: 500 held out of the training rows not in the subset; score: a split never trained on
    "sst2": {
        "data.dataset": "sst2",
        "data.val_split": None,
        "data.val_fraction": 0.05,
        "data.val_subset": 500,
        "data.test_split": "validation",
        "data.max_length": 72,
    },
    "trec": {"data.dataset": "trec", "data.val_subset": 500, "data.test_split": "test", "data.max_length": 48},
}
SAMPLES = {100: 2000, 500: 4000, 2000: 8000}  # training items each run sees, by subset size
METHODS = {
    "none": [],
    "eda": ["eda"],
    "aeda": ["aeda"],
    "back_translation": ["back_translation"],
    "contextual": ["contextual"],
}


def _write(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))


def _load(path: Path, part: str) -> dict:
    if path.is_file():
        result = json.loads(path.read_text())
        if result.get("part") == part:
            return result
    return {"part": part, "machine": machine_info(), "command": " ".join(sys.argv)}


def accuracy(args) -> dict:
    out = Path(args.out)
    result = _load(out, "accuracy")
    runs = result.setdefault("runs", [])
    done = {(r["dataset"], r["size"], r["method"], r["seed"]) for r in runs}
    for seed in range(args.seeds):
        for dataset in args.datasets:
            for size in args.sizes:
                for method in args.ops:
                    if (dataset, size, method, seed) in done:
                        continue
                    augmented = bool(METHODS[method])
                    epochs = SAMPLES[size] / size / (2 if augmented else 1)
                    steps = math.ceil(SAMPLES[size] / 32)
                    overrides = {
                        **DATASETS[dataset],
                        "data.train_subset": size,
                        "train.seed": seed,
                        "train.epochs": epochs,
                        "train.lr": 1e-4,
                        "train.eval_every": max(1, steps // 4),
                        "train.keep_top_k": 1,
                        "augment.ops": METHODS[method],
                        "augment.variants": 1,
                        "augment.alpha": 0.1,
                        "run.root": str(BENCH_ROOT),
                        "run.name": "accuracy",
                    }
                    started = time.time()
                    fit = train(load_config(None, overrides))
                    record = {
                        "dataset": dataset,
                        "size": size,
                        "method": method,
                        "seed": seed,
                        "epochs": epochs,
                        "items": fit.metrics["train"]["examples"] * epochs,
                        "score": fit.metrics["test"]["accuracy"],
                        "validation": fit.metrics["validation"]["accuracy"],
                        "macro_f1": fit.metrics["test"]["macro_f1"],
                        "wall_s": time.time() - started,
                    }
                    runs.append(record)
                    shutil.rmtree(fit.run_dir, ignore_errors=True)  # checkpoints: 270 MB a run
                    print(json.dumps(record), flush=True)
                    result["summary"] = _accuracy_summary(runs)
                    _write(out, result)
    return result


def _accuracy_summary(runs: list[dict]) -> list[dict]:
    groups: dict[tuple, list[float]] = {}
    for r in runs:
        groups.setdefault((r["dataset"], r["size"], r["method"]), []).append(r["score"])
    rows = []
    for (dataset, size, method), scores in sorted(groups.items()):
        base = groups.get((dataset, size, "none"), [])
        rows.append(
            {
                "dataset": dataset,
                "size": size,
                "method": method,
                "seeds": len(scores),
                "mean": statistics.mean(scores),
                "std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
                "gain_vs_none": statistics.mean(scores) - statistics.mean(base) if base else None,
            }
        )
    return rows


def throughput(args) -> dict:
    texts = load_split("sst2", "train")["text"].tolist()[: args.sentences]
    processor = TextProcessor("minilm")
    result = _load(Path(args.out), "throughput")
    result["sentences"] = len(texts)
    rows = []
    for op in WORD_AUGMENT_OPS:
        augmenter = Augmenter(AugmentConfig(ops=[op], alpha=0.1), seed=0)
        augmenter.epoch_variants(texts[:2000], epoch=99)  # warm WordNet's and the synonym cache's first lookups
        started = time.perf_counter()
        variants = augmenter.epoch_variants(texts, epoch=0)
        augment_s = time.perf_counter() - started
        processor.encode([t for _, t in variants])
        encode_s = time.perf_counter() - started - augment_s
        changed = sum(v != t for (_, v), t in zip(variants, texts, strict=True)) / len(texts)
        rows.append(
            {
                "op": op,
                "sentences_per_s": len(texts) / augment_s,
                "with_encoding_per_s": len(texts) / (augment_s + encode_s),
                "changed_fraction": changed,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    started = time.perf_counter()
    processor.encode(texts)
    result["encode_only_per_s"] = len(texts) / (time.perf_counter() - started)
    result["ops"] = rows
    result["model_ops"] = _model_throughput(texts[: args.model_sentences])
    result["padding"] = _padding()
    _write(Path(args.out), result)
    return result


def _model_throughput(texts: list[str]) -> list[dict]:
    """Sentences per second of the model operations, on models of the real architectures with random weights
    (the hub is unreachable here): a MarianMT pair shaped like Helsinki-NLP/opus-mt-en-de (6+6 layers, 512 wide)
    and a BERT-base masked LM (12 layers, 768 wide), both with MiniLM's 30,522-token vocabulary. A random
    decoder rarely ends a sentence, so it runs to the length cap (1.5 x the source + 10 tokens), and
    back-translation's figure is a lower bound on what the real pair does."""
    import tempfile

    import torch
    from transformers import BertConfig, BertForMaskedLM, MarianConfig, MarianMTModel

    from workbench.backbones import load_tokenizer

    tokenizer = load_tokenizer("minilm")
    folder = Path(tempfile.mkdtemp(prefix="bench_augment_models_"))
    torch.manual_seed(0)
    marian = MarianConfig(
        vocab_size=tokenizer.vocab_size,
        d_model=512,
        encoder_layers=6,
        decoder_layers=6,
        encoder_attention_heads=8,
        decoder_attention_heads=8,
        encoder_ffn_dim=2048,
        decoder_ffn_dim=2048,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.sep_token_id,
        decoder_start_token_id=tokenizer.cls_token_id,
        forced_eos_token_id=None,
    )
    MarianMTModel(marian).save_pretrained(folder / "marian")
    BertForMaskedLM(BertConfig(vocab_size=tokenizer.vocab_size)).save_pretrained(folder / "mlm")
    for name in ("marian", "mlm"):
        tokenizer.save_pretrained(folder / name)
    rows = []
    for op, options in [
        ("back_translation", {"translation_models": [str(folder / "marian")] * 2}),
        ("contextual", {"fill_mask_model": str(folder / "mlm")}),
    ]:
        config = AugmentConfig(ops=[op], cache_dir=str(folder / "cache"), **options)
        started = time.perf_counter()
        Augmenter(config, seed=0).model_variants(texts)
        rows.append(
            {
                "op": op,
                "sentences": len(texts),
                "sentences_per_s": len(texts) / (time.perf_counter() - started),
                "note": "random weights of the real architecture, model loading included",
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    shutil.rmtree(folder, ignore_errors=True)
    return rows


def _padding() -> dict:
    """Padded over real tokens of full SST-2's training batches (8,192-token budget, 32 examples at most): without
    augmentation; with EDA (variants=1) batched by each epoch's own lengths, as training does; and with the same
    variants batched by their originals' lengths (what ignoring the length change would cost)."""
    from workbench.data import TextDataModule
    from workbench.sampler import LengthBucketedBatchSampler

    config = load_config(None, {"data.dataset": "sst2", "data.max_length": 72})
    plain = TextDataModule(config=config.data, model_name="minilm").setup()
    augmented = TextDataModule(
        config=config.data, model_name="minilm", augment=AugmentConfig(ops=["eda"], variants=1)
    ).setup()
    out = {"none": plain.train_batch_sampler().padding_ratio()}
    for epoch in (0, 1):
        sampler = augmented.train_batch_sampler()
        sampler.set_epoch(epoch)
        out[f"eda_epoch{epoch}"] = sampler.padding_ratio()
    dataset = augmented.train_dataset
    n = len(dataset.base)
    as_originals = np.concatenate([dataset.base.lengths, dataset.base.lengths])  # variants planned as their originals
    naive = LengthBucketedBatchSampler(as_originals, 8192, 32, seed=42)
    order = np.lexsort((np.random.default_rng(42).random(2 * n), as_originals))
    bounds = np.cumsum([0, *naive.sizes])
    actual = dataset.lengths[order]
    padded = sum(actual[a:b].max() * (b - a) for a, b in itertools.pairwise(bounds))
    out["eda_batched_by_original_lengths"] = float(padded / actual.sum())
    return out


def overhead(args) -> dict:
    """On-the-fly augmentation's share of a full SST-2 epoch, in one process: the time to make and encode one
    epoch's EDA variants of all 67,349 sentences (``AugmentedDataset.set_epoch``, what each augmented epoch
    adds), against the training time of an epoch at the items per second of an unaugmented run over a tenth
    of full SST-2."""
    from workbench.data import TextDataModule

    result = _load(Path(args.out), "overhead")
    base = {"data.dataset": "sst2", "data.max_length": 72}
    config = load_config(None, {**base, "augment.ops": ["eda"], "augment.variants": 1})
    dm = TextDataModule(config=config.data, model_name="minilm", augment=config.augment).setup()
    timings = []
    for epoch in (1, 2, 3):
        started = time.perf_counter()
        dm.train_dataset.set_epoch(epoch)
        timings.append(time.perf_counter() - started)
    n = len(dm.train_dataset.base)
    result["augment_epoch_s"] = statistics.median(timings)
    result["augment_epoch_s_each"] = timings
    result["variants_per_epoch"] = len(dm.train_dataset) - n
    _write(Path(args.out), result)
    fit = train(
        load_config(
            None,
            {
                **base,
                "train.lr": 1e-4,
                "train.epochs": args.fraction,
                "train.eval_every": 0,
                "run.root": str(BENCH_ROOT),
                "run.name": "overhead",
            },
        )
    )
    items_per_s = fit.metrics["train"]["samples_per_s"]
    shutil.rmtree(fit.run_dir, ignore_errors=True)
    result["training_items_per_s"] = items_per_s
    result["trained_fraction_of_epoch"] = args.fraction
    plain_epoch = n / items_per_s
    augmented_epoch = 2 * n / items_per_s
    result["plain_epoch_s"] = plain_epoch
    result["augmented_epoch_s"] = augmented_epoch
    result["overhead_percent_of_augmented_epoch"] = 100 * result["augment_epoch_s"] / augmented_epoch
    result["overhead_percent_of_plain_epoch"] = 100 * result["augment_epoch_s"] / plain_epoch
    _write(Path(args.out), result)
    print(json.dumps({k: v for k, v in result.items() if k not in ("machine", "command")}, indent=1))
    return result


def markdown(args) -> dict:
    """The accuracy JSON as bench/README.md's table: mean ± std in percent per dataset, size and method."""
    result = json.loads(Path(args.out).read_text())
    rows = {(r["dataset"], r["size"], r["method"]): r for r in result["summary"]}
    methods = [m for m in METHODS if any(key[2] == m for key in rows)]
    score = {"sst2": "SST-2 dev accuracy", "trec": "TREC-6 test accuracy"}
    print("| data | examples | seeds | " + " | ".join(methods) + " |")
    print("| --- | ---: | ---: | " + " | ".join("---:" for _ in methods) + " |")
    for dataset, size in sorted({key[:2] for key in rows}):
        cells = []
        for method in methods:
            row = rows.get((dataset, size, method))
            if row is None:
                cells.append("")
                continue
            gain = "" if method == "none" else f" ({100 * row['gain_vs_none']:+.1f})"
            cells.append(f"{100 * row['mean']:.1f} ± {100 * row['std']:.1f}{gain}")
        seeds = min(rows[(dataset, size, m)]["seeds"] for m in methods if (dataset, size, m) in rows)
        print(f"| {score.get(dataset, dataset)} | {size:,} | {seeds} | " + " | ".join(cells) + " |")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["accuracy", "throughput", "overhead", "markdown"])
    parser.add_argument("--out", required=True)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SAMPLES))
    parser.add_argument("--ops", nargs="+", default=["none", "eda", "aeda"], choices=list(METHODS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--sentences", type=int, default=20000)
    parser.add_argument("--model-sentences", type=int, default=256)
    parser.add_argument("--fraction", type=float, default=0.1, help="overhead: share of an SST-2 epoch to train")
    args = parser.parse_args()
    result = {"accuracy": accuracy, "throughput": throughput, "overhead": overhead, "markdown": markdown}[args.part](
        args
    )
    if args.part == "accuracy":
        for row in result["summary"]:
            gain = "" if row["gain_vs_none"] is None else f"  {100 * row['gain_vs_none']:+.1f} points"
            print(
                f"{row['dataset']:5s} {row['size']:5d} {row['method']:17s} {100 * row['mean']:.1f} ± "
                f"{100 * row['std']:.1f} ({row['seeds']} seeds){gain}"
            )


if __name__ == "__main__":
    main()
