"""Two training processes on this machine against one (issue 13), measured side by side.

Trains the default backbone on an SST-2 subset once in one process and once with ``torchrun --nproc_per_node 2``
(gloo on the CPU; each process gets half of every global batch, so the global batch is the same: the single
process uses twice the per-device batch size). Reports samples/s, the ratio, optimizer steps and dev accuracy
from each run's ``metrics.json``. On a 2-core machine no gain is expected: torchrun gives each process one thread
(OMP_NUM_THREADS=1) where the single process uses both cores, and the processes add gradient all-reduces. The
point of multi-process training is correctness at scale; the CI test checks that.

Run (from the repository root, nothing else running; bench/README.md's numbers came from this command):
    python bench/distributed.py --train-subset 4000 --out bench/results/distributed.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from workbench.runs import RunDir, machine_info


def _train(launcher: list[str], name: str, batch_size: int, args) -> dict:
    overrides = [
        "data.dataset=sst2",
        f"data.train_subset={args.train_subset}",
        "data.max_length=72",
        f"data.batch_size={batch_size}",
        "train.epochs=1",
        "train.lr=1e-4",
        f"run.name={name}",
        "run.root=runs/bench_distributed",
    ]
    started = time.perf_counter()
    subprocess.run(
        [*launcher, "-m", "workbench", "train", *overrides],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - started
    run = RunDir.latest(ROOT / "runs" / "bench_distributed", name)
    metrics = run.read_json(RunDir.METRICS)
    return {
        "processes": metrics["processes"],
        "per_process_batch": batch_size,
        "wall_s": wall,
        "train_runtime_s": metrics["train"]["runtime_s"],
        "samples_per_s": metrics["train"]["samples_per_s"],
        "optimizer_steps": metrics["train"]["optimizer_steps"],
        "dev_accuracy": metrics["validation"]["accuracy"],
        "run_dir": str(run.path),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-subset", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=32, help="the global batch")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    one = _train([sys.executable], "one_process", args.batch_size, args)
    print("1 process:", one, flush=True)
    two = _train(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"],
        "two_processes",
        args.batch_size // 2,
        args,
    )
    print("2 processes:", two, flush=True)
    result = {
        "machine": machine_info(),
        "command": " ".join(["python", *sys.argv]),
        "train_subset": args.train_subset,
        "global_batch": args.batch_size,
        "one": one,
        "two": two,
        "speed_ratio_two_over_one": two["samples_per_s"] / one["samples_per_s"],
    }
    print(f"2 processes / 1: {result['speed_ratio_two_over_one']:.2f}x samples/s")
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
