"""What the notebook workflow costs: the same training run called directly and through `workbench run`.

1. ``direct``: ``workbench.train(config)`` in this process, with the config that ``notebooks/02_train``
   builds from the parameters below.
2. ``notebook``: ``workbench.reports.run_experiments`` on a one-experiment file holding ``02_train`` with
   the same parameters, i.e. a fresh kernel, imports, papermill's cell-by-cell execution, the learning-curve
   figure, and nbconvert's HTML page.

Both run one after another in this process on the same machine; the ratio is the overhead. With
``--experiments FILE`` it then times a whole experiments file (e.g. experiments/sst2.yaml) and records
each notebook's duration from the index.

Run:
    python bench/notebook_overhead.py --train-subset 30000 --experiments experiments/sst2.yaml \
        --out bench/results/notebook_overhead.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import yaml

import workbench
from workbench.reports import run_experiments
from workbench.runs import machine_info

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-subset", type=int, default=30000)
    parser.add_argument("--experiments", default=None, help="also time this experiments file end to end")
    parser.add_argument("--out", default="bench/results/notebook_overhead.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="workbench_overhead_"))
    parameters = {
        "dataset": "sst2",
        "train_subset": args.train_subset,
        "epochs": 1,
        "max_length": 72,
        "lr": 1e-4,
        "eval_every": 0,
        "run_root": str(work / "runs"),
    }
    overrides = {
        "data.dataset": "sst2",
        "data.train_subset": args.train_subset,
        "train.epochs": 1,
        "data.max_length": 72,
        "train.lr": 1e-4,
        "train.eval_every": 0,
        "run.root": str(work / "runs"),
    }

    start = time.perf_counter()
    direct = workbench.train(workbench.load_config(overrides=overrides | {"run.name": "direct"}))
    direct_s = time.perf_counter() - start
    print(f"direct: {direct_s:.1f} s, val accuracy {direct.metrics['validation']['accuracy']:.4f}", flush=True)

    experiments = work / "overhead.yaml"
    experiments.write_text(
        yaml.safe_dump(
            {
                "notebooks_dir": str(ROOT / "notebooks"),
                "experiments": [
                    {
                        "name": "overhead",
                        "notebooks": ["02_train"],
                        "parameters": {**parameters, "run_name": "notebook"},
                    }
                ],
            }
        )
    )
    start = time.perf_counter()
    state = run_experiments(experiments, reports_dir=work / "reports", progress=False)
    notebook_s = time.perf_counter() - start
    record = state["experiments"]["overhead"]["notebooks"]["02_train"]
    assert record["status"] == "ok", record.get("error")
    notebook_val = record["results"]["val_accuracy"]
    print(f"notebook: {notebook_s:.1f} s, val accuracy {notebook_val:.4f}", flush=True)
    out = {
        "command": "python " + " ".join(sys.argv),
        "training": {"train_subset": args.train_subset, **{k: v for k, v in parameters.items() if k != "run_root"}},
        "direct": {
            "wall_s": direct_s,
            "train_s": direct.metrics["train"]["runtime_s"],
            "val_accuracy": direct.metrics["validation"]["accuracy"],
        },
        "notebook": {
            "wall_s": notebook_s,
            "notebook_s": record["duration_s"],
            "val_accuracy": notebook_val,
            "train_s": record["results"]["train_s"],
        },
        "overhead_ratio": notebook_s / direct_s,
        "overhead_s": notebook_s - direct_s,
        "machine": machine_info(),
    }
    print(f"overhead: {notebook_s - direct_s:.1f} s = {100 * (notebook_s / direct_s - 1):.1f}% of the direct run")

    if args.experiments:
        start = time.perf_counter()
        state = run_experiments(args.experiments, reports_dir=work / "reports_file", progress=False)
        file_s = time.perf_counter() - start
        out["experiments_file"] = {
            "file": args.experiments,
            "wall_s": file_s,
            "failed": state["failed"],
            "notebooks": {
                f"{name}/{nb}": {"status": r["status"], "duration_s": r.get("duration_s"), "results": r.get("results")}
                for name, e in state["experiments"].items()
                for nb, r in e["notebooks"].items()
            },
        }
        print(f"{args.experiments}: {file_s:.0f} s, {state['failed']} failed; reports in {work / 'reports_file'}")
    Path(args.out).write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
