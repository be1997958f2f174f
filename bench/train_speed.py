"""Training speed, side by side: workbench against plain ``transformers.Trainer``.

Every variant fine-tunes the same backbone (all-MiniLM-L6-v2) on the same stratified subset of GLUE
SST-2 train for one epoch with the same hyperparameters (lr, batch size 32, warmup, weight decay,
max_length) and is scored on the full SST-2 dev set. The variants run one after another in one process,
so they share the machine's conditions; compare the ratios, not the absolute times.

- ``hf_random``: plain ``transformers.Trainer`` + ``AutoModelForSequenceClassification``, random batches
  with dynamic padding (``DataCollatorWithPadding``).
- ``hf_group_by_length``: the same with ``train_sampling_strategy="group_by_length"``.
- ``workbench``: our Trainer with its defaults (token-budget length-bucketed batches, frozen word
  embeddings, mean pooling).
- ``workbench_trainable_embeddings``: ours with ``model.freeze_embeddings=false``, to show what
  the batching alone buys.
- ``workbench_bf16``: ours with bf16 autocast (``train.precision=bf16``), against ``workbench`` in fp32: on a CPU
  with AMX (Intel Xeon, 4th generation on) bf16 matrix products run on the matrix units.

``--backbone mpnet --batch-size 64 --lr 4e-5`` times the distillation teacher (all-mpnet-base-v2, `make mpnet`) with
the settings of configs/sst2_mpnet.yaml.

Run:  python bench/train_speed.py --samples 10000 --out bench/results/train_speed.json
      python bench/train_speed.py --samples 4000 --backbone mpnet --batch-size 64 --lr 4e-5 --only workbench \
          workbench_bf16 --out bench/results/train_speed_bf16_mpnet.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, TrainingArguments

from workbench import TextClassificationModel, TextDataModule, Trainer
from workbench.backbones import resolve_backbone
from workbench.runs import machine_info

LR, BATCH, WARMUP, DECAY, MAX_LENGTH, SEED = 5e-5, 32, 0.06, 0.01, 128, 42


def hf_run(
    dm: TextDataModule, strategy: str, workdir: Path, device: str = "cpu", precision: str = "32", lr: float = LR
) -> dict:
    """Plain transformers.Trainer on the very same encoded examples."""
    transformers.set_seed(SEED)
    path = resolve_backbone(dm.model_name)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=dm.num_labels)
    args = TrainingArguments(
        output_dir=str(workdir / f"hf_{strategy}"),
        num_train_epochs=1,
        learning_rate=lr,
        weight_decay=DECAY,
        warmup_steps=WARMUP,
        per_device_train_batch_size=dm.config.batch_size,
        per_device_eval_batch_size=128,
        train_sampling_strategy=strategy,
        eval_strategy="epoch",
        save_strategy="no",
        logging_steps=50,
        report_to="none",
        seed=SEED,
        use_cpu=device == "cpu",
        disable_tqdm=True,
        remove_unused_columns=False,
        fp16=precision == "16",
        bf16=precision == "bf16",
    )

    def accuracy(prediction):
        return {"accuracy": float((prediction.predictions.argmax(1) == prediction.label_ids).mean())}

    trainer = transformers.Trainer(
        model=model,
        args=args,
        train_dataset=dm.train_dataset,
        eval_dataset=dm.val_dataset,
        data_collator=DataCollatorWithPadding(dm.tokenizer),
        compute_metrics=accuracy,
    )
    seconds = trainer.train().metrics["train_runtime"]  # wall time of train(), its one evaluation included
    accuracy_value = trainer.evaluate()["eval_accuracy"]
    return {"train_seconds": seconds, "dev_accuracy": accuracy_value, "optimizer_steps": trainer.state.global_step}


def workbench_run(
    dm: TextDataModule, freeze: bool, workdir: Path, device: str = "cpu", precision: str = "32", lr: float = LR
) -> dict:
    model = TextClassificationModel(dm.model_name, num_classes=dm.num_labels, freeze_embeddings=freeze)
    trainer = Trainer(
        max_epochs=1,
        lr=lr,
        warmup=WARMUP,
        weight_decay=DECAY,
        seed=SEED,
        log_every=50,
        device=device,
        precision=precision,
        run_root=str(workdir),
        run_name=f"wb_freeze_{freeze}_{precision}",
        checkpoint_dir=None,
    )
    start = time.perf_counter()
    result = trainer.fit(model, dm)
    fit_seconds = time.perf_counter() - start
    # train_seconds is the same quantity as for the HF variants: the wall time of transformers.Trainer.train()
    return {
        "train_seconds": result.metrics["train"]["runtime_s"],
        "fit_seconds": fit_seconds,
        "fit_seconds_includes": "train() plus final evaluation and saving the run",
        "dev_accuracy": result.metrics["validation"]["accuracy"],
        "optimizer_steps": result.metrics["train"]["optimizer_steps"],
        "precision": trainer.precision,
    }


def padded_tokens(lengths: np.ndarray, batches: list[list[int]]) -> int:
    return int(sum(lengths[b].max() * len(b) for b in batches))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument("--out", default="bench/results/train_speed.json")
    parser.add_argument("--workdir", default="/tmp/workbench_bench_speed")
    parser.add_argument("--only", nargs="*", default=None, help="run only these variants")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument(
        "--precision", default="32", choices=("32", "16", "bf16"), help="of every variant but workbench_bf16"
    )
    parser.add_argument("--backbone", default="minilm", help="alias, folder or hub name (mpnet: `make mpnet`)")
    parser.add_argument("--batch-size", type=int, default=BATCH)
    parser.add_argument("--lr", type=float, default=LR)
    args = parser.parse_args()
    workdir = Path(args.workdir)
    torch.manual_seed(SEED)
    dm = TextDataModule(
        dataset="sst2",
        model_name=args.backbone,
        train_subset=args.samples,
        max_length=MAX_LENGTH,
        batch_size=args.batch_size,
        seed=SEED,
    ).setup()
    lengths = dm.train_dataset.lengths
    rng = np.random.default_rng(0)
    random_batches = np.array_split(rng.permutation(len(lengths)), int(np.ceil(len(lengths) / BATCH)))
    padding = {
        "real_tokens": int(lengths.sum()),
        "random_batches_padded_tokens": padded_tokens(lengths, random_batches),
        "workbench_padded_tokens": padded_tokens(lengths, dm.train_batch_sampler().batches()),
    }
    variants = {
        "hf_random": lambda: hf_run(dm, "random", workdir, args.device, args.precision, args.lr),
        "hf_group_by_length": lambda: hf_run(dm, "group_by_length", workdir, args.device, args.precision, args.lr),
        "workbench": lambda: workbench_run(dm, True, workdir, args.device, args.precision, args.lr),
        "workbench_trainable_embeddings": lambda: workbench_run(
            dm, False, workdir, args.device, args.precision, args.lr
        ),
        "workbench_bf16": lambda: workbench_run(dm, True, workdir, args.device, "bf16", args.lr),
    }
    results = {}
    for name, run in variants.items():
        if args.only and name not in args.only:
            continue
        print(f"== {name}", flush=True)
        results[name] = run()
        results[name]["samples_per_s"] = len(lengths) / results[name]["train_seconds"]
        print(name, results[name], flush=True)
    table = []
    for name, row in results.items():
        ratios = {
            f"speedup_vs_{base}": row["samples_per_s"] / results[base]["samples_per_s"]
            for base in ("hf_random", "hf_group_by_length", "workbench")
            if base in results and base != name
        }
        row.update(ratios)
        table.append(
            f"{name:32s} {row['samples_per_s']:8.1f} samples/s  dev acc {row['dev_accuracy']:.4f}  "
            + "  ".join(f"{k[11:]} x{v:.2f}" for k, v in ratios.items())
        )
    print("\n".join(table))
    out = {
        "command": "python " + " ".join(sys.argv),
        "samples": len(lengths),
        "dev_examples": len(dm.val_dataset),
        "backbone": args.backbone,
        "hyperparameters": {
            "lr": args.lr,
            "batch_size": args.batch_size,
            "warmup_ratio": WARMUP,
            "weight_decay": DECAY,
            "max_length": MAX_LENGTH,
            "epochs": 1,
            "seed": SEED,
            "device": args.device,
            "precision": args.precision,
        },
        "padding": padding,
        "results": results,
        "machine": machine_info(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
