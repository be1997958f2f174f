"""Behavioural-suite benchmark (issue 26): the shipped suites on our trained models, failure rate per test.

Each ``--pair SUITE RUN`` runs a suite on a finished run (``workbench.behave.run_suite``, which also writes the run's
``behavior/<suite>.json``) and records, beside the failure rates, the run's accuracy, backbone, size and the time
the suite took on this machine::

    python bench/behavior.py --pair sentiment runs/sst2/version_0 \\
        --pair questions runs/trec_hard/version_0 --pair questions runs/trec_mpnet/version_0 \\
        --out bench/results/behavior.json

``--out`` is updated pair by pair, so a partial benchmark keeps what it has.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import transformers

from workbench import TextClassificationModel
from workbench.behave import load_suite, run_suite
from workbench.runs import load_run, machine_info


def _update(out: Path, key: str, value: dict) -> None:
    data = json.loads(out.read_text()) if out.exists() else {}
    command = "python " + " ".join(sys.argv)
    data.setdefault("commands", [])
    if command not in data["commands"]:
        data["commands"].append(command)
    data.setdefault("results", {})[key] = value
    data["machine"] = machine_info()
    data["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2))


def measure(suite_name: str, run_dir: str) -> dict:
    """One suite on one run: the run's facts, each test's failure rate and count, and the seconds it took."""
    run = load_run(run_dir)
    model = TextClassificationModel.from_pretrained(run.model_dir)
    suite = load_suite(suite_name)
    start = time.perf_counter()
    result = run_suite(suite, run, model=model)
    seconds = time.perf_counter() - start
    return {
        "run": str(run.path),
        "backbone": run.config.model.backbone,
        "method": run.config.train.method,
        "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "validation_accuracy": run.metrics.get("validation", {}).get("accuracy"),
        "test_accuracy": run.metrics.get("test", {}).get("accuracy"),
        "split": result["split"],
        "texts": sum(t["n"] for t in result["tests"]),
        "seconds": round(seconds, 1),
        "failure_rate": result["failure_rate"],
        "tests": {
            t["name"]: {k: t[k] for k in ("type", "capability", "n", "failure_rate", "label_changes")}
            for t in result["tests"]
        },
        "worst": {t["name"]: t["examples"][:2] for t in result["tests"] if t["examples"]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", nargs=2, action="append", metavar=("SUITE", "RUN"), required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    for suite_name, run_dir in args.pair:
        row = measure(suite_name, run_dir)
        _update(args.out, f"{suite_name} on {row['run']}", row)
        rates = ", ".join(
            f"{name} {t['failure_rate']:.1%}" for name, t in row["tests"].items() if t["failure_rate"] is not None
        )
        print(f"{suite_name} on {row['run']} ({row['seconds']} s): mean {row['failure_rate']:.1%}; {rates}")


if __name__ == "__main__":
    main()
