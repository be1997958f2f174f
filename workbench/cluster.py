"""Spreading independent work over machines with Ray: the experiments of a grid, the folds of a cross-validation,
and the rows of a file to predict.

The ``local`` executor (the default) runs everything in this process, one item after another, and needs no Ray.
The ``ray`` executor runs each item as a Ray task: without an address on a Ray instance started here with this
machine's cores, with one (``HOST:PORT`` of a cluster started by ``ray start --head``) on that cluster::

    with Executor("ray", address="10.0.0.5:6379") as executor:
        results = executor.map(train_one, items, names=["fold_0", "fold_1"])

Tasks read and write run directories and reports as they do locally, so every node must see the same folder at
the same path (``shared_dir``, by default the directory the command runs in): each task enters it first, and a node
that cannot see it fails with one line saying so. A task whose node is lost is retried elsewhere (``retries``).

:func:`predict_file` labels a table of any size: in this process a piece at a time, or with Ray Data, which
reads the file in blocks on the cluster and maps an export (:func:`workbench.runtime.load_export`, ONNX, no torch)
over them with a pool of actors; the lines come back in the input's order either way.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from workbench.config import EXECUTORS
from workbench.datafiles import READERS, check_text_column, read_table_chunks, readable_format, require_columns
from workbench.errors import ConfigError, DataError, WorkbenchError
from workbench.runtime import load_export

# Environment a task needs to behave as this process does (offline hub, data and cache folders, threads)
FORWARDED_ENV = ("WORKBENCH_", "HF_", "TRANSFORMERS_", "TOKENIZERS_", "OMP_NUM_THREADS", "PYTHONHASHSEED")
CONNECT_TIMEOUT_S = 5.0  # an unreachable address fails within this, not after Ray's own minute of retries


@dataclass(frozen=True)
class Resources:
    """What one task reserves on a node (an experiment's ``resources:`` in an experiments file)."""

    cpus: float = 1.0
    gpus: float = 0.0

    @classmethod
    def parse(cls, value: Any, where: str) -> Resources:
        """``{cpus: 2, gpus: 1}`` from a YAML mapping; errors name ``where`` and the key."""
        if value is None:
            return cls()
        if not isinstance(value, dict) or set(value) - {"cpus", "gpus"}:
            raise ConfigError(f"{where}: resources must be a mapping with cpus and/or gpus, e.g. {{cpus: 2, gpus: 1}}.")
        numbers = {}
        for key, number in value.items():
            if isinstance(number, bool) or not isinstance(number, int | float) or number < 0:
                raise ConfigError(f"{where}: resources.{key} must be a number of 0 or more, got {number!r}.")
            numbers[key] = float(number)
        if numbers.get("cpus", 1.0) == 0 and numbers.get("gpus", 0.0) == 0:
            raise ConfigError(f"{where}: resources ask for nothing (cpus: 0, gpus: 0); a task needs a CPU or a GPU.")
        return cls(**numbers)


@dataclass
class Executor:
    """Where independent items run: ``local`` (in this process, in order) or ``ray`` (one Ray task each).

    Args:
        kind: ``local`` or ``ray`` (:data:`workbench.config.EXECUTORS`).
        address: a Ray cluster's ``HOST:PORT``; None starts a Ray instance here with this machine's cores.
        shared_dir: the folder every node sees at the same path; tasks run in it (default: the current directory).
        retries: how often a task whose node or worker process dies is run again elsewhere.

    Use it as a context manager: entering connects to Ray (checking the address first), leaving disconnects and
    stops a Ray instance it started.
    """

    kind: str = "local"
    address: str | None = None
    shared_dir: str | None = None
    retries: int = 3
    _connected: bool = field(default=False, init=False, repr=False)

    def __post_init__(self):
        if self.kind not in EXECUTORS:
            raise ConfigError(f"Unknown executor '{self.kind}'. Choose one of: {', '.join(EXECUTORS)}.")
        if self.address and self.kind != "ray":
            raise ConfigError(f"--address {self.address} is for --executor ray; the {self.kind} executor has none.")
        self.shared_dir = str(Path(self.shared_dir or os.getcwd()).resolve())

    @property
    def distributed(self) -> bool:
        return self.kind == "ray"

    def __enter__(self) -> Executor:
        if self.distributed:
            self._connected = connect(self.address)
        return self

    def __exit__(self, *exc) -> None:
        if self._connected:
            import ray

            ray.shutdown()
            self._connected = False

    def map(
        self,
        function: Callable[[Any], Any],
        items: Sequence[Any],
        *,
        names: Sequence[str],
        resources: Sequence[Resources] | None = None,
        after: Sequence[Sequence[int]] | None = None,
        on_result: Callable[[int, Any, str | None], None] | None = None,
    ) -> list:
        """``[function(item) for item in items]``, in the items' order, run here or as Ray tasks.

        Args:
            function: a module-level function (Ray sends it to the nodes by reference).
            items: its arguments, one task each.
            names: one per item, for progress and errors (an experiment's or fold's name).
            resources: what each task reserves (default: 1 CPU each); checked against the cluster first.
            after: for each item, the indices of earlier items it must wait for (an experiment that reads the runs
                of others).
            on_result: called ``(index, result, node_id)`` as each item finishes (node_id None when local).

        Raises:
            ConfigError: a task asks for more than any node of the cluster has.
            WorkbenchError: a task's own error (as it was raised), or one lost more often than ``retries``.
        """
        on_result = on_result or (lambda index, result, node: None)
        if not self.distributed:
            results = []
            for index, item in enumerate(items):
                results.append(function(item))
                on_result(index, results[-1], None)
            return results
        return self._map_on_ray(function, items, names, resources or [Resources()] * len(items), after, on_result)

    def _map_on_ray(self, function, items, names, resources, after, on_result) -> list:
        import ray

        if not self._connected and not ray.is_initialized():
            raise WorkbenchError(
                "Executor('ray').map needs the executor entered first: with Executor('ray') as ex: ..."
            )
        check_fits(names, resources, self.address)
        task = ray.remote(_run_in_shared_dir)
        refs = []
        for index, item in enumerate(items):
            waits = [refs[j] for j in (after[index] if after else [])]
            options = {"num_cpus": resources[index].cpus, "num_gpus": resources[index].gpus}
            options.update(max_retries=self.retries, retry_exceptions=False, name=str(names[index]))
            refs.append(task.options(**options).remote(self.shared_dir, function, item, *waits))
        results: list = [None] * len(items)
        pending = {ref: index for index, ref in enumerate(refs)}
        while pending:
            finished, _ = ray.wait(list(pending), num_returns=1)
            index = pending.pop(finished[0])
            node, results[index] = _result_of(finished[0], names[index], self.retries)
            on_result(index, results[index], node)
        return results


def connect(address: str | None) -> bool:
    """Connect this process to Ray: to the cluster at ``address``, else a new instance on this machine's cores.

    Returns:
        True when this call connected (the caller disconnects), False when Ray was connected already.

    Raises:
        WorkbenchError: Ray is not installed, or nothing answers at ``address`` within a few seconds.
    """
    try:
        import ray
    except ImportError:
        raise WorkbenchError(
            "--executor ray needs Ray: pip install 'ray[data]' (the same version on every node)."
        ) from None
    if ray.is_initialized():
        return False
    if address:
        check_reachable(address)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # offline machines: no usage report
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}
    try:
        ray.init(
            address=address or "local",
            runtime_env={"env_vars": env},
            include_dashboard=False,
            logging_level="warning",
            log_to_driver=True,
        )
    except ray.exceptions.AuthenticationError:
        raise WorkbenchError(
            f"The Ray cluster at {address} refused this process's token. Give it the cluster's: RAY_AUTH_MODE=token "
            "and RAY_AUTH_TOKEN (or the token file ~/.ray/auth_token) as on the nodes."
        ) from None
    return True


