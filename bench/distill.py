"""Distillation benchmark: one student config distilled from a teacher run, once per seed, with its cost.

Runs exactly what ``workbench distill --config CONFIG --teacher TEACHER`` runs, once for each ``--seeds`` value
(``train.seed``), one after another in this process, and writes each student's validation (and test) metrics,
its agreement with the teacher, the teacher's own figures on the same splits, the teacher-output time (the
first seed labels the transfer set; the others read the cache) and the wall time, with the machine.

Run:
    python bench/distill.py --config configs/sst2_distill.yaml --teacher runs/sst2_mpnet/version_0 \
        --seeds 42 1 2 --out bench/results/sst2_distill_minilm.json
    python bench/distill.py --config configs/trec_distill.yaml --teacher runs/trec_mpnet/version_0 \
        --seeds 42 1 2 --out bench/results/trec_distill_minilm.json

The JSON is rewritten after every seed. A benchmark longer than a session continues where it stopped: with
``--keep-finished`` the seeds already in ``--out`` (students of the same config) are kept and not rerun, and
``--resume RUN_DIR`` resumes the first seed still to run from its last checkpoint (the teacher's outputs come from
the cache). ``distill.soft_weight=0`` as an override gives the
hard-label control: the same student, data and schedule, trained on the gold labels alone, with its agreement with
the teacher.
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

from workbench import load_config
from workbench.distill import distill
from workbench.runs import load_run, machine_info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--teacher", nargs="+", required=True, help="teacher run directory (several: an ensemble)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[42])
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--resume", help="the first seed to run, interrupted: its student run directory, resumed from its checkpoint"
    )
    parser.add_argument(
        "--keep-finished", action="store_true", help="keep the seeds already in --out (same config) and run the others"
    )
    parser.add_argument("overrides", nargs="*", help="dotted overrides, as for workbench distill")
    args = parser.parse_args()
    teachers = [
        {
            "run_dir": path,
            "validation": load_run(path).metrics["validation"].get("accuracy"),
            "test": load_run(path).metrics.get("test", {}).get("accuracy"),
        }
        for path in args.teacher
    ]
    command = "python " + " ".join(a for a in sys.argv if a != "--keep-finished")

    def config_of(seed: int):
        return load_config(
            args.config, [*args.overrides, f"train.seed={seed}", f"distill.teacher={json.dumps(args.teacher)}"]
        )

    students = _finished(Path(args.out), config_of(args.seeds[0]).to_dict(), args.seeds) if args.keep_finished else []
    to_run = [seed for seed in args.seeds if seed not in {s["seed"] for s in students}]
    if not to_run:
        print(f"every seed is already in {args.out}")
        return
    for seed in to_run:
        cfg = config_of(seed)
        start = time.perf_counter()
        result = distill(cfg, resume=args.resume if args.resume and seed == to_run[0] else False)
        students.append(
            {
                "seed": seed,
                "run_dir": str(result.run_dir),
                "wall_seconds": time.perf_counter() - start,
                "train": result.metrics["train"],
                "validation": {k: v for k, v in result.metrics["validation"].items() if isinstance(v, (int, float))},
                "test": {k: v for k, v in result.metrics.get("test", {}).items() if isinstance(v, (int, float))}
                or None,
                "distill": result.metrics["distill"],
            }
        )
        print(json.dumps({"seed": seed, **result.metrics["distill"]}, indent=2), flush=True)
        out = {
            "command": command,
            "config": cfg.to_dict(),
            "teachers": teachers,
            "students": students,  # written after every seed: an interrupted benchmark keeps the seeds it finished
            **_mean_std(students, "validation"),
            **(_mean_std(students, "test") if all(s["test"] for s in students) else {}),
            "machine": machine_info(),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2))
    for split in ("validation", "test"):
        if f"{split}_accuracy_mean" in out:
            print(f"{split} accuracy {out[f'{split}_accuracy_mean']:.4f} ± {out[f'{split}_accuracy_std']:.4f}")


def _finished(out: Path, config: dict, seeds: list[int]) -> list[dict]:
    """The students an earlier run left in ``out`` for the seeds asked for, if it trained the same config."""
    if not out.exists():
        return []
    earlier = json.loads(out.read_text())
    if _but_seed(earlier["config"]) != _but_seed(config):
        print(
            f"error: {out} holds students of another config ({earlier['command']}); give another --out", file=sys.stderr
        )
        sys.exit(2)
    kept = [s for s in earlier["students"] if s["seed"] in seeds]
    print(f"keeping seeds {[s['seed'] for s in kept]} from {out}", flush=True)
    return kept


def _but_seed(config: dict) -> dict:
    """A config as a dict without train.seed, the one key in which a benchmark's students differ."""
    return {**config, "train": {k: v for k, v in config["train"].items() if k != "seed"}}


def _mean_std(students: list[dict], split: str) -> dict[str, float]:
    """The mean and sample standard deviation of the students' accuracy on one split (0 for one seed)."""
    accuracies = [s[split]["accuracy"] for s in students]
    std = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
    return {f"{split}_accuracy_mean": statistics.mean(accuracies), f"{split}_accuracy_std": std}


if __name__ == "__main__":
    main()
