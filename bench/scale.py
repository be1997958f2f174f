"""Data at scale (issue 13, part 2): what 10k, 100k and 1M rows cost today, measured side by side in one run.

For each size it writes a corpus of SST-2 training sentences repeated to that many rows, then measures, each in
a fresh process (peak RSS from the kernel's accounting of that child, ``os.wait4``):

- ``tokenize``: ``read_table`` plus ``TextProcessor.encode`` of every row with the MiniLM tokenizer at
  max_length 72, in memory (what ``TextDataModule.setup`` does today): rows/s and peak RSS.
- ``setup``: ``TextDataModule.setup()`` with the corpus as its training file (labels included), first with an
  empty encoded-data cache (``data.cache``: tokenize, then write the Arrow file) and again with it filled (read
  it back): seconds and peak RSS of each. The second is what a second run on the same data waits for.
- ``train`` (``--parts train``): ``workbench train`` on the corpus with the default backbone for 40 optimizer
  steps, its file read whole into memory (``data.stream_from_mb`` above its size) against read in pieces into the
  memory-mapped store (``data.stream_from_mb=0``), each with the store or cache empty and again filled: seconds,
  peak RSS, and the anonymous and file-backed memory the process holds at the end (``/proc/self/status``; the
  mapped store's pages are file-backed, so the kernel can drop them under pressure). A third mode repeats the
  stored run with glibc's mmap threshold pinned (``MALLOC_MMAP_THRESHOLD_=131072``), which separates what the
  process holds from what the allocator keeps after large arrays are freed.
- ``predict``: ``workbench predict MODEL --file CORPUS --chunk-rows 10000`` streaming JSON lines to /dev/null:
  rows/s and peak RSS. The model is a tiny randomly initialised BERT (2 layers, 32 wide, MiniLM's tokenizer),
  so the run measures reading, encoding, batching and writing, not MiniLM's compute (1M rows through MiniLM
  would take half an hour here); its memory curve is the point.

Run (from the repository root, nothing else running; bench/README.md's numbers came from these commands):
    python bench/scale.py --sizes 10000 100000 1000000 --out bench/results/scale.json
    python bench/scale.py --parts train --sizes 100000 1000000 3000000 --out bench/results/scale_train.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from workbench.runs import machine_info

WORK = ROOT / "runs" / "bench_scale"
SETUP = """
import sys, time
from workbench.config import DataConfig
from workbench.data import TextDataModule
started = time.perf_counter()
dm = TextDataModule(config=DataConfig(train_file=sys.argv[1], val_file=sys.argv[2], max_length=72), model_name="minilm")
dm.setup()
print(len(dm.train_dataset), time.perf_counter() - started)
"""
TOKENIZE = """
import sys, time
from workbench.datafiles import read_table
from workbench.text import TextProcessor
processor = TextProcessor(model_name="minilm", max_length=72)
started = time.perf_counter()
frame = read_table(sys.argv[1])
features = processor.encode(frame["text"].astype(str).tolist())
print(len(features), time.perf_counter() - started)
"""

TRAIN = """
import sys, time
from workbench import load_config, train
started = time.perf_counter()
corpus, validation, stream_from_mb, epochs = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
config = load_config(None, {"data.train_file": corpus, "data.val_file": validation, "data.max_length": 72,
                            "data.stream_from_mb": stream_from_mb, "train.epochs": epochs, "train.keep_top_k": 1,
                            "run.name": "bench_scale_train", "run.root": sys.argv[5]})
result = train(config)
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(result.metrics["train"]["optimizer_steps"], time.perf_counter() - started,
      int(status["RssAnon"].split()[0]) / 1024, int(status["RssFile"].split()[0]) / 1024)