def check_reachable(address: str) -> None:
    """Raise WorkbenchError in seconds when no server listens at ``HOST:PORT``."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address {address!r} must be HOST:PORT, the address `ray start --head` printed.")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise WorkbenchError(
            f"No Ray cluster answers at {address} ({exc.strerror or exc}). Start one there with "
            f"`ray start --head --port {port}`, or leave --address out to use this machine alone."
        ) from None


def check_fits(names: Sequence[str], resources: Sequence[Resources], address: str | None) -> None:
    """Raise ConfigError for the first task that no live node of the cluster could ever run."""
    import ray

    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    for name, need in zip(names, resources, strict=True):
        if not any(n.get("CPU", 0) >= need.cpus and n.get("GPU", 0) >= need.gpus for n in nodes):
            largest = max(nodes, key=lambda n: (n.get("GPU", 0), n.get("CPU", 0)), default={})
            where = f"the cluster at {address}" if address else "this machine's Ray instance"
            raise ConfigError(
                f"'{name}' asks for {need.cpus:g} CPU(s) and {need.gpus:g} GPU(s), more than any node of {where} has "
                f"(the largest: {largest.get('CPU', 0):g} CPUs, {largest.get('GPU', 0):g} GPUs). Lower its "
                "resources: in the experiments file, or add a node that has them."
            )


def _run_in_shared_dir(shared_dir: str, function: Callable, item: Any, *_waited: Any) -> tuple[str, Any]:
    """The Ray task around ``function(item)``: run in the shared folder, return the node's id with the result."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    if not os.path.isdir(shared_dir):
        raise WorkbenchError(
            f"Ray node {node[:12]} ({socket.gethostname()}) cannot reach the shared folder {shared_dir}: run "
            "directories and reports must be on a path every node mounts (give it with --shared-dir)."
        )
    os.chdir(shared_dir)
    return node, function(item)


