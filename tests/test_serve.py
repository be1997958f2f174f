"""The prediction service: endpoints in-process, micro-batching that keeps every answer its own, backpressure,
limits, the API key, a real `workbench serve` process, and schemathesis over the OpenAPI schema."""

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from workbench.config import ServeConfig
from workbench.export import export_model
from workbench.runs import RunDir
from workbench.runtime import Predictor, load_export
from workbench.serve import create_app

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def int8_export(tiny_run) -> Path:
    export_model(tiny_run, engine="onnx-int8", echo=None)
    return RunDir(tiny_run).export_folder("onnx-int8")


def test_predict_and_the_read_endpoints(int8_export):
    predictor = load_export(int8_export)
    texts = ["a good and great film", "a bad and awful film", "wonderful acting, loved it"]
    with TestClient(create_app(predictor)) as client:
        response = client.post("/v1/predict", json={"texts": texts})
        assert response.status_code == 200
        body = response.json()
        assert body["engine"] == "onnx-int8" and body["model_version"] == predictor.meta["model_sha256"][:16]
        proba = np.array([[p["probabilities"][name] for name in ("neg", "pos")] for p in body["predictions"]])
        assert np.allclose(proba, predictor.predict_proba(texts), atol=1e-6) and np.allclose(proba.sum(1), 1, atol=1e-5)
        assert [p["label"] for p in body["predictions"]] == predictor.predict(texts)
        assert all(p["labels"] == [p["label"]] for p in body["predictions"])
        assert client.get("/health").json() == {"status": "ok"}
        assert client.get("/ready").json() == {"status": "ready", "engine": "onnx-int8"}
        meta = client.get("/metadata").json()
        assert meta["labels"] == ["neg", "pos"] and meta["parity"]["agreement"] == 1.0
        assert meta["run_metrics"]["validation"]["accuracy"] > 0 and meta["backbone"]["model_type"] == "bert"
        assert meta["service"]["max_texts"] == ServeConfig().max_texts and meta["service"]["api_key_set"] is False
        metrics = client.get("/metrics").text
        assert 'workbench_requests_total{endpoint="/v1/predict",status="200"} 1.0' in metrics
        assert "workbench_batch_texts_count 1.0" in metrics and "workbench_request_seconds_bucket" in metrics
        assert client.get("/docs").status_code == 200 and "/v1/predict" in client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"texts": []}, 422, "at least 1 item"),
        ({"texts": [1, "a"]}, 422, "body.texts.0: Input should be a valid string"),
        ({"texts": "a good film"}, 422, "valid list"),
        ({"text": ["a"]}, 422, "Field required"),
        ({"texts": ["fine", "   "]}, 422, "Text #1 is empty"),
        ({"texts": ["a"], "pairs": ["b"]}, 422, "reads single texts: leave the second texts ('pairs') out"),
        (b'{"texts": ["fine", "bad \\ud800 half"]}', 422, "Text #1 is not valid Unicode (it holds a lone surrogate)"),
        ({"texts": ["a"] * 5}, 413, "5 texts in one request; the limit is 4"),
        ({"texts": ["ok", "x" * 101]}, 413, "Text #1 has 101 characters; the limit is 100"),
    ],
)
def test_bad_requests_get_a_json_4xx(int8_export, body, status, words):
    config = ServeConfig(max_texts=4, max_chars=100)
    with TestClient(create_app(load_export(int8_export), config)) as client:
        if isinstance(body, bytes):  # JSON that a client library would not write: a lone surrogate escape
            response = client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
        else:
            response = client.post("/v1/predict", json=body)
        assert response.status_code == status and words in response.json()["error"]
        assert response.headers["content-type"] == "application/json"
        if status == 413:
            assert response.json()["limit"] in ("max_texts", "max_chars")
        malformed = client.post("/v1/predict", content=b'{"texts": [', headers={"content-type": "application/json"})
        assert malformed.status_code == 422 and "JSON" in malformed.text
        huge = client.post("/v1/predict", content=b" " * 3_000_000, headers={"content-type": "application/json"})
        assert huge.status_code == 413 and huge.json()["limit"] == "max_body_bytes"
        assert client.get("/v1/predict").status_code == 405 and client.get("/nothing").status_code == 404