"""


def _child(command: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) and standard output of one child process."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **(env or {})},
    )
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed")
    return time.perf_counter() - started, usage.ru_maxrss / 1024, output


def _tiny_model() -> Path:
    folder = WORK / "tiny_model"
    if not (folder / "workbench_model.json").exists():
        from transformers import BertConfig

        from workbench.backbones import backbone_from_config, load_tokenizer
        from workbench.models import TextClassificationModel
        from workbench.text import TextProcessing

        tokenizer = load_tokenizer("minilm")
        backbone = backbone_from_config(
            BertConfig(
                vocab_size=tokenizer.vocab_size,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=64,
            ).to_dict()
        )
        model = TextClassificationModel(
            "minilm",
            labels=["negative", "positive"],
            backbone=backbone,
            tokenizer=tokenizer,
            processing=TextProcessing(max_length=72),
        )
        model.save_pretrained(folder)
    return folder


def _train(corpus: Path, validation: Path, cache: Path, size: int, steps: int) -> dict:
    """``steps`` optimizer steps on the corpus read whole and read in pieces, each with its cache empty, then filled."""
    import shutil

    epochs = steps * 32 / size  # batches hold up to 32 of these short sentences
    measured = {}
    for mode, stream_from_mb, states in (
        ("whole", 1e9, ("cold", "warm")),
        ("pieces", 0.0, ("cold", "warm")),
        ("pieces_fixed_mmap_threshold", 0.0, ("warm",)),
    ):
        if "cold" in states:
            shutil.rmtree(cache, ignore_errors=True)
        # glibc raises its mmap threshold to the largest block freed (up to 32 MB), after which freed blocks below it
        # stay in the heap: the last mode pins the threshold at its 128 KB default to show what that retains
        env = {"MALLOC_MMAP_THRESHOLD_": "131072"} if mode.endswith("threshold") else {}
        for state in states:
            _wall, rss, out = _child(
                [
                    sys.executable,
                    "-c",
                    TRAIN,
                    str(corpus),
                    str(validation),
                    str(stream_from_mb),
                    str(epochs),
                    str(WORK / "runs"),
                ],
                env,
            )
            done, seconds, anon, file_backed = out.split()[-4:]
            measured[f"{mode}_{state}"] = {
                "optimizer_steps": int(done),
                "seconds": float(seconds),
                "peak_rss_mb": rss,
                "end_rss_anon_mb": float(anon),
                "end_rss_file_mb": float(file_backed),
            }
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--parts", nargs="+", choices=["data", "train"], default=["data"])
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps of each training run")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    from workbench.catalog import load_split

    WORK.mkdir(parents=True, exist_ok=True)
    import shutil

    import pandas as pd

    train = load_split("sst2", "train")
    sentences, labels = train["text"].astype(str).tolist(), train["label"].tolist()
    validation = WORK / "validation.csv"
    load_split("sst2", "validation").to_csv(validation, index=False)
    cache = WORK / "cache"
    os.environ["WORKBENCH_CACHE"] = str(cache)  # the children's encoded-data cache, emptied before each size
    model = _tiny_model()
    results = {"machine": machine_info(), "command": " ".join(["python", *sys.argv]), "sizes": {}}
    for size in args.sizes:
        corpus = WORK / f"corpus_{size}.csv"
        if not corpus.exists():
            pd.DataFrame(
                {
                    "text": [sentences[i % len(sentences)] for i in range(size)],
                    "label": [labels[i % len(labels)] for i in range(size)],
                }
            ).to_csv(corpus, index=False)
        if "train" in args.parts:
            results["sizes"][str(size)] = {
                "corpus_mb": corpus.stat().st_size / 1e6,
                "train": _train(corpus, validation, cache, size, args.steps),
            }
            print(size, results["sizes"][str(size)], flush=True)
            Path(args.out).write_text(json.dumps(results, indent=2))
        if "data" not in args.parts:
            continue
        wall, rss, out = _child([sys.executable, "-c", TOKENIZE, str(corpus)])
        rows, seconds = out.split()
        tokenize = {"rows_per_s": int(rows) / float(seconds), "seconds": float(seconds), "peak_rss_mb": rss}
        wall, rss, _ = _child(
            [
                sys.executable,
                "-m",
                "workbench",
                "predict",
                str(model),
                "--file",
                str(corpus),
                "--chunk-rows",
                "10000",
                "--out",
                os.devnull,
            ]
        )
        predict = {"rows_per_s": size / wall, "seconds": wall, "peak_rss_mb": rss}
        shutil.rmtree(cache, ignore_errors=True)
        setup = {}
        for state in ("cold", "warm"):
            wall, rss, out = _child([sys.executable, "-c", SETUP, str(corpus), str(validation)])
            setup[state] = {"seconds": float(out.split()[1]), "wall_s": wall, "peak_rss_mb": rss}
        setup["cache_mb"] = sum(f.stat().st_size for f in (cache / "encoded").glob("*.arrow")) / 1e6
        results["sizes"][str(size)] = {
            "corpus_mb": corpus.stat().st_size / 1e6,
            "tokenize": tokenize,
            "predict": predict,
            "setup": setup,
        }
        print(size, results["sizes"][str(size)], flush=True)
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
