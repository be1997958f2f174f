"""Run many accuracy-benchmark jobs side by side and gather their results into one JSON file.

Each job is one ``bench/accuracy.py --config CONFIG OVERRIDES...`` process. Jobs run ``--parallel`` at a
time (on a GPU several small runs share the card well; on this 2-core CPU use 1). Jobs still running at
``--deadline`` seconds are stopped and recorded as such, so a sweep on a leased machine always returns
what it finished. The output is written again after every job, so it survives an interruption.

Jobs file (YAML), one entry per job:

    - {name: base, config: configs/sst2_full.yaml}
    - {name: lr15, config: configs/sst2_full.yaml, overrides: [train.lr=1.5e-4]}

Run:  python bench/sweep.py bench/sweeps/sst2_reuters.yaml --parallel 6 --out bench/results/gpu_sweep.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def load_jobs(path: Path) -> list[dict]:
    jobs = yaml.safe_load(path.read_text())
    if not isinstance(jobs, list) or not jobs:
        raise SystemExit(f"{path}: expected a non-empty list of jobs")
    names = set()
    for i, job in enumerate(jobs):
        unknown = set(job) - {"name", "config", "overrides"}
        if unknown or "name" not in job or "config" not in job:
            raise SystemExit(f"{path}: job {i + 1} needs name and config (and optional overrides); got {sorted(job)}")
        if job["name"] in names:
            raise SystemExit(f"{path}: job name {job['name']!r} appears twice")
        names.add(job["name"])
    return jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jobs", type=Path)
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--deadline", type=float, default=None, help="seconds after which running jobs are stopped")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per job (OMP_NUM_THREADS)")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    jobs = load_jobs(args.jobs)
    workdir = Path(tempfile.mkdtemp(prefix="workbench_sweep_"))
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    start = time.monotonic()
    pending, running, results = list(jobs), {}, {}

    def write() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {
                    "command": "python " + " ".join(sys.argv),
                    "jobs_file": str(args.jobs),
                    "parallel": args.parallel,
                    "elapsed_s": time.monotonic() - start,
                    "results": results,
                },
                indent=2,
            )
        )

    while pending or running:
        while pending and len(running) < args.parallel:
            job = pending.pop(0)
            out = workdir / f"{job['name']}.json"
            log = open(workdir / f"{job['name']}.log", "w")
            cmd = [
                sys.executable,
                str(ROOT / "bench" / "accuracy.py"),
                "--config",
                job["config"],
                "--out",
                str(out),
                *job.get("overrides", []),
                f"run.root={workdir / 'runs'}",
                f"run.name={job['name']}",
            ]
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            running[job["name"]] = (proc, job, out, log, time.monotonic())
            print(f"[{time.monotonic() - start:6.0f} s] start {job['name']}", flush=True)
        time.sleep(2)
        late = args.deadline is not None and time.monotonic() - start > args.deadline
        for name, (proc, job, out, log, began) in list(running.items()):
            if proc.poll() is None and not late:
                continue
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
            row = {
                "config": job["config"],
                "overrides": job.get("overrides", []),
                "seconds": time.monotonic() - began,
                "returncode": proc.returncode,
            }
            if out.exists():
                full = json.loads(out.read_text())
                row.update({k: full[k] for k in ("validation", "test", "train", "wall_seconds") if k in full})
                row["status"] = "ok"
            else:
                row["status"] = "stopped at deadline" if late else "failed"
                row["log_tail"] = (workdir / f"{name}.log").read_text()[-3000:]
            results[name] = row
            del running[name]
            scores = row.get("test") or row.get("validation") or {}
            shown = {k: round(scores[k], 4) for k in ("accuracy", "micro_f1", "macro_f1") if k in scores}
            print(f"[{time.monotonic() - start:6.0f} s] {row['status']:>6} {name} {shown}", flush=True)
            write()
        if late:
            results.update({job["name"]: {"status": "not started (deadline)", **job} for job in pending})
            pending = []
    write()


if __name__ == "__main__":
    main()