def test_the_api_key_guards_everything_but_health(int8_export, monkeypatch):
    monkeypatch.setenv("WB_TEST_KEY", "s3cret")
    with TestClient(create_app(load_export(int8_export), ServeConfig(api_key_env="WB_TEST_KEY"))) as client:
        for path in ("/ready", "/metadata", "/metrics", "/docs", "/openapi.json"):
            assert client.get(path).status_code == 401
        refused = client.post("/v1/predict", json={"texts": ["a"]}, headers={"Authorization": "Bearer wrong"})
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert "API key" in refused.json()["error"]
        assert client.get("/health").status_code == 200
        ok = client.post("/v1/predict", json={"texts": ["a"]}, headers={"Authorization": "Bearer s3cret"})
        assert (
            ok.status_code == 200
            and client.get("/metadata", headers={"Authorization": "Bearer s3cret"}).json()["service"]["api_key_set"]
            is True
        )


def _slowed(predictor: Predictor, seconds: float) -> Predictor:
    """The same engine, made to take ``seconds`` longer per call (so requests pile up deterministically)."""

    def run(batch):
        time.sleep(seconds)
        return predictor.run(batch)

    return Predictor(predictor.meta, predictor.processor.tokenizer.tokenizer, run, predictor.engine)


def _concurrently(client, bodies) -> list:
    answers = [None] * len(bodies)

    def post(i):
        answers[i] = client.post("/v1/predict", json=bodies[i])

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


@pytest.mark.parametrize("engine", ["onnx", "onnx-int8"])
def test_micro_batching_gathers_requests_and_keeps_each_answer_its_own(tiny_run, engine):
    # an answer must not depend on its batch-mates: int8 runs each example alone, so it is exactly the unbatched
    # answer; fp32 runs the padded batch, equal up to float rounding
    export_model(tiny_run, engine=engine, echo=None)
    predictor = load_export(RunDir(tiny_run).export_folder(engine))
    bodies = [
        {"texts": [f"{'a good and great' if i % 2 else 'a bad and awful'} film number {i}"] * (1 + i % 3)}
        for i in range(24)
    ]
    config = ServeConfig(max_batch_size=64, max_wait_ms=20)
    with TestClient(create_app(_slowed(predictor, 0.05), config)) as client:
        answers = _concurrently(client, bodies)
        metrics = client.get("/metrics").text
    assert all(a.status_code == 200 for a in answers)
    for body, answer in zip(bodies, answers, strict=True):  # every request gets the rows of its own texts, in order
        got = np.array([[p["probabilities"]["neg"], p["probabilities"]["pos"]] for p in answer.json()["predictions"]])
        alone = predictor.predict_proba(body["texts"])
        assert np.array_equal(got, alone) if engine == "onnx-int8" else np.allclose(got, alone, rtol=0, atol=1e-5)
    calls = float(
        next(line.split()[-1] for line in metrics.splitlines() if line.startswith("workbench_batch_texts_count"))
    )
    texts = float(
        next(line.split()[-1] for line in metrics.splitlines() if line.startswith("workbench_batch_texts_sum"))
    )
    assert texts == sum(len(b["texts"]) for b in bodies) and calls < len(bodies) / 2  # gathered, not one call each


def test_a_full_queue_answers_503_with_retry_after(int8_export):
    config = ServeConfig(max_batch_size=1, max_wait_ms=0, max_queue=2)
    with TestClient(create_app(_slowed(load_export(int8_export), 0.2), config)) as client:
        answers = _concurrently(client, [{"texts": [f"text {i}"]} for i in range(12)])
        metrics = client.get("/metrics").text
    codes = sorted(a.status_code for a in answers)
    assert set(codes) == {200, 503} and codes.count(200) >= 2
    refused = next(a for a in answers if a.status_code == 503)
    assert refused.headers["retry-after"] == "1" and refused.json()["limit"] == "max_queue"
    assert f"workbench_rejected_total {float(codes.count(503))}" in metrics