def _result_of(ref, name: str, retries: int) -> tuple[str, Any]:
    """A finished task's (node id, result); its own error re-raised as it was, a lost task as one line."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause
        if isinstance(cause, WorkbenchError):
            raise cause from None
        raise WorkbenchError(f"'{name}' failed on its Ray worker: {type(cause).__name__}: {cause}") from None
    except ray.exceptions.RayError as exc:  # node died, worker crashed, ... after every retry
        summary = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WorkbenchError(
            f"'{name}' was lost {retries + 1} time(s) on the Ray cluster ({summary}). Its finished work is kept: "
            "rerun with --resume."
        ) from None


# --------------------------------------------------------------------------------------------------
# Batch prediction


def prediction_lines(texts: Sequence[str], proba: np.ndarray, predictor: Any, with_proba: bool) -> list[str]:
    """One JSON line per text: ``{"text", "label"}`` and, with ``with_proba``, ``"probabilities"`` by label name.
    ``predictor`` is a model or :class:`~workbench.runtime.Predictor` (``label_names``, ``labels_from_proba``)."""
    lines = []
    for text, label, row in zip(texts, predictor.labels_from_proba(proba), proba, strict=True):
        record: dict[str, Any] = {"text": text, "label": label}
        if with_proba:
            record["probabilities"] = {n: round(float(p), 6) for n, p in zip(predictor.label_names, row, strict=True)}
        lines.append(json.dumps(record))
    return lines


def file_texts(path: str | Path, text_column: str, rows: int) -> Iterator[list[str]]:
    """The texts of a table file, ``rows`` at a time, checked (column present, none empty) piece by piece."""
    for frame in read_table_chunks(path, rows):
        require_columns(frame, [text_column], str(path), fix="Pass --text-column with the right name.")
        check_text_column(frame, text_column, str(path))
        yield frame[text_column].astype(str).tolist()


def predict_file(
    predictor: Any,
    path: str | Path,
    out: TextIO,
    *,
    text_column: str = "text",
    with_proba: bool = False,
    rows: int = 10_000,
    executor: Executor | None = None,
    actors: int = 2,
) -> int:
    """Label every row of a table file and write JSON lines to ``out``, in the file's order.

    Args:
        predictor: a model or :class:`~workbench.runtime.Predictor` for the local executor; for Ray, the export
            folder's path (each actor loads it with :func:`~workbench.runtime.load_export`).
        path: a .csv, .tsv, .jsonl or .parquet file (optionally .gz) with a ``text_column``.
        out: where the lines go.
        rows: rows per piece (local) or per actor call (Ray).
        executor: None or ``local``: in this process, a piece at a time; ``ray``: Ray Data on the executor's
            cluster, entered already.
        actors: the size of Ray Data's actor pool, one CPU each.

    Returns:
        The number of rows written.
    """
    if executor is None or not executor.distributed:
        written = 0
        for texts in file_texts(path, text_column, rows):
            lines = prediction_lines(texts, predictor.predict_proba(texts), predictor, with_proba)
            out.write("".join(line + "\n" for line in lines))
            written += len(lines)
        return written
    return _predict_with_ray_data(str(predictor), Path(path), out, text_column, with_proba, rows, actors)


class _PredictBatches:
    """A Ray Data actor: one export loaded once, then its JSON lines for each batch of rows."""

    def __init__(self, export_dir: str, text_column: str, with_proba: bool, source: str):
        self.predictor = load_export(export_dir, threads=1)
        self.text_column, self.with_proba, self.source = text_column, with_proba, source

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import pandas as pd

        frame = pd.DataFrame({self.text_column: batch[self.text_column]})
        check_text_column(frame, self.text_column, self.source)
        texts = frame[self.text_column].astype(str).tolist()
        lines = prediction_lines(texts, self.predictor.predict_proba(texts), self.predictor, self.with_proba)
        return {"line": np.asarray(lines, dtype=object)}


def _ray_dataset(path: Path, text_column: str):
    """The file as a Ray Dataset read by the cluster's workers, its text column as strings (as locally)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import ray.data

    suffix = readable_format(path)
    light = {"num_cpus": 0}  # reading must not wait behind the actor pool, which may hold every CPU of the cluster
    if suffix in (".csv", ".tsv", ".txt"):
        quoted = suffix == ".csv"  # TSV is read without quoting, as workbench.datafiles reads it
        return ray.data.read_csv(
            str(path),
            parse_options=pacsv.ParseOptions(delimiter=READERS[suffix], quote_char='"' if quoted else False),
            convert_options=pacsv.ConvertOptions(
                column_types={text_column: pa.string()}, include_columns=[text_column]
            ),
            **light,
        )
    if suffix == ".jsonl":
        return ray.data.read_json(str(path), lines=True, **light)
    if suffix == ".parquet":
        return ray.data.read_parquet(str(path), columns=[text_column], **light)
    raise DataError(f"{path}: Ray Data reads .csv, .tsv, .jsonl and .parquet; save it as one of those.")


