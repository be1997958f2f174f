"""Load test of `workbench serve` (issue 12): concurrent clients on loopback for a fixed time, micro-batching on
against off.

For each mode it starts ``workbench serve EXPORT --port P`` (``--no-batching`` for off) in its own process,
waits until ``/ready``, warms up for 3 s, then runs ``--clients`` concurrent clients for ``--duration`` seconds.
Each client posts one real sentence per request (SST-2 dev by default) and sends the next as soon as the answer
arrives. It reports requests/s, latency p50/p90/p99, errors (any status but 200, or a failed connection) and the
texts per model call read from the service's ``/metrics``. The clients run in this process (asyncio + aiohttp), on
the same cores as the service, in both modes alike. Bounded: it stops at ``--duration``, loopback only.

Run (from the repository root, nothing else running; bench/README.md's numbers came from this command):
    python bench/serve_load.py runs/bench_export/sst2/version_0/exports/onnx-int8 --clients 64 --duration 60 \\
        --out bench/results/serve_load.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from workbench.runs import machine_info


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _texts(args) -> list[str]:
    if args.file:
        import pandas as pd

        return pd.read_csv(args.file)[args.text_column].astype(str).tolist()
    from workbench.catalog import load_split

    return load_split("sst2", "validation")["text"].astype(str).tolist()


async def _client(session: aiohttp.ClientSession, texts: list[str], seed: int, stop_at: float, record: list) -> None:
    rng = np.random.default_rng(seed)
    while time.monotonic() < stop_at:
        text = texts[int(rng.integers(len(texts)))]
        started = time.perf_counter()
        try:
            async with session.post("/v1/predict", json={"texts": [text]}) as response:
                await response.read()
                status = response.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            status = type(exc).__name__
        record.append((time.perf_counter() - started, status))


async def _load(url: str, texts: list[str], clients: int, seconds: float) -> list:
    """``clients`` concurrent clients (aiohttp: httpx's async client topped out near 190 requests/s here)."""
    record: list = []
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        stop_at = time.monotonic() + seconds
        await asyncio.gather(*(_client(session, texts, seed, stop_at, record) for seed in range(clients)))
    return record


def _metric(text: str, name: str) -> float:
    return float(next((line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")), "nan"))


def run_mode(export: str, batching: bool, texts: list[str], args) -> dict:
    port = _free_port()
    command = [sys.executable, "-m", "workbench.cli", "serve", export, "--port", str(port)]
    command += ([] if batching else ["--no-batching"]) + args.serve_args.split()
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                raise SystemExit(f"workbench serve exited with {server.returncode}")
            try:
                if httpx.get(url + "/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the service did not become ready in 120 s")
            time.sleep(0.2)
        asyncio.run(_load(url, texts, args.clients, 3.0))  # warm-up, not counted
        before = httpx.get(url + "/metrics", timeout=10).text
        started = time.perf_counter()
        record = asyncio.run(_load(url, texts, args.clients, args.duration))
        elapsed = time.perf_counter() - started
        after = httpx.get(url + "/metrics", timeout=10).text
    finally:
        server.terminate()
        server.wait(timeout=30)
    latencies = np.array([seconds for seconds, status in record if status == 200]) * 1000
    errors = [status for _, status in record if status != 200]
    calls = _metric(after, "workbench_batch_texts_count") - _metric(before, "workbench_batch_texts_count")
    batched = _metric(after, "workbench_batch_texts_sum") - _metric(before, "workbench_batch_texts_sum")
    result = {
        "batching": batching,
        "clients": args.clients,
        "seconds": elapsed,
        "requests": len(record),
        "ok": len(latencies),
        "errors": len(errors),
        "error_kinds": sorted({str(e) for e in errors}),
        "requests_per_s": len(latencies) / elapsed,
        **{f"p{q}_ms": float(np.percentile(latencies, q)) if len(latencies) else None for q in (50, 90, 99)},
        "texts_per_model_call": batched / calls if batching and calls else 1.0,
    }
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export", help="an export folder (workbench export ... --engine onnx-int8)")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of measured load per mode")
    parser.add_argument("--file", help="a CSV of texts to send (default: SST-2 dev)")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--serve-args", default="", help="further options of workbench serve, e.g. '--threads 1'")
    parser.add_argument("--out", help="write the results as JSON")
    args = parser.parse_args()
    texts = _texts(args)
    modes = {"on": run_mode(args.export, True, texts, args), "off": run_mode(args.export, False, texts, args)}
    results = {
        "machine": machine_info(),
        "export": args.export,
        "clients": args.clients,
        "duration_s": args.duration,
        "modes": modes,
        "throughput_ratio_on_over_off": modes["on"]["requests_per_s"] / modes["off"]["requests_per_s"],
        "command": " ".join(sys.argv),
    }
    print(
        f"micro-batching on: {modes['on']['requests_per_s']:.1f} requests/s, off: {modes['off']['requests_per_s']:.1f}"
        f" -> {results['throughput_ratio_on_over_off']:.2f}x; errors {modes['on']['errors']} / {modes['off']['errors']}"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
