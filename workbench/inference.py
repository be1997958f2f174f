"""Inference speed: latency percentiles and throughput against batch size and sequence length.

The harness times a :class:`~workbench.runtime.Predictor`'s *engine* (how a padded batch of token ids becomes
logits) on batches cut from real texts. :func:`torch_predictor` puts a trained model in PyTorch eager behind
the same interface as the exported engines (ONNX, int8, TorchScript, ``torch.export``), which
:func:`workbench.export.engine_predictor` builds by name, so every engine is measured by the same code on the
same batches. Each (sequence length, batch size) cell runs ``warmup`` untimed batches, then ``repeats`` timed
passes over ``batches`` batches; the latency percentiles are over all timed batch calls and the throughput is
the median over repeats. :func:`compare_engines` puts several engines side by side (size, memory, accuracy,
speed-up); it is handed a function that builds each engine's predictor, so this module needs nothing of the
exporter above it.

Example::

    table = benchmark_inference(model, texts, batch_sizes=(1, 8, 32, 64), seq_lengths=(None, 128))
    plots.latency_figure(table)
    summary, latency = compare_engines(partial(export.engine_predictor, run_dir), ["torch", "onnx-int8"], texts)
"""

from __future__ import annotations

import os
import resource
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np
import onnxruntime
import pandas as pd
import torch
from tokenizers import Tokenizer

from workbench.config import ENGINE_EXPORTS, ENGINES
from workbench.errors import ConfigError, ParityError, WorkbenchError
from workbench.metrics import predict_from_proba
from workbench.models import TextClassificationModel
from workbench.runs import machine_info
from workbench.runtime import Predictor
from workbench.text import window_items


def _on_onnx_runtime(engine: str) -> bool:
    return engine in ENGINE_EXPORTS and ENGINE_EXPORTS[engine][0] == "onnx"


def torch_predictor(model: TextClassificationModel, batch_size: int = 32) -> Predictor:
    """The model in PyTorch eager (no gradients) as a :class:`Predictor`: the ``"torch"`` engine."""
    model.eval()
    meta = {**model.metadata(), "inputs": model.input_names, "pad_token_id": model.tokenizer.pad_token_id}
    tokenizer = Tokenizer.from_str(model.tokenizer.backend_tokenizer.to_str())  # a copy: the model's keeps its settings

    @torch.inference_mode()
    def run(batch: dict[str, np.ndarray]) -> np.ndarray:
        inputs = {name: torch.from_numpy(values).to(model.device) for name, values in batch.items()}
        return model.engine_output(**inputs).float().cpu().numpy()

    return Predictor(meta, tokenizer, run, "torch", batch_size)


def _batches(
    predictor: Predictor, texts: Sequence[str], batch_size: int, seq_length: int | None, count: int
) -> list[dict]:
    """``count`` padded batches of ``batch_size`` texts; with ``seq_length`` every row is exactly that long."""
    features = predictor.encode(list(texts))
    features = (window_items(features) or (features,))[0]  # a windowed model's engine runs windows: time those
    if seq_length is not None:
        rows = []
        for f in features:
            ids = list(f["input_ids"])
            body = ids[1:-1] or [predictor.pad_token_id]
            while len(body) < seq_length - 2:  # repeat the text's own tokens to reach the length
                body = body + body
            ids = [ids[0], *body[: seq_length - 2], ids[-1]]
            rows.append({"input_ids": ids, "token_type_ids": [0] * len(ids)})
        features = rows
    return [
        predictor.pad([features[(b * batch_size + i) % len(features)] for i in range(batch_size)]) for b in range(count)
    ]


def benchmark_inference(
    model: TextClassificationModel | Predictor,
    texts: Sequence[str],
    batch_sizes: Sequence[int] = (1, 8, 32, 64),
    seq_lengths: Sequence[int | None] = (None,),
    warmup: int = 3,
    repeats: int = 5,
    batches: int = 10,
    threads: int | None = None,
    echo: Callable[[str], None] | None = print,
) -> pd.DataFrame:
    """Time a model's engine on batches of ``texts``.

    Args:
        model: a :class:`~workbench.runtime.Predictor` (any engine), or a
            :class:`~workbench.models.TextClassificationModel`, timed in PyTorch eager.
        texts: real texts to cut batches from (at least one).
        batch_sizes: examples per batch.
        seq_lengths: token lengths; ``None`` keeps each text's natural length (padded per batch).
        warmup, repeats, batches: untimed batches, timed passes, batches per pass.
        threads: torch intra-op threads (default: leave as is; an exported engine sets its own when loaded).

    Returns:
        One row per (seq_length, batch_size): ``p50_ms``, ``p95_ms``, ``p99_ms`` (per batch call),
        ``examples_per_s`` (median over repeats), ``mean_tokens`` per row, ``engine``, ``threads``.
    """
    if not texts:
        raise WorkbenchError("benchmark_inference needs at least one text.")
    if any(b < 1 for b in batch_sizes) or any(s is not None and s < 4 for s in seq_lengths):
        raise WorkbenchError("batch sizes must be >= 1 and sequence lengths >= 4 (or None for natural lengths).")
    if threads:
        torch.set_num_threads(threads)
    predictor = torch_predictor(model) if isinstance(model, TextClassificationModel) else model
    rows = []
    for seq_length in seq_lengths:
        for batch_size in batch_sizes:
            cut = _batches(predictor, texts, batch_size, seq_length, max(batches, warmup))
            for batch in cut[:warmup]:
                predictor.run(batch)
            latencies, throughputs = [], []
            for _ in range(repeats):
                start_pass = time.perf_counter()
                for batch in cut[:batches]:
                    start = time.perf_counter()
                    predictor.run(batch)  # logits come back as a NumPy array: a GPU has finished
                    latencies.append(time.perf_counter() - start)
                throughputs.append(batch_size * batches / (time.perf_counter() - start_pass))
            tokens = float(np.mean([b["attention_mask"].sum(1).mean() for b in cut[:batches]]))
            row = {
                "engine": predictor.engine,
                "seq_length": "natural" if seq_length is None else seq_length,
                "batch_size": batch_size,
                "p50_ms": 1000 * float(np.percentile(latencies, 50)),
                "p95_ms": 1000 * float(np.percentile(latencies, 95)),
                "p99_ms": 1000 * float(np.percentile(latencies, 99)),
                "examples_per_s": float(np.median(throughputs)),
                "mean_tokens": tokens,
                "threads": threads
                or (
                    os.cpu_count()
                    if _on_onnx_runtime(predictor.engine)  # its default: a core each
                    else torch.get_num_threads()
                ),
                "device": str(model.device) if isinstance(model, TextClassificationModel) else "cpu",
                "timed_calls": len(latencies),
            }
            rows.append(row)
            if echo:
                echo(
                    f"{predictor.engine} seq {row['seq_length']} batch {batch_size}: p50 {row['p50_ms']:.1f} ms, "
                    f"{row['examples_per_s']:.1f} examples/s"
                )
    table = pd.DataFrame(rows)
    table.attrs["machine"] = {**machine_info(), "torch": torch.__version__}
    return table


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