def test_without_batching_each_request_is_its_own_call(int8_export):
    predictor = load_export(int8_export)
    with TestClient(create_app(predictor, ServeConfig(batching=False))) as client:
        answers = _concurrently(client, [{"texts": ["a good film", f"a bad film {i}"]} for i in range(6)])
        metrics = client.get("/metrics").text
    assert all(a.status_code == 200 for a in answers)
    assert [p["label"] for p in answers[3].json()["predictions"]] == predictor.predict(["a good film", "a bad film 3"])
    assert "workbench_batch_texts_count 0.0" in metrics  # no micro-batcher ran


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live_service(int8_export):
    """`workbench serve` on an export, in its own process on a free loopback port."""
    import httpx

    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "workbench.cli", "serve", str(int8_export), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, process.stdout.read()
        try:
            if httpx.get(url + "/ready", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the service did not become ready in 60 s"
        time.sleep(0.2)
    yield url
    process.terminate()
    process.wait(timeout=30)


def test_a_real_serve_process_answers_without_torch(live_service):
    import httpx

    response = httpx.post(live_service + "/v1/predict", json={"texts": ["a good and great film"]}, timeout=10)
    assert response.status_code == 200 and response.json()["predictions"][0]["label"] in ("neg", "pos")
    assert httpx.get(live_service + "/metadata", timeout=10).json()["service"]["torch_imported"] is False


def test_schemathesis_finds_no_server_error(live_service, tmp_path):
    st = Path(sys.executable).parent / "st"
    result = subprocess.run(
        [
            str(st),
            "run",
            live_service + "/openapi.json",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--max-examples",
            "100",
            "--seed",
            "1",
            "--workers",
            "1",
            "--phases",
            "examples,coverage,fuzzing",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
    )
    assert result.returncode == 0, result.stdout[-4000:]
    assert "No issues found" in result.stdout
    generated = int(re.search(r"(\d+) generated", result.stdout).group(1))
    assert generated >= 100  # requests actually sent: the examples, coverage and fuzzing phases


def _dockerfile_command(port: int, model: Path) -> tuple[list[str], list[str]]:
    """The image's ENTRYPOINT + CMD and its HEALTHCHECK command, for this machine (loopback, a free port)."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    found = {}
    for line in text.splitlines():
        for key in ("ENTRYPOINT", "CMD", "HEALTHCHECK"):
            if line.startswith(key + " "):
                found[key] = json.loads(line[line.index("[") :])
    local = {"/model": str(model), "0.0.0.0": "127.0.0.1", "8000": str(port)}
    serve = [local.get(part, part) for part in found["ENTRYPOINT"] + found["CMD"]]
    health = [part.replace(":8000/", f":{port}/") for part in found["HEALTHCHECK"]]
    return serve, health


def test_the_dockerfile_lints_clean_and_its_command_serves(int8_export):
    """No Docker engine here: hadolint checks the file, and the image's command line runs in this environment."""
    hadolint = Path(sys.executable).parent / "hadolint"
    lint = subprocess.run([str(hadolint), str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert lint.returncode == 0 and lint.stdout == "", lint.stdout
    dockerfile = (REPO / "Dockerfile").read_text()
    assert (
        len(re.findall(r"^FROM ", dockerfile, re.MULTILINE)) == 2
        and "USER 10001" in dockerfile
        and "torch==2.13.0" in dockerfile
    )
    assert (REPO / ".dockerignore").read_text().startswith("#")
    port = _free_port()
    serve, health = _dockerfile_command(port, int8_export)
    assert serve[:2] == ["workbench", "serve"] and health[0] == "python"
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    process = subprocess.Popen(serve, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(health, env=env, capture_output=True).returncode != 0:  # the HEALTHCHECK itself
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.3)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_load_test_script_runs_bounded_with_zero_errors(int8_export, tmp_path):
    (tmp_path / "texts.csv").write_text('text\na good and great film\n"terrible acting, hated it"\nwonderful acting\n')
    out = tmp_path / "load.json"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "serve_load.py"),
            str(int8_export),
            "--clients",
            "8",
            "--duration",
            "2",
            "--file",
            str(tmp_path / "texts.csv"),
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    result = json.loads(out.read_text())
    for mode in ("on", "off"):
        assert result["modes"][mode]["errors"] == 0 and result["modes"][mode]["requests_per_s"] > 0
    assert result["modes"]["on"]["texts_per_model_call"] > 1  # 8 clients: gathered into shared calls


def test_serve_refuses_what_it_cannot_load_in_one_line(int8_export, tmp_path, capsys):
    from workbench.cli import main

    old = tmp_path / "old_export"
    old.mkdir()
    (old / "export.json").write_text(json.dumps({"format": "workbench-export/0", "engine": "onnx"}))
    empty_run = tmp_path / "runs" / "x" / "version_0"
    empty_run.mkdir(parents=True)
    for argv, words in (
        ([str(old)], "is of format 'workbench-export/0'; this workbench reads 'workbench-export/1'"),
        ([str(int8_export), "--engine", "onnx"], "holds the onnx-int8 engine, not onnx"),
        ([str(empty_run)], "is neither an export folder (export.json), a run directory"),
        ([str(int8_export), "--max-texts", "0"], "serve.max_texts=0 must be at least 1"),
    ):
        assert main(["serve", *argv]) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1, err
