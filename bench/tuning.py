"""Tuning and tracking benchmarks for ``workbench tune`` and ``run.track``, measured side by side in one run.

Five parts, each written into the ``--out`` JSON (the file is updated after every part, so an interrupted
run keeps what finished):

- ``pruning``: the same study (same seed, same space, same trial count) run once with the median pruner and
  once without. Reports the wall time of each, the time pruning saved, how many trials it stopped and the
  best validation score of each. Then the best trial's settings and the committed default config are
  retrained on ``--seeds`` seeds each (``workbench tune --retrain-best``), test accuracy mean ± std (SST-2 has
  no labelled test split, so there the validation split is scored).
- ``workers``: one study filled by 1 worker process, then an identical study filled by 2 worker processes on a
  shared journal file (``workbench tune --workers 2``): trials per hour of each. No pruner and one epoch per
  trial, so every trial costs the same.
- ``tracking``: one ~3-minute SST-2 training run with TensorBoard, W&B (offline) and MLflow (SQLite) on, against
  the same run with none, in one process, in ABBA order: the overhead in percent of wall time.
- ``checkpoints``: the bytes and seconds of a checkpoint with ``train.save_only_model`` on and off (MiniLM, a
  checkpoint every 5 steps of a short TREC run), in ABBA order.
- ``interrupted``: the pruned study's trials as they stand in runs/bench_tune, for a ``pruning`` run stopped
  before its end (checkpoint saves counted from the trials' evaluations).

The pruning comparison also counts the epochs each study trained, which does not depend on the machine's
load (the wall times do: this 2-core machine is shared), and the checkpoints each study wrote (tuning trials
save the model only, ``train.save_only_model``). ``--pruners median`` runs the pruned study alone.

Run (each from the repository root; the numbers in bench/README.md came from these commands):
    python bench/tuning.py pruning --dataset trec --out bench/results/tune_trec.json
    python bench/tuning.py pruning --dataset sst2 --trials 10 --out bench/results/tune_sst2.json
    python bench/tuning.py workers --dataset trec --trials 8 --out bench/results/tune_workers.json
    python bench/tuning.py tracking --repeats 1 --out bench/results/tracking_overhead.json   (--repeats 2: ABBA)
    python bench/tuning.py pruning --dataset trec --pruners median --seeds 0 --out bench/results/tune_trec_warmup.json
    python bench/tuning.py checkpoints --repeats 1 --out bench/results/checkpoint_size.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from transformers import TrainerCallback

import workbench.tune
from workbench.config import TRACKERS as ALL_TRACKERS
from workbench.config import load_config
from workbench.runs import CHECKPOINT_PREFIX, RunDir, machine_info
from workbench.trainer import train
from workbench.tune import retrain_best, tune

ROOT = Path(__file__).resolve().parent.parent
BENCH_ROOT = ROOT / "runs" / "bench_tune"

# The space both studies search; epochs is in it, so the pruner has long and short trials to tell apart.
SPACE = {
    "train.lr": {"log_uniform": [1.0e-5, 3.0e-4]},
    "data.batch_size": {"choice": [16, 32, 64]},
    "train.warmup": {"uniform": [0.0, 0.1]},
    "train.epochs": {"int": [1, 3]},
}
DATASETS = {
    # Sized so that 2 x 20 trials fit in well under an hour on 2 CPU cores: a stratified subset of train for
    # every trial and every retrained run alike, validation as each config holds it out, evaluated every 20 steps.
    # TREC-6: 2,000 of the 4,906 training questions left after the 10% validation hold-out (545 questions);
    # the retrained runs are scored on the 500 test questions.
    "trec": {
        "config": "configs/trec.yaml",
        "overrides": {"data.train_subset": 2000, "data.max_length": 48, "train.eval_every": 20},
    },
    # SST-2: 2,000 training sentences; the 872-sentence GLUE dev set is validation (GLUE's test has no labels).
    "sst2": {"config": "configs/sst2.yaml", "overrides": {"data.train_subset": 2000, "train.eval_every": 20}},
}


def _config(dataset: str, name: str, extra: dict | None = None):
    spec = DATASETS[dataset]
    overrides = {
        **spec["overrides"],
        "run.root": str(BENCH_ROOT),
        "run.name": name,
        "tune.space": SPACE,
        **(extra or {}),
    }
    return load_config(ROOT / spec["config"], overrides)


def _fresh(name: str) -> None:
    shutil.rmtree(BENCH_ROOT / name, ignore_errors=True)


def _epochs(run_dir: str | None) -> float:
    """Epochs a trial trained (its log's last epoch): the work it cost, whatever the machine's load, and
    comparable across batch sizes (unlike optimizer steps)."""
    if not run_dir or not (Path(run_dir) / "log.jsonl").exists():
        return 0.0
    lines = (Path(run_dir) / "log.jsonl").read_text().splitlines()
    return max(json.loads(line).get("epoch", 0.0) for line in lines)


def _study_summary(result, seconds: float) -> dict:
    table = result.trials_table()
    epochs = [round(_epochs(d), 3) for d in table["run_dir"]]
    return {
        "seconds": round(seconds, 1),
        "epochs_trained": round(sum(epochs), 2),
        "trial_epochs": epochs,
        "best_value": result.best["value"] if result.best else None,
        "best_params": result.best["params"] if result.best else None,
        "states": table["state"].value_counts().to_dict(),
        "trial_seconds": table["seconds"].round(1).tolist(),
    }


class CheckpointMeter(TrainerCallback):
    """Counts a run's checkpoint saves, their bytes (each checkpoint folder as written) and their seconds: from the
    end of an evaluation (``on_evaluate``) to ``on_save``, between which transformers does nothing but save."""

    def __init__(self):
        self.saves, self.bytes, self.timed, self.seconds, self._since = 0, 0, 0, 0.0, None

    def on_evaluate(self, args, state, control, **kwargs):
        self._since = time.perf_counter()

    def on_save(self, args, state, control, **kwargs):
        if self._since is not None:
            self.timed, self.seconds = self.timed + 1, self.seconds + time.perf_counter() - self._since
            self._since = None
        folder = Path(args.output_dir) / f"{CHECKPOINT_PREFIX}{state.global_step}"
        self.saves += 1
        self.bytes += sum(p.stat().st_size for p in folder.iterdir() if p.is_file())

    def summary(self) -> dict:
        return {
            "checkpoint_saves": self.saves,
            "checkpoint_bytes": self.bytes,
            "seconds_per_save": round(self.seconds / self.timed, 3) if self.timed else None,
        }


def _metered_tune(config) -> tuple:
    """tune(config) with a CheckpointMeter on every trial: tune's own call of train() is wrapped for the study."""
    meter = CheckpointMeter()

    def metered_train(trial_config, callbacks=None, **kwargs):
        return train(trial_config, callbacks=[*(callbacks or []), meter], **kwargs)

    original, workbench.tune.train = workbench.tune.train, metered_train
    try:
        return tune(config), meter
    finally:
        workbench.tune.train = original


def pruning(args, record: dict) -> None:
    studies = {}
    for pruner in args.pruners:
        name = f"{args.dataset}_pruner_{pruner}"
        _fresh(name)
        config = _config(args.dataset, name, {"tune.trials": args.trials, "tune.pruner": pruner})
        start = time.perf_counter()
        result, meter = _metered_tune(config)
        studies[pruner] = {
            **_study_summary(result, time.perf_counter() - start),
            **meter.summary(),
            "pruner_warmup_epochs": config.tune.pruner_warmup_epochs,
        }
        print(
            f"{name}: {studies[pruner]['seconds']:.0f} s, best {studies[pruner]['best_value']:.4f}, "
            f"{studies[pruner]['states']}, {meter.saves} checkpoints, {meter.bytes / 1e9:.2f} GB",
            flush=True,
        )
        record["pruning"] = {"trials": args.trials, "space": SPACE, "studies": studies}
        _write(args.out, record)
    if len(studies) == 2:
        saved = 1 - studies["median"]["seconds"] / studies["none"]["seconds"]
        work_saved = 1 - studies["median"]["epochs_trained"] / studies["none"]["epochs_trained"]
        record["pruning"].update(time_saved=round(saved, 3), training_saved=round(work_saved, 3))
        print(f"pruning saved {saved:.1%} of the wall time and {work_saved:.1%} of the training (epochs)", flush=True)
    if not args.seeds or "median" not in studies:
        return

    # the best of the pruned study against the committed default, on the same seeds
    best = json.loads((BENCH_ROOT / f"{args.dataset}_pruner_median" / "best_trial.json").read_text())
    spec = DATASETS[args.dataset]
    default = load_config(
        ROOT / spec["config"],
        {
            "data.train_subset": spec["overrides"]["data.train_subset"],
            "run.root": str(BENCH_ROOT),
            "run.name": f"{args.dataset}_pruner_median",
        },
    )
    shutil.rmtree(BENCH_ROOT / f"{args.dataset}_pruner_median" / "retrain", ignore_errors=True)
    start = time.perf_counter()
    record["retrain"] = {
        **retrain_best(default, best, seeds=args.seeds),
        "seconds": round(time.perf_counter() - start, 1),
        "default_config": spec["config"],
    }
    _write(args.out, record)
    for name in ("tuned", "untuned"):
        print(
            f"{name}: {record['retrain'][name]['mean']:.4f} ± {record['retrain'][name]['std']:.4f} "
            f"({record['retrain']['metric']} on {record['retrain']['split']}, {args.seeds} seeds)",
            flush=True,
        )


def workers(args, record: dict) -> None:
    """The same study (no pruner, one epoch per trial, so every trial costs the same) filled by 1 and by 2
    worker processes; each worker gets cores / workers torch threads."""
    space = {key: spec for key, spec in SPACE.items() if key != "train.epochs"}
    runs = {}
    for count in (1, 2):
        name = f"{args.dataset}_workers_{count}"
        _fresh(name)
        config = _config(
            args.dataset,
            name,
            {"tune.trials": args.trials, "tune.pruner": "none", "tune.space": space, "train.epochs": 1},
        )
        start = time.perf_counter()
        result = tune(config, workers=count)
        seconds = time.perf_counter() - start
        table = result.trials_table()
        finished = int(table["state"].isin(["COMPLETE", "PRUNED"]).sum())
        runs[count] = {
            "seconds": round(seconds, 1),
            "trials": finished,
            "best_value": result.best["value"],
            "trials_per_hour": round(finished * 3600 / seconds, 1),
        }
        print(
            f"{count} worker(s): {finished} trials in {seconds:.0f} s = "
            f"{runs[count]['trials_per_hour']:.0f} trials/hour",
            flush=True,
        )
        record["workers"] = {"space": space, "runs": runs}
        _write(args.out, record)
    record["workers"]["speedup"] = round(runs[2]["trials_per_hour"] / runs[1]["trials_per_hour"], 3)
    print(f"2 workers / 1 worker: {record['workers']['speedup']:.2f}x trials per hour", flush=True)


def tracking(args, record: dict) -> None:
    """One SST-2 training run of about 3 minutes, with no tracker and with all three, in ABBA order so that a
    drift in the machine's speed cancels; logging every 10 steps, to give the trackers plenty to do."""
    os.environ.setdefault("WANDB_MODE", "offline")
    record["dataset"] = "sst2"
    subset = args.train_subset or 20000
    results = []
    for index, track in enumerate(([], list(ALL_TRACKERS), list(ALL_TRACKERS), [])[: 2 * args.repeats]):
        name = f"tracking_{'all' if track else 'none'}_{index}"
        _fresh(name)
        config = load_config(
            ROOT / "configs/sst2.yaml",
            {
                "data.train_subset": subset,
                "train.log_every": 10,
                "train.eval_every": 200,
                "run.track": track,
                "run.root": str(BENCH_ROOT),
                "run.name": name,
            },
        )
        start = time.perf_counter()
        fit = train(config)
        seconds = time.perf_counter() - start
        results.append(
            {
                "track": track,
                "seconds": round(seconds, 1),
                "train_runtime_s": round(fit.metrics["train"]["runtime_s"], 1),
                "validation_accuracy": fit.metrics["validation"]["accuracy"],
            }
        )
        print(f"{name}: {seconds:.1f} s", flush=True)
        record["tracking"] = {"train_subset": subset, "runs": results}
        _write(args.out, record)
    on = [r["seconds"] for r in results if r["track"]]
    off = [r["seconds"] for r in results if not r["track"]]
    record["tracking"]["overhead"] = round(sum(on) / sum(off) - 1, 4)
    print(f"tracking overhead: {record['tracking']['overhead']:.2%} (all three trackers against none)", flush=True)


def recount(args, record: dict) -> None:
    """Add the epochs each trial trained to an existing pruning result, from the trials' logs in runs/bench_tune
    (for a result written before the script counted them)."""
    import optuna

    saved = json.loads(Path(args.out).read_text())
    for pruner, study in saved["pruning"]["studies"].items():
        folder = BENCH_ROOT / f"{args.dataset}_pruner_{pruner}"
        trials = optuna.load_study(study_name=folder.name, storage=f"sqlite:///{folder / 'study.db'}").trials
        epochs = [round(_epochs(t.user_attrs.get("run_dir")), 3) for t in trials]
        study.update(epochs_trained=round(sum(epochs), 2), trial_epochs=epochs)
    studies = saved["pruning"]["studies"]
    saved["pruning"]["training_saved"] = round(
        1 - studies["median"]["epochs_trained"] / studies["none"]["epochs_trained"], 3
    )
    saved.setdefault("recounted", record["command"])
    record.clear()
    record.update(saved)
    print(f"pruning saved {saved['pruning']['training_saved']:.1%} of the training (epochs)", flush=True)


def checkpoints(args, record: dict) -> None:
    """Checkpoint bytes and save seconds with ``train.save_only_model`` on and off: the same short run (MiniLM on
    a TREC subset, a checkpoint every 5 steps) once each, in the order off, on, on, off."""
    spec = DATASETS["trec"]
    runs = []
    for index, only_model in enumerate((False, True, True, False)[: 2 * args.repeats]):
        name = f"checkpoints_{'model' if only_model else 'full'}_{index}"
        _fresh(name)
        config = load_config(
            ROOT / spec["config"],
            {
                **spec["overrides"],
                "data.train_subset": 320,
                "train.epochs": 1,
                "data.batch_size": 16,
                "train.eval_every": 5,
                "train.save_only_model": only_model,
                "run.root": str(BENCH_ROOT),
                "run.name": name,
            },
        )
        meter = CheckpointMeter()
        fit = train(config, callbacks=[meter])
        files = sorted(p.name for p in RunDir(fit.run_dir).checkpoints.glob(f"{CHECKPOINT_PREFIX}*/*"))
        runs.append(
            {
                "save_only_model": only_model,
                **meter.summary(),
                "bytes_per_checkpoint": meter.bytes // meter.saves,
                "files": sorted(set(files)),
            }
        )
        print(
            f"{name}: {meter.saves} checkpoints, {meter.bytes / meter.saves / 1e6:.1f} MB and "
            f"{runs[-1]['seconds_per_save']:.2f} s each",
            flush=True,
        )
        record["checkpoints"] = {"runs": runs}
        _write(args.out, record)


def interrupted(args, record: dict) -> None:
    """The pruned study of ``pruning`` as it stands in runs/bench_tune, for a study stopped before its last trial:
    each trial's state, settings, score, epochs, evaluations and checkpoint saves (one after each evaluation, bar a
    pruned trial's last) with their bytes, measured on a checkpoint the trial kept."""
    import optuna

    folder = BENCH_ROOT / f"{args.dataset}_pruner_median"
    study = optuna.load_study(study_name=folder.name, storage=f"sqlite:///{folder / 'study.db'}")
    trials = []
    for t in study.trials:
        run = RunDir(t.user_attrs["run_dir"]) if t.user_attrs.get("run_dir") else None
        kept = run.checkpoint_folders() if run else []
        saves = len(t.intermediate_values) - (t.state == optuna.trial.TrialState.PRUNED)
        size = max((sum(p.stat().st_size for p in f.iterdir() if p.is_file()) for f in kept), default=0)
        trials.append(
            {
                "trial": t.number,
                "state": t.state.name,
                "value": t.value,
                "params": t.params,
                "epochs": round(_epochs(str(run.path) if run else None), 3),
                "evaluations": len(t.intermediate_values),
                "checkpoint_saves": saves,
                "bytes_per_checkpoint": size,
                "reason": t.user_attrs.get("reason"),
                "seconds": (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else None,
            }
        )
    finished = [t for t in trials if t["state"] in ("COMPLETE", "PRUNED")]
    best = max((t for t in finished if t["state"] == "COMPLETE"), key=lambda t: t["value"], default=None)
    record["interrupted"] = {
        "study": folder.name,
        "trials_finished": len(finished),
        "trials": trials,
        "epochs_trained": round(sum(t["epochs"] for t in finished), 2),
        "seconds": round(sum(t["seconds"] for t in finished), 1),
        "checkpoint_saves": sum(t["checkpoint_saves"] for t in finished),
        "checkpoint_bytes": sum(t["checkpoint_saves"] * t["bytes_per_checkpoint"] for t in finished),
        "best": best and {"trial": best["trial"], "value": best["value"], "params": best["params"]},
    }
    print(json.dumps({k: v for k, v in record["interrupted"].items() if k != "trials"}, indent=1), flush=True)


def _write(path: str, record: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(record, indent=2, default=str))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["pruning", "workers", "tracking", "checkpoints", "interrupted", "recount"])
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="trec")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument(
        "--pruners",
        nargs="+",
        choices=["median", "none"],
        default=["median", "none"],
        help="pruning: the studies to run (the comparison and retraining need both)",
    )
    parser.add_argument("--seeds", type=int, default=3, help="pruning: seeds to retrain on (0 = no retraining)")
    parser.add_argument("--repeats", type=int, default=2, help="tracking, checkpoints: pairs of runs (2 = ABBA)")
    parser.add_argument("--train-subset", type=int, help="tracking: SST-2 training sentences (default 20000)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    record = {
        "command": " ".join(["python", "bench/tuning.py", *sys.argv[1:]]),
        "machine": machine_info(),
        "dataset": args.dataset,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    parts = {
        "pruning": pruning,
        "workers": workers,
        "tracking": tracking,
        "checkpoints": checkpoints,
        "interrupted": interrupted,
        "recount": recount,
    }
    parts[args.part](args, record)
    record.setdefault("finished", time.strftime("%Y-%m-%d %H:%M:%S"))
    _write(args.out, record)


if __name__ == "__main__":
    main()