class _PeakMemory:
    """Samples this process's resident memory every 5 ms while active: the peak over the baseline, in MB."""

    def __enter__(self):
        self.base = self.peak = _rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss_mb())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())
        self.added_mb = self.peak - self.base


def compare_engines(
    predictor_of: Callable[..., Predictor],
    engines: Sequence[str],
    texts: Sequence[str],
    labels: Sequence | None = None,
    *,
    batch_sizes: Sequence[int] = (1, 8, 32),
    seq_lengths: Sequence[int | None] = (None,),
    repeats: int = 5,
    batches: int = 10,
    threads: int | None = None,
    echo: Callable[[str], None] | None = print,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every engine of ``engines`` on the same texts, one after another in this process.

    Args:
        predictor_of: builds an engine's predictor, called as ``predictor_of(engine, threads=threads)``, e.g.
            ``functools.partial(export.engine_predictor, run_dir)`` (which exports a run as needed). An engine
            whose export is refused (:class:`~workbench.errors.ParityError`) becomes a row with ``status``
            ``refused`` and its ``reason``, and is not timed.
        engines: names from :data:`workbench.config.ENGINES`.
        texts: real texts: batches are cut from them, and accuracy is measured on all of them.
        labels: class ids ``(N,)`` (multi-hot ``(N, K)`` for multi-label) of ``texts``, for accuracy.
        batch_sizes, seq_lengths, repeats, batches, threads: as :func:`benchmark_inference`.

    Returns:
        ``(summary, latency)``: one summary row per engine (``status``, ``reason``, ``size_mb`` of the model file
        when its predictor knows it, ``load_s``, ``peak_rss_added_mb`` while loading and running it, ``accuracy``,
        ``agreement`` with the first engine and the speed-up over it at each batch size) and the latency table
        of every (engine, length, batch size) that ran.

    Example:
        >>> summary, latency = compare_engines(partial(engine_predictor, "runs/sst2/version_0"), ["torch", "onnx-int8"],
        ...                                    texts, labels)  # doctest: +SKIP
    """
    unknown = [e for e in engines if e not in ENGINES]
    if unknown or not engines:
        raise ConfigError(f"engine {', '.join(unknown) or '(none)'}: choose from {', '.join(ENGINES)}.")
    if threads:
        torch.set_num_threads(threads)
    rows, tables, predictions = [], [], {}
    baseline = engines[0]
    for engine in engines:
        with _PeakMemory() as memory:
            started = time.perf_counter()
            try:
                predictor = predictor_of(engine, threads=threads)
            except ParityError as refused:
                rows.append({"engine": engine, "status": "refused", "reason": refused.reason})
                continue
            load_s = time.perf_counter() - started
            proba = predictor.predict_proba(list(texts))
            table = benchmark_inference(
                predictor, texts, batch_sizes, seq_lengths, repeats=repeats, batches=batches, threads=threads, echo=echo
            )
        predicted = predict_from_proba(proba, predictor.thresholds if predictor.multi_label else None)
        predictions[engine] = predicted
        size = predictor.meta.get("size_bytes")
        row = {
            "engine": engine,
            "status": "ok",
            "reason": "",
            "size_mb": size / 1e6 if size else None,
            "load_s": load_s,
            "peak_rss_added_mb": memory.added_mb,
        }
        if labels is not None:
            truth = np.asarray(labels)
            row["accuracy"] = float((predicted == truth).reshape(len(truth), -1).all(axis=1).mean())
        if baseline in predictions:
            first = predictions[baseline]
            row["agreement_with_" + baseline] = float((predicted == first).reshape(len(first), -1).all(axis=1).mean())
        rows.append(row)
        tables.append(table)
        del predictor
    latency = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    summary = pd.DataFrame(rows)
    if tables:
        natural = latency[latency["seq_length"] == latency["seq_length"].iloc[0]]
        for batch_size in batch_sizes:
            cell = natural[natural["batch_size"] == batch_size].set_index("engine")["examples_per_s"]
            summary[f"speedup_b{batch_size}"] = summary["engine"].map(cell / cell.get(baseline, np.nan))
    summary.attrs["machine"] = latency.attrs["machine"] = {
        **machine_info(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3,
    }
    return summary, latency
