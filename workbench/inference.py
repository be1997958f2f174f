"""Inference speed: latency percentiles and throughput against batch size and sequence length.

The harness times an *engine* (how a batch of token ids becomes logits) on batches cut from real texts.
``engine="torch"`` is PyTorch eager on the model as it is; a later ONNX or int8 engine registers itself
in :data:`ENGINES` and is measured by the same code. Each (sequence length, batch size) cell runs
``warmup`` untimed batches, then ``repeats`` timed passes over ``batches`` batches; the latency
percentiles are over all timed batch calls and the throughput is the median over repeats.

Example::

    table = benchmark_inference(model, texts, batch_sizes=(1, 8, 32, 64), seq_lengths=(None, 128))
    plots.latency_figure(table)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from workbench.errors import WorkbenchError
from workbench.runs import machine_info


def torch_engine(model) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
    """PyTorch eager, no gradients."""
    model.eval()

    @torch.inference_mode()
    def run(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(**batch)["logits"]

    return run


ENGINES: dict[str, Callable] = {"torch": torch_engine}


def _batches(model, texts: Sequence[str], batch_size: int, seq_length: int | None, count: int) -> list[dict]:
    """``count`` padded batches of ``batch_size`` texts; with ``seq_length`` every row is exactly that long."""
    features = model.processor().encode(list(texts))
    if seq_length is not None:
        pad = model.tokenizer.pad_token_id or 0
        rows = []
        for f in features:
            ids = list(f["input_ids"])
            body = ids[1:-1] or [pad]
            while len(body) < seq_length - 2:  # repeat the text's own tokens to reach the length
                body = body + body
            rows.append({"input_ids": [ids[0], *body[:seq_length - 2], ids[-1]]})
        features = rows
    out = []
    for b in range(count):
        chosen = [features[(b * batch_size + i) % len(features)] for i in range(batch_size)]
        padded = model.tokenizer.pad([{"input_ids": f["input_ids"]} for f in chosen], return_tensors="pt")
        out.append({k: v.to(model.device) for k, v in padded.items()})
    return out


def benchmark_inference(model, texts: Sequence[str], batch_sizes: Sequence[int] = (1, 8, 32, 64),
                        seq_lengths: Sequence[int | None] = (None,), engine: str = "torch", warmup: int = 3,
                        repeats: int = 5, batches: int = 10, threads: int | None = None,
                        echo: Callable[[str], None] | None = print) -> pd.DataFrame:
    """Time ``engine`` on batches of ``texts``.

    Args:
        model: a :class:`workbench.TextClassificationModel`.
        texts: real texts to cut batches from (at least one).
        batch_sizes: examples per batch.
        seq_lengths: token lengths; ``None`` keeps each text's natural length (padded per batch).
        engine: a key of :data:`ENGINES`.
        warmup, repeats, batches: untimed batches, timed passes, batches per pass.
        threads: torch intra-op threads (default: leave as is); recorded either way.

    Returns:
        One row per (seq_length, batch_size): ``p50_ms``, ``p95_ms``, ``p99_ms`` (per batch call),
        ``examples_per_s`` (median over repeats), ``mean_tokens`` per row, ``engine``, ``threads``.
    """
    if engine not in ENGINES:
        raise WorkbenchError(f"engine='{engine}' is unknown; available: {', '.join(ENGINES)}.")
    if not texts:
        raise WorkbenchError("benchmark_inference needs at least one text.")
    if any(b < 1 for b in batch_sizes) or any(s is not None and s < 4 for s in seq_lengths):
        raise WorkbenchError("batch sizes must be >= 1 and sequence lengths >= 4 (or None for natural lengths).")
    if threads:
        torch.set_num_threads(threads)
    run = ENGINES[engine](model)
    rows = []
    for seq_length in seq_lengths:
        for batch_size in batch_sizes:
            cut = _batches(model, texts, batch_size, seq_length, max(batches, warmup))
            for batch in cut[:warmup]:
                run(batch)
            latencies, throughputs = [], []
            for _ in range(repeats):
                start_pass = time.perf_counter()
                for batch in cut[:batches]:
                    start = time.perf_counter()
                    run(batch)
                    if model.device.type == "cuda":
                        torch.cuda.synchronize()
                    latencies.append(time.perf_counter() - start)
                throughputs.append(batch_size * batches / (time.perf_counter() - start_pass))
            tokens = float(np.mean([b["attention_mask"].sum(1).float().mean().item() for b in cut[:batches]]))
            row = {"engine": engine, "seq_length": "natural" if seq_length is None else seq_length,
                   "batch_size": batch_size, "p50_ms": 1000 * float(np.percentile(latencies, 50)),
                   "p95_ms": 1000 * float(np.percentile(latencies, 95)), "p99_ms": 1000 * float(np.percentile(latencies, 99)),
                   "examples_per_s": float(np.median(throughputs)), "mean_tokens": tokens,
                   "threads": torch.get_num_threads(), "device": str(model.device), "timed_calls": len(latencies)}
            rows.append(row)
            if echo:
                echo(f"{engine} seq {row['seq_length']} batch {batch_size}: p50 {row['p50_ms']:.1f} ms, "
                     f"{row['examples_per_s']:.1f} examples/s")
    table = pd.DataFrame(rows)
    table.attrs["machine"] = {**machine_info(), "torch": torch.__version__}
    return table