def _predict_with_ray_data(
    export_dir: str, path: Path, out: TextIO, text_column: str, with_proba: bool, rows: int, actors: int
) -> int:
    import ray.data

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # lines come back in the file's order
    context.enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # its plan and timing lines, not ours to show
    path = path.resolve()
    first = next(file_texts(path, text_column, 1), None)  # the column and the first row checked here, in seconds
    if first is None:
        raise DataError(f"{path} has a header but no rows. Add texts to it.")
    try:
        dataset = _ray_dataset(path, text_column).map_batches(
            _PredictBatches,
            fn_constructor_args=(export_dir, text_column, with_proba, str(path)),
            batch_size=rows,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=1,
        )
        written = 0
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            out.write("".join(line + "\n" for line in batch["line"]))
            written += len(batch["line"])
    except WorkbenchError:
        raise
    except Exception as exc:  # Ray wraps a worker's error in its own types
        raise _worker_error(exc, path) from None
    return written


def _worker_error(exc: BaseException, path: Path) -> WorkbenchError:
    """The workbench error inside Ray's wrapping, or one line naming the file and the worker's complaint."""
    seen = exc
    while seen is not None:
        if isinstance(seen, WorkbenchError):
            return seen
        cause = getattr(seen, "cause", None)
        seen = cause if isinstance(cause, BaseException) else (seen.__cause__ or seen.__context__)
    lines = [line for line in str(exc).splitlines() if line.strip()]
    problem = lines[-1].strip() if lines else type(exc).__name__
    if "No such file" in str(exc) or "FileNotFound" in str(exc):
        return DataError(f"Ray workers cannot read {path} ({problem}): the file must be on a path every node mounts.")
    return WorkbenchError(f"Batch prediction of {path} failed on a Ray worker: {problem}")
