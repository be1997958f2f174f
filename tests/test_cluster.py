"""workbench.cluster on a real Ray cluster: a head and a worker node started with `ray start` on 127.0.0.1, one CPU
each. A grid and a cross-validation spread over both nodes and give what the in-process run gives; a worker node
killed mid-grid loses nothing; Ray Data labels a 100k-row file row for row as the in-process path does; bad
addresses, resources and files fail in one line."""

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import missing_prerequisite
from test_reports import experiments_file, write_notebook

from workbench import cli, load_config
from workbench.cluster import Executor, Resources, predict_file
from workbench.cv import cross_validate
from workbench.errors import ConfigError, WorkbenchError
from workbench.export import export_model
from workbench.reports import ExperimentsError, load_experiments, run_experiments
from workbench.runtime import load_export

RAY = Path(sys.executable).with_name("ray")
START_TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    """A Ray head and worker node on this machine, each its own `ray start --block` process group."""

    def __init__(self, logs: Path):
        if not RAY.exists():
            missing_prerequisite("Ray is not installed: pip install 'ray[data]'")
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
        common = ["--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats"]
        self.logs, self.head, self.worker = logs, None, None
        try:
            head = [RAY, "start", "--head", "--port", str(self.port), "--include-dashboard", "false", *common]
            self.head = self._start(head, env, "head")
            self._wait(self._reachable, "the head node")
            self.worker = self._start([RAY, "start", "--address", self.address, *common], env, "worker")
            self._wait(lambda: len(self.alive_nodes()) == 2, "the worker node")
        except BaseException:
            self.stop()
            raise

    def _start(self, command, env, name: str) -> subprocess.Popen:
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{name}.log", "w") as log:
            return subprocess.Popen(
                [str(c) for c in command], env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT
            )

    def _reachable(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def _wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready():
            if time.monotonic() > deadline:
                logs = "\n".join(p.read_text()[-2000:] for p in sorted(self.logs.glob("*.log")))
                raise AssertionError(f"{what} of the test cluster did not start in {START_TIMEOUT_S} s:\n{logs}")
            time.sleep(0.5)

    def alive_nodes(self) -> list[str]:
        """Node ids of the live nodes, asked of the cluster by a short-lived driver."""
        code = (
            f"import ray; ray.init(address='{self.address}', logging_level='error', log_to_driver=False); "
            "print(' '.join(n['NodeID'] for n in ray.nodes() if n['Alive']))"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        return done.stdout.split() if done.returncode == 0 else []

    def kill_worker(self) -> None:
        os.killpg(self.worker.pid, signal.SIGKILL)

    def stop(self) -> None:
        for process in (self.worker, self.head):
            if process is None:
                continue
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(30)


@pytest.fixture(scope="module", autouse=True)
def _token_auth():
    """Ray's token authentication, as a cluster should run (Ray 2.60 turns it on once a token file exists): the
    nodes and this driver share a token through the environment."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_AUTH_MODE", "token")
        patch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
        yield


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, _token_auth):
    started = LocalCluster(tmp_path_factory.mktemp("ray_logs"))
    yield started
    started.stop()


@pytest.fixture
def slow_notebooks(tmp_path) -> Path:
    """A notebook that notes each start in attempts.txt, takes a few seconds and reports 10 * x (fails for x = 3)."""
    folder = tmp_path / "nbs"
    write_notebook(
        folder / "10_slow.ipynb",
        "x = 1\nseconds = 4\noutput_dir = None",
        "import time\nfrom pathlib import Path\nwith open('attempts.txt', 'a') as f:\n    f.write(f'x={x}\\n')\n"
        "time.sleep(seconds)",
        "if x == 3:\n    raise ValueError(f'x={x} is not allowed here')",
        "from workbench.reports import save_results\nsave_results(output_dir, '10_slow', {'value': x * 10})",
    )
    return folder


def _grid(folder: Path, notebooks: Path, seconds: float, **extra) -> Path:
    """``folder/experiments.yaml``: experiment g on x = 1 and 2 (g__x-1, g__x-2), each one slow notebook."""
    experiment = {"name": "g", "notebooks": ["10_slow"], "parameters": {"seconds": seconds}, "grid": {"x": [1, 2]}}
    folder.mkdir(exist_ok=True)
    return experiments_file(folder, {"notebooks_dir": str(notebooks), "experiments": [{**experiment, **extra}]})


def _results(state: dict) -> dict:
    return {
        name: {nb: r.get("results") for nb, r in e["notebooks"].items()} for name, e in state["experiments"].items()
    }


def test_a_grid_runs_one_experiment_per_node_as_it_runs_here(cluster, tmp_path, slow_notebooks):
    path = _grid(tmp_path, slow_notebooks, seconds=3)
    failing = {"name": "bad", "notebooks": ["10_slow"], "parameters": {"x": 3, "seconds": 0}, "after": ["g"]}
    body = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**body, "experiments": [*body["experiments"], failing]}))
    here = run_experiments(path, progress=False, reports_dir=tmp_path / "local")
    with Executor("ray", address=cluster.address) as executor:
        spread = run_experiments(path, progress=False, reports_dir=tmp_path / "ray", executor=executor)
    expected = {"g__x-1": {"10_slow": {"value": 10}}, "g__x-2": {"10_slow": {"value": 20}}, "bad": {"10_slow": None}}
    assert _results(spread) == _results(here) == expected
    assert here["failed"] == spread["failed"] == 1  # a failed notebook is reported as it is here
    error = here["experiments"]["bad"]["notebooks"]["10_slow"]["error"]
    assert "ValueError: x=3 is not allowed here" in error
    assert spread["experiments"]["bad"]["notebooks"]["10_slow"]["error"] == error
    nodes = {spread["experiments"][name]["node"] for name in ("g__x-1", "g__x-2")}
    assert len(nodes) == 2 and nodes <= set(cluster.alive_nodes())  # each experiment on its own node
    index = json.loads((tmp_path / "ray" / "index.json").read_text())
    assert set(index["experiments"]) == {"g__x-1", "g__x-2", "bad"} and (tmp_path / "ray" / "index.html").exists()


def test_a_two_fold_cross_validation_on_the_cluster_equals_the_local_one(cluster, tmp_path, tiny_bert, sentiment_files):
    overrides = {
        "data.train_file": str(sentiment_files["train"]),
        "model.backbone": tiny_bert,
        "model.freeze_embeddings": False,
        "data.batch_size": 8,
        "train.epochs": 1,
        "train.lr": 2e-3,
    }
    torch_threads = 1  # the Ray tasks reserve one CPU and so run torch on one thread: the same sums in the same order
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(torch_threads)
    try:
        here = cross_validate(load_config(overrides={**overrides, "run.name": "here"}), n_folds=2, echo=None)
    finally:
        torch.set_num_threads(before)
    with Executor("ray", address=cluster.address) as executor:
        spread = cross_validate(  # echo=print, the default: the folds print on their workers
            load_config(overrides={**overrides, "run.name": "spread"}), n_folds=2, executor=executor
        )
    assert (spread.oof["fold"] == here.oof["fold"]).all()  # same seed, same folds
    assert np.allclose(spread.proba, here.proba, atol=1e-5)
    assert list(spread.oof["predicted"]) == list(here.oof["predicted"])
    for key, value in here.summary["mean"].items():
        assert spread.summary["mean"][key] == pytest.approx(value, abs=1e-6), key
    assert [Path(row["run_dir"]).parts[-2] for row in spread.summary["folds"]] == ["fold_0", "fold_1"]
    assert len({row["node"] for row in spread.summary["folds"]}) == 2  # a fold on each node
    assert "node" not in here.summary["folds"][0]


def test_ray_data_labels_a_100k_row_file_in_order_as_the_local_path_does(cluster, tmp_path, tiny_run):
    export = tmp_path / "export"
    export_model(tiny_run, export, engine="onnx", echo=None)
    words = ["good", "bad", "great", "awful", "fine", "dull", "film", "plot", "acting", "a", "the", "very"]
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, size=rng.integers(1, 12))) + f" #{i}" for i in range(100_000)]
    source = tmp_path / "texts.csv"
    pd.DataFrame({"id": range(len(texts)), "text": texts}).to_csv(source, index=False)

    local_out = tmp_path / "local.jsonl"
    with open(local_out, "w") as out:
        assert predict_file(load_export(export), source, out, with_proba=True) == 100_000
    ray_out = tmp_path / "ray.jsonl"
    on_ray = ["--executor", "ray", "--address", cluster.address, "--actors", "2", "--chunk-rows", "4096"]
    code = cli.main(["predict", str(export), "--file", str(source), "--proba", "--out", str(ray_out), *on_ray])
    assert code == 0
    local = [json.loads(line) for line in local_out.read_text().splitlines()]
    spread = [json.loads(line) for line in ray_out.read_text().splitlines()]
    assert len(spread) == len(local) == 100_000
    assert [r["text"] for r in spread] == texts  # the input's order
    assert [r["label"] for r in spread] == [r["label"] for r in local]
    assert (
        max(
            abs(a["probabilities"][k] - b["probabilities"][k])
            for a, b in zip(spread, local, strict=False)
            for k in a["probabilities"]
        )
        < 1e-5
    )


def test_bad_input_fails_in_one_line_within_seconds(cluster, tmp_path, slow_notebooks, tiny_run, capsys):
    path = _grid(tmp_path, slow_notebooks, seconds=0)
    began = time.monotonic()
    assert cli.main(["run", str(path), "--executor", "ray", "--address", f"127.0.0.1:{_free_port()}"]) == 2
    assert time.monotonic() - began < 15
    assert "No Ray cluster answers at 127.0.0.1:" in capsys.readouterr().err

    greedy = _grid(tmp_path / "greedy", slow_notebooks, seconds=0, resources={"cpus": 4})
    assert cli.main(["run", str(greedy), "--executor", "ray", "--address", cluster.address]) == 2
    err = capsys.readouterr().err
    assert "asks for 4 CPU(s) and 0 GPU(s), more than any node" in err and "largest: 1 CPUs" in err
    assert not (tmp_path / "reports" / "index.json").exists()  # refused before anything ran

    assert (
        cli.main(["run", str(path), "--executor", "ray", "--address", cluster.address, "--shared-dir", "/nowhere"]) == 2
    )
    assert "cannot reach the shared folder /nowhere" in capsys.readouterr().err

    export = tmp_path / "export"
    export_model(tiny_run, export, engine="onnx", echo=None)
    missing = tmp_path / "missing.csv"
    assert (
        cli.main(["predict", str(export), "--file", str(missing), "--executor", "ray", "--address", cluster.address])
        == 2
    )
    assert f"Data file {missing} does not exist" in capsys.readouterr().err
    assert cli.main(["predict", str(tiny_run), "--file", str(missing), "--executor", "ray"]) == 2
    assert "is not an export folder" in capsys.readouterr().err


def test_a_worker_node_lost_mid_grid_is_retried_and_nothing_is_lost_or_written_twice(tmp_path, slow_notebooks):
    lost = LocalCluster(tmp_path / "ray_logs")  # its own cluster: this test kills a node
    try:
        path = _grid(tmp_path, slow_notebooks, seconds=8)
        done = {}

        def spread():
            with Executor("ray", address=lost.address) as executor:
                done["state"] = run_experiments(path, progress=False, executor=executor)

        runner = threading.Thread(target=spread)
        runner.start()
        attempts, deadline = tmp_path / "attempts.txt", time.monotonic() + 120
        while not attempts.exists() or attempts.read_text().count("x=") < 2:
            assert time.monotonic() < deadline, "the two experiments did not start"
            time.sleep(0.2)
        lost.kill_worker()  # both notebooks are sleeping: one of them on the worker node
        runner.join(300)
        state = done["state"]
    finally:
        lost.stop()
    assert state["failed"] == 0 and _results(state) == {
        "g__x-1": {"10_slow": {"value": 10}},
        "g__x-2": {"10_slow": {"value": 20}},
    }
    attempts = (tmp_path / "attempts.txt").read_text().split()
    assert sorted(attempts) in (["x=1", "x=1", "x=2"], ["x=1", "x=2", "x=2"])  # the lost one ran again
    assert len({entry["node"] for entry in state["experiments"].values()}) == 1  # both finished on the head
    for name in ("g__x-1", "g__x-2"):
        assert sorted(p.name for p in (tmp_path / "reports" / name).iterdir() if p.suffix != ".json") == [
            "10_slow.html",
            "10_slow.ipynb",
        ]


def test_experiment_files_declare_resources_and_order(tmp_path, slow_notebooks):
    body = {
        "notebooks_dir": str(slow_notebooks),
        "resources": {"cpus": 2},
        "experiments": [
            {"name": "a", "notebooks": ["10_slow"], "grid": {"x": [1, 2]}},
            {"name": "b", "notebooks": ["10_slow"], "resources": {"cpus": 1, "gpus": 1}, "after": ["a"]},
        ],
    }
    plan = load_experiments(experiments_file(tmp_path, body))
    assert [(e.name, e.resources, e.after) for e in plan.experiments] == [
        ("a__x-1", Resources(2, 0), []),
        ("a__x-2", Resources(2, 0), []),
        ("b", Resources(1, 1), ["a__x-1", "a__x-2"]),
    ]
    body["experiments"][1]["after"] = ["c"]
    with pytest.raises(ExperimentsError, match="after names 'c', which is not an experiment above it"):
        load_experiments(experiments_file(tmp_path, body))
    body["experiments"][1].update(after=["a"], resources={"cpus": -1})
    with pytest.raises(ExperimentsError, match=r"experiment 'b': resources.cpus must be a number of 0 or more"):
        load_experiments(experiments_file(tmp_path, body))
    with pytest.raises(ConfigError, match="--address 1.2.3.4:5 is for --executor ray"):
        Executor("local", address="1.2.3.4:5")
    with pytest.raises(WorkbenchError, match="must be HOST:PORT"):
        Executor("ray", address="nowhere").__enter__()


def test_the_local_executor_needs_no_ray_and_the_predicting_actors_no_torch():
    code = "import sys, workbench.cluster, workbench.reports, workbench.cv; print('ray' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"  # imported only when --executor ray is asked for
    code = "import sys, workbench.cluster; print('torch' in sys.modules)"  # what a Ray Data actor imports
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
