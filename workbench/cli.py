"""The ``workbench`` command line: train, distill, evaluate, behave, predict, datasets, config, augment, cv, tune,
dashboard, ui, register, speed and run.

The commands that build a config (train, distill, config, cv, tune) take ``--config FILE`` (an experiment YAML holding
only what differs from the defaults) and dotted overrides such as ``train.lr=3e-5 data.train_subset=2000``::

    workbench train --config configs/sst2.yaml train.epochs=1
    workbench distill --config configs/sst2.yaml --teacher runs/sst2_mpnet/version_0
    workbench evaluate runs/sst2/version_0 --dataset sst2 --split validation
    workbench behave runs/sst2/version_0 --suite sentiment
    echo "a gripping, funny film" | workbench predict runs/sst2/version_0
    workbench datasets
    workbench config --config configs/trec.yaml
    workbench augment --config configs/trec.yaml augment.ops=[eda] --out trec_eda.csv
    workbench cv --config configs/trec.yaml --folds 5
    workbench tune --config configs/trec.yaml --trials 20 --workers 2
    workbench dashboard runs/trec
    workbench ui mlflow runs
    workbench register runs/trec/version_0 --name trec --alias champion
    workbench predict models:/trec@champion --file questions.csv
    workbench speed runs/trec/version_0 --dataset trec --split test --engine torch onnx onnx-int8
    workbench export runs/trec/version_0 --format onnx --optimize --quantize int8
    workbench serve runs/trec/version_0/exports/onnx-int8 --port 8000
    workbench run experiments/trec.yaml

Each command imports what it needs when it runs, so ``workbench --help`` and ``workbench datasets`` start
without loading torch and transformers.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import sys
from functools import partial
from pathlib import Path

from workbench.config import (
    ENGINE_EXPORTS,
    ENGINES,
    EXECUTORS,
    EXPORT_FORMATS,
    QUANTIZATIONS,
    DataConfig,
    ParityConfig,
    ServeConfig,
)
from workbench.errors import WorkbenchError

PARITY_OPTIONS = tuple(f.name for f in dataclasses.fields(ParityConfig))  # workbench export --margin ...


def _resume(args) -> bool | str:
    """``--resume``: False when absent, True for the newest version, else the given path."""
    return args.resume if args.resume not in (None, "latest") else (args.resume == "latest")


def _train(args) -> int:
    from workbench.config import load_config
    from workbench.runs import RunDir
    from workbench.trainer import train

    resume = _resume(args)
    result = train(load_config(args.config, args.overrides), resume=resume)
    if result.main:  # torchrun / accelerate launch: one process reports
        print((RunDir(result.run_dir) / RunDir.SUMMARY).read_text())
        print(f"run directory: {result.run_dir}")
    return 0


def _distill(args) -> int:
    from workbench.config import load_config
    from workbench.distill import distill
    from workbench.runs import RunDir

    # argparse gives --teacher every word after it; dotted overrides (key=value) among them are overrides
    overrides = list(args.overrides) + [t for t in args.teacher if "=" in t and not Path(t).exists()]
    teachers = [t for t in args.teacher if t not in overrides]
    config = load_config(args.config, overrides + ([f"distill.teacher={json.dumps(teachers)}"] if teachers else []))
    resume = _resume(args)
    result = distill(config, resume=resume)
    if result.main:
        print((RunDir(result.run_dir) / RunDir.SUMMARY).read_text())
        for split in ("validation", "test"):
            figures = result.metrics["distill"].get(split)
            if figures:
                print(
                    f"{split}: teacher accuracy {figures['teacher_accuracy']:.4f}, student "
                    f"{figures['student_accuracy']:.4f}, agreement {figures['agreement']:.4f}"
                )
        print(f"run directory: {result.run_dir}")
    return 0


def _load_model(path: str):
    from workbench.models import TextClassificationModel
    from workbench.track import resolve_model_path

    return TextClassificationModel.from_pretrained(resolve_model_path(path))


def _require_one_source(args) -> None:
    if bool(args.file) == bool(args.dataset):
        raise WorkbenchError("Give exactly one of --file FILE or --dataset NAME [--split SPLIT].")


def _evaluate(args) -> int:
    from workbench.data import TextDataModule
    from workbench.evaluation import evaluate_file, evaluate_model
    from workbench.metrics import SUMMARY_METRICS

    _require_one_source(args)
    model = _load_model(args.model)
    options = {"text_column": args.text_column, "label_column": args.label_column}
    if args.file:  # read and scored a piece at a time: a file of any size
        metrics = evaluate_file(model, args.file, **options)
    else:
        metrics = evaluate_model(model, TextDataModule.for_model(model, dataset=args.dataset).encode_split(args.split))
    if args.out:
        Path(args.out).write_text(json.dumps(metrics, indent=2))
    print("  ".join(f"{k}={metrics[k]:.4f}" for k in SUMMARY_METRICS if metrics.get(k) is not None))
    return 0


def _behave(args) -> int:
    from workbench.behave import failure_table, run_suite

    result = run_suite(args.suite, args.run_dir, split=args.split, out=args.out)
    table = failure_table(result)
    percent = table["failure_rate"].map(lambda rate: "-" if rate != rate else f"{rate:.1%}")  # NaN: no text applied
    print(table.assign(failure_rate=percent).to_string(index=False))
    mean = "-" if result["failure_rate"] is None else f"{result['failure_rate']:.1%}"
    print(f"mean failure rate {mean} over {len(table)} tests; written to {result['file']}")
    return 0


def _executor(args):
    """The executor that ``--executor`` and ``--address`` ask for, to be entered (``with``)."""
    from workbench.cluster import Executor

    return Executor(args.executor, address=args.address, shared_dir=args.shared_dir)


def _predictor(path: str, executor):
    """What predicts: an export folder's :class:`~workbench.runtime.Predictor` (or, for Ray Data, its path, which
    each actor loads), else the saved model."""
    from workbench.runtime import EXPORT_FILE, load_export

    is_export = (Path(path) / EXPORT_FILE).is_file()
    if executor.distributed:
        if not is_export:
            raise WorkbenchError(
                f"{path} is not an export folder: with --executor ray, predict maps an export over the file (ONNX, "
                "no torch on the workers). Export the run first: workbench export RUN_DIR --engine onnx-int8"
            )
        return path
    return load_export(path) if is_export else _load_model(path)


def _predict(args) -> int:
    from workbench.cluster import file_texts, predict_file, prediction_lines

    executor = _executor(args)
    if executor.distributed and not args.file:
        raise WorkbenchError("--executor ray predicts a file: pass --file FILE (standard input is read here).")
    predictor = _predictor(args.model, executor)
    if args.file:
        next(file_texts(args.file, args.text_column, 1))  # the input's errors come before --out is opened (and emptied)
    else:
        texts = [line.rstrip("\n") for line in sys.stdin if line.strip()]
        if not texts:
            raise WorkbenchError("No input: pass --file FILE or pipe one text per line on standard input.")
    with executor, open(args.out, "w") if args.out else contextlib.nullcontext(sys.stdout) as handle:
        if args.file:
            options = {"text_column": args.text_column, "with_proba": args.proba, "rows": args.chunk_rows}
            predict_file(predictor, args.file, handle, executor=executor, actors=args.actors, **options)
        else:
            handle.write(
                "".join(
                    f"{line}\n"
                    for line in prediction_lines(texts, predictor.predict_proba(texts), predictor, args.proba)
                )
            )
    return 0


def _datasets(args) -> int:
    from workbench.catalog import data_root, list_datasets, split_sizes

    root = data_root(args.data_root)
    print(f"data root: {root}\n")
    print(f"{'name':10s} {'type':12s} {'splits (examples)':40s} description")
    for entry in list_datasets():
        try:
            sizes = ", ".join(f"{k} {v:,}" for k, v in split_sizes(entry.name, root).items())
        except WorkbenchError as exc:
            sizes = f"unavailable ({exc})"
        kind = "multi-label" if entry.multi_label else "single-label"
        print(f"{entry.name:10s} {kind:12s} {sizes:40s} {entry.description}")
        if entry.note:
            print(f"{'':10s} note: {entry.note}")
    return 0


def _config(args) -> int:
    from workbench.config import describe, load_config

    cfg = load_config(args.config, args.overrides)
    print(describe(cfg))
    return 0


def _cv(args) -> int:
    from workbench.config import load_config
    from workbench.cv import cross_validate

    with _executor(args) as executor:
        result = cross_validate(
            load_config(args.config, args.overrides), n_folds=args.folds, resume=not args.restart, executor=executor
        )
    for key, mean in result.summary["mean"].items():
        print(f"{key:20s} {mean:.4f} ± {result.summary['std'][key]:.4f}")
    print(f"out-of-fold probabilities: {result.folder / 'oof.parquet'}")
    return 0


def _label(args) -> int:
    from workbench.active import label_round
    from workbench.config import load_config

    done = label_round(load_config(args.config, args.overrides), args.pool, args.labels, args.out)
    trained = (
        f"trained on {done['labels']} labels ({done['run_dir']})" if done["run_dir"] else "cold start, no model yet"
    )
    print(f"{trained}; {done['asked']} texts to label next: {args.out}")
    return 0


def _al_simulate(args) -> int:
    from workbench.active import simulate
    from workbench.config import load_config

    # argparse gives --strategies every word after it; dotted overrides (key=value) among them are overrides
    overrides = list(args.overrides) + [s for s in args.strategies or [] if "=" in s]
    config = load_config(args.config, overrides)
    strategies = [s for s in args.strategies or [] if "=" not in s] or [config.active.strategy]
    for strategy in strategies:  # every name is checked before the first study starts
        load_config(args.config, [*overrides, f"active.strategy={strategy}"])
    for strategy in strategies:
        curve = simulate(config, strategy)
        print(f"{strategy} (seed {curve['seed']}): labels -> accuracy")
        for point in curve["rounds"]:
            print(f"  {point['labels']:5d}  {point['accuracy']:.4f}  ({point['scored_on']})")
    return 0


def _augment(args) -> int:
    from workbench.config import load_config
    from workbench.data import TextDataModule
    from workbench.explore import augmented_examples

    config = load_config(args.config, args.overrides)
    if args.epoch < 0:
        raise WorkbenchError(f"--epoch {args.epoch}: epochs count from 0.")
    if not config.augment.enabled:
        raise WorkbenchError(
            "Nothing to augment: augment.ops is empty. Set it in the config or on the command line, "
            "e.g. augment.ops=[eda]."
        )
    out = Path(args.out)
    if out.suffix not in (".csv", ".tsv", ".jsonl"):
        raise WorkbenchError(f"--out {out}: write .csv, .tsv or .jsonl.")
    dm = TextDataModule(
        config=config.data,
        model_name=config.model.backbone,
        trust_remote_code=config.model.trust_remote_code,
        seed=config.train.seed,
        augment=config.augment,
    ).setup()
    table = augmented_examples(dm, epoch=args.epoch)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".jsonl":
        table.to_json(out, orient="records", lines=True, force_ascii=False)
    else:
        table.to_csv(out, sep="\t" if out.suffix == ".tsv" else ",", index=False)
    counts = ", ".join(f"{op} {n}" for op, n in table["op"].value_counts().sort_index().items())
    print(
        f"{len(table)} variants of {len(dm.train_dataset.base)} training examples (epoch {args.epoch}: {counts}) "
        f"written to {out}"
    )
    return 0


def _tune(args) -> int:
    from workbench.config import load_config
    from workbench.tune import retrain_best, study_exists, tune

    overrides = list(args.overrides)
    for key, value in (("tune.trials", args.trials), ("tune.timeout", args.timeout), ("run.name", args.study)):
        if value is not None:
            overrides.append(f"{key}={value}")
    config = load_config(args.config, overrides)
    if args.resume and not study_exists(config, args.storage):
        raise WorkbenchError(
            f"--resume: no study '{config.run.name}' in {Path(config.run.root) / config.run.name} "
            "to continue. Leave --resume out to start it, or give the study's --study NAME."
        )
    result = tune(config, storage=args.storage, workers=args.workers)
    print(result.trials_table().to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if result.best is None:
        print(f"no trial completed; the study is in {result.folder}")
        return 1
    best = result.best
    print(f"best: trial {best['trial']}, {best['metric']} = {best['value']:.4f}, {json.dumps(best['params'])}")
    print(f"best run: {best['run_dir']} (also {result.folder / 'best_trial'})")
    if args.retrain_best:
        summary = retrain_best(config, best, seeds=args.seeds)
        for name in ("tuned", "untuned"):
            print(
                f"{name:8s} {summary['metric']} on {summary['split']}: {summary[name]['mean']:.4f} ± "
                f"{summary[name]['std']:.4f} over {args.seeds} seeds"
            )
    return 0


def _dashboard(args) -> int:
    from optuna_dashboard import run_server

    from workbench.tune import storage_of, storage_url

    url = storage_url(args.study)
    print(f"optuna-dashboard for {url} on http://127.0.0.1:{args.port}/ (Ctrl-C stops it)", flush=True)
    run_server(storage_of(url), host="127.0.0.1", port=args.port)
    return 0


def _ui(args) -> int:
    import os

    from workbench.track import check_installed, mlflow_uri

    check_installed([args.tool])
    root = Path(args.root)
    if not root.is_dir():
        raise WorkbenchError(
            f"{root} is not a folder of runs. Give the run.root your runs were written to (default: runs)."
        )
    if args.tool == "mlflow":
        store = mlflow_uri(root)  # $MLFLOW_TRACKING_URI, else <root>/mlflow.db
        if store.startswith(("http://", "https://")):
            raise WorkbenchError(f"MLFLOW_TRACKING_URI is the server {store}: open it in a browser instead.")
        if store.startswith("sqlite:///") and not Path(store[len("sqlite:///") :]).is_file():
            raise WorkbenchError(
                f"{store[len('sqlite:///') :]} does not exist: no run under {root} was tracked with "
                "MLflow. Train with run.track=[mlflow], or set MLFLOW_TRACKING_URI to its store."
            )
        command = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            store,
            "--host",
            "127.0.0.1",
            "--port",
            str(args.port or 5000),
        ]
    else:
        command = [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(root),
            "--host",
            "127.0.0.1",
            "--port",
            str(args.port or 6006),
        ]
    print(
        f"{args.tool} on http://127.0.0.1:{args.port or (5000 if args.tool == 'mlflow' else 6006)}/ (Ctrl-C stops it)",
        flush=True,
    )
    os.execv(sys.executable, command)  # the tool's own server replaces this process


def _register(args) -> int:
    from workbench.track import check_installed

    check_installed(["mlflow"])  # before importing the registry, which builds on mlflow
    from workbench.registry import register_run

    record = register_run(args.run_dir, args.name, alias=args.alias)
    print(
        f"registered {record['model_uri']} (version {record['version']}) in {record['tracking_uri']}, "
        f"MLflow run {record['run_id']}"
    )
    return 0


def _speed(args) -> int:
    from workbench.data import TextDataModule
    from workbench.datafiles import read_table, require_columns
    from workbench.export import engine_predictor
    from workbench.inference import compare_engines
    from workbench.plots import latency_figure

    _require_one_source(args)
    model = _load_model(args.model)
    labels = None
    if args.file:
        frame = read_table(args.file)
        require_columns(frame, [args.text_column], args.file, fix="Pass --text-column with the right name.")
        texts = frame[args.text_column].astype(str).tolist()
        if "label" in frame.columns and args.text_column == "text":  # labelled: accuracy of each engine too
            dataset = TextDataModule.for_model(model).encode_frame(frame, args.file)
            texts, labels = dataset.texts, dataset.labels
    else:
        dataset = TextDataModule.for_model(model, dataset=args.dataset).encode_split(args.split)
        texts, labels = dataset.texts, dataset.labels
    if any(x != "natural" and not x.isdigit() for x in args.seq_lengths):
        raise WorkbenchError(f"--seq-lengths {' '.join(args.seq_lengths)}: give token counts or 'natural'.")
    lengths = [None if x == "natural" else int(x) for x in args.seq_lengths]
    summary, table = compare_engines(
        partial(engine_predictor, args.model),
        args.engine,
        texts,
        labels,
        batch_sizes=args.batch_sizes,
        seq_lengths=lengths,
        repeats=args.repeats,
        threads=args.threads,
    )
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print()
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.out:
        table.to_csv(args.out, index=False)
    if args.plot:
        latency_figure(table).savefig(args.plot, dpi=120)
    return 0


def _export(args) -> int:
    from workbench.export import export_model

    parity = ParityConfig(**{name: getattr(args, name) for name in PARITY_OPTIONS})
    export_model(
        args.run,
        args.out,
        engine=args.engine,
        model_format=args.format,
        optimize=args.optimize,
        quantize=args.quantize,
        examples=args.file,
        max_examples=args.max_examples,
        parity=parity,
    )
    return 0


def _serve(args) -> int:
    from workbench.config import ServeConfig
    from workbench.runtime import EXPORT_FILE, load_export
    from workbench.serve import serve

    config = ServeConfig(
        host=args.host,
        port=args.port,
        batching=not args.no_batching,
        max_batch_size=args.max_batch_size,
        engine_batch_size=args.engine_batch_size,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        max_texts=args.max_texts,
        max_chars=args.max_chars,
        max_body_bytes=args.max_body_bytes,
        api_key_env=args.api_key_env,
        threads=args.threads,
    )
    if (Path(args.model) / EXPORT_FILE).exists():  # an export folder: torch never loads
        predictor = load_export(args.model, args.engine, threads=config.threads, spin_wait=False)
    else:
        from workbench.export import engine_predictor

        predictor = engine_predictor(args.model, args.engine or "onnx-int8", threads=config.threads, spin_wait=False)
    serve(predictor, config)
    return 0


def _run(args) -> int:
    from workbench.config import parse_overrides
    from workbench.reports import run_experiments

    logging.getLogger("papermill").setLevel(logging.WARNING)  # our own progress lines say what runs where
    overrides = parse_overrides(args.set) if args.set else {}
    with _executor(args) as executor:
        state = run_experiments(
            args.experiments,
            resume=args.resume,
            reports_dir=args.reports,
            overrides=overrides,
            cell_timeout=args.cell_timeout,
            progress=not args.no_progress,
            executor=executor,
        )
    return 1 if state["failed"] else 0


_SAVED_MODEL = "saved model folder, run directory, checkpoints/best-model.ckpt or models:/NAME@alias"


def _add_input_options(
    parser: argparse.ArgumentParser, *, model: str, file: str, dataset: bool = False, label_column: bool = False
) -> None:
    """The model and where its texts come from (``--file``, or ``--dataset`` and ``--split``), with the columns to
    read; defaults and help are :class:`~workbench.config.DataConfig`'s, so they are written once."""
    fields = DataConfig.__dataclass_fields__
    parser.add_argument("model", help=model)
    parser.add_argument("--file", help=file)
    if dataset:
        parser.add_argument("--dataset", help="catalog dataset name")
        split = fields["val_split"].default
        parser.add_argument("--split", default=split, help=f"catalog split (default: {split})")
    columns = ["text_column"] + (["label_column"] if label_column else [])
    for name in columns:
        parser.add_argument(
            "--" + name.replace("_", "-"),
            default=fields[name].default,
            help=f"{fields[name].metadata['help'].rstrip('.')} (default: {fields[name].default})",
        )


def build_parser() -> argparse.ArgumentParser:
    """The ``workbench`` parser: one block per subcommand, in the order ``workbench --help`` lists them.

    Over 80 lines because it is a declaration list with no logic in it; options shared by several commands come
    from helpers (``with_config``, :func:`_add_input_options`) and settings' defaults from :mod:`workbench.config`.
    """
    parser = argparse.ArgumentParser(prog="workbench", description="Transformer text classification workbench.")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p):
        p.add_argument("--config", help="experiment YAML with only what differs from the defaults")
        p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=3e-5 data.batch_size=16")
        return p

    def with_resume(p):
        p.add_argument(
            "--resume",
            nargs="?",
            const="latest",
            default=None,
            help="resume the newest version of this run name, or the given run directory/checkpoint",
        )

    def with_executor(p):
        p.add_argument(
            "--executor",
            choices=EXECUTORS,
            default=EXECUTORS[0],
            help="local: here, one item after another (default); ray: one Ray task per item (workbench.cluster)",
        )
        p.add_argument(
            "--address",
            help="with --executor ray: HOST:PORT of a cluster (`ray start --head`); default: start one here",
        )
        p.add_argument(
            "--shared-dir",
            help="with --executor ray: the folder every node mounts at the same path, where runs and reports go "
            "(default: the current directory)",
        )

    train = with_config(sub.add_parser("train", help="fine-tune a model"))
    with_resume(train)
    train.set_defaults(func=_train)

    distill = with_config(
        sub.add_parser("distill", help="train a student on a teacher run's soft targets (knowledge distillation)")
    )
    distill.add_argument(
        "--teacher",
        nargs="+",
        default=[],
        help="the teacher run directory, or several whose probabilities are averaged (e.g. the fold runs of cv)",
    )
    with_resume(distill)
    distill.set_defaults(func=_distill)

    evaluate = sub.add_parser("evaluate", help="score a saved model on labelled data")
    _add_input_options(
        evaluate, model=_SAVED_MODEL, file="labelled .csv/.tsv/.jsonl/.parquet file", dataset=True, label_column=True
    )
    evaluate.add_argument("--out", help="write the full metrics JSON here")
    evaluate.set_defaults(func=_evaluate)

    behave = sub.add_parser(
        "behave", help="behavioural tests of a run's model (minimum functionality, invariance, directional)"
    )
    behave.add_argument("run_dir", help="a finished run directory (its best/ model and its data)")
    behave.add_argument(
        "--suite", required=True, help="a suite YAML file, or a shipped one: sentiment (SST-2, IMDB), questions (TREC)"
    )
    behave.add_argument("--split", help="the split whose texts are perturbed: validation or test (default: suite's)")
    behave.add_argument("--out", help="write <suite>.json into this folder (default: the run's behavior/ folder)")
    behave.set_defaults(func=_behave)

    predict = sub.add_parser("predict", help="label texts from a file or standard input (JSON lines out)")
    _add_input_options(predict, model=_SAVED_MODEL, file="file with a text column; without it, one text per stdin line")
    predict.add_argument("--proba", action="store_true", help="include class probabilities")
    predict.add_argument("--out", help="write JSON lines here instead of standard output")
    predict.add_argument(
        "--chunk-rows",
        type=int,
        default=10_000,
        help="rows read, predicted and written at a time (memory does not grow with the file)",
    )
    predict.add_argument(
        "--actors", type=int, default=2, help="with --executor ray: Ray Data's pool of predicting actors, a CPU each"
    )
    with_executor(predict)
    predict.set_defaults(func=_predict)

    datasets = sub.add_parser("datasets", help="list the catalog datasets and their split sizes")
    datasets.add_argument("--data-root", help="data folder (default: $WORKBENCH_DATA or ../shared/data)")
    datasets.set_defaults(func=_datasets)

    cv = with_config(
        sub.add_parser("cv", help="k-fold cross-validation: one run per fold, mean ± std, out-of-fold probabilities")
    )
    cv.add_argument("--folds", type=int, default=5)
    cv.add_argument("--restart", action="store_true", help="retrain every fold instead of reusing finished ones")
    with_executor(cv)
    cv.set_defaults(func=_cv)

    label = with_config(
        sub.add_parser(
            "label", help="one active-learning round: train on the labels so far, write the texts to label next"
        )
    )
    label.add_argument("--pool", required=True, help="the unlabelled texts (data.text_column), any table format")
    label.add_argument(
        "--labels", required=True, help="the labels so far: a table with text and label (may not exist yet)"
    )
    label.add_argument("--out", default="to_label.csv", help="where the next texts go (text, guess, confidence)")
    label.set_defaults(func=_label)

    active = sub.add_parser("al", help="active learning: which texts to label next")
    active_commands = active.add_subparsers(dest="al_command", required=True)
    simulate = with_config(
        active_commands.add_parser(
            "simulate", help="the loop with the known labels as the oracle: a learning curve per query strategy"
        )
    )
    simulate.add_argument("--strategies", nargs="+", help="query strategies to compare (default: active.strategy)")
    simulate.set_defaults(func=_al_simulate)

    augment = with_config(sub.add_parser("augment", help="write the augmented training set of an epoch for inspection"))
    augment.add_argument("--out", required=True, help="the .csv, .tsv or .jsonl file to write")
    augment.add_argument("--epoch", type=int, default=0, help="whose variants (each epoch has fresh ones; default 0)")
    augment.set_defaults(func=_augment)

    tune = with_config(sub.add_parser("tune", help="hyperparameter search with Optuna: one run per trial, pruning"))
    tune.add_argument("--trials", type=int, help="trials in the study (default: tune.trials)")
    tune.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    tune.add_argument("--study", help="study name (default: run.name); the same name continues a study")
    tune.add_argument(
        "--storage",
        help="Optuna storage URL (default: SQLite in the study's folder), e.g. postgresql://user@127.0.0.1:5432/db",
    )
    tune.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes on this machine sharing the study (a journal file unless --storage)",
    )
    tune.add_argument(
        "--resume",
        action="store_true",
        help="continue an existing study (the same --study name continues it anyway; this checks it exists)",
    )
    tune.add_argument(
        "--retrain-best",
        action="store_true",
        help="retrain the best trial and the untuned config on --seeds seeds; report mean ± std",
    )
    tune.add_argument("--seeds", type=int, default=3, help="seeds for --retrain-best (default 3)")
    tune.set_defaults(func=_tune)

    dashboard = sub.add_parser("dashboard", help="optuna-dashboard for a study, on 127.0.0.1")
    dashboard.add_argument("study", help="a study folder (runs/<study>), its study.db, or a storage URL")
    dashboard.add_argument("--port", type=int, default=8080)
    dashboard.set_defaults(func=_dashboard)

    ui = sub.add_parser("ui", help="the MLflow or TensorBoard UI on the runs' stores, on 127.0.0.1")
    ui.add_argument("tool", choices=["mlflow", "tensorboard"])
    ui.add_argument("root", nargs="?", default="runs", help="the runs folder (run.root, default: runs)")
    ui.add_argument("--port", type=int, help="default: 5000 for mlflow, 6006 for tensorboard")
    ui.set_defaults(func=_ui)

    register = sub.add_parser("register", help="register a run's model in the MLflow model registry")
    register.add_argument("run_dir", help="a finished run directory (runs/<name>/version_N)")
    register.add_argument("--name", required=True, help="the registered model's name")
    register.add_argument("--alias", help="an alias to point at the new version, e.g. champion")
    register.set_defaults(func=_register)

    speed = sub.add_parser("speed", help="inference latency (p50/p95/p99) and throughput by batch size and length")
    _add_input_options(
        speed,
        model="saved model folder or run directory",
        file="texts to time (a table with a text column)",
        dataset=True,
    )
    speed.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 64])
    speed.add_argument("--seq-lengths", nargs="+", default=["natural"], help="token lengths, or 'natural'")
    speed.add_argument("--repeats", type=int, default=5)
    speed.add_argument(
        "--engine",
        nargs="+",
        default=["torch"],
        choices=ENGINES,
        metavar="ENGINE",
        help=f"engines to compare in one run ({', '.join(ENGINES)}); a run directory's exports are made "
        "as needed under RUN_DIR/exports/",
    )
    speed.add_argument("--threads", type=int, default=None, help="engine threads (default: one per core)")
    speed.add_argument("--out", help="write the table as CSV")
    speed.add_argument("--plot", help="write the throughput/latency figure (PNG)")
    speed.set_defaults(func=_speed)

    export = sub.add_parser(
        "export", help="export a run's model (ONNX, TorchScript, torch.export; int8) with a parity report"
    )
    export.add_argument("run", help="run directory (or saved model folder, with --file)")
    export.add_argument("--format", default="onnx", choices=EXPORT_FORMATS)
    export.add_argument("--optimize", action="store_true", help="ONNX Runtime's transformer fusions (onnx only)")
    export.add_argument("--quantize", choices=QUANTIZATIONS, default=None, help="dynamic int8 weights")
    export.add_argument(
        "--engine",
        choices=list(ENGINE_EXPORTS),
        default=None,
        help="shorthand for a format + optimize + quantize recipe, e.g. onnx-int8",
    )
    export.add_argument("--out", help="export folder (default: RUN_DIR/exports/<engine>)")
    export.add_argument("--file", help="labelled table to check parity on (default: the run's validation split)")
    export.add_argument("--max-examples", type=int, default=1000, help="examples in the parity report")
    for name in PARITY_OPTIONS:  # what the parity report must show
        export.add_argument(
            "--" + name.replace("_", "-"),
            type=float,
            default=getattr(ParityConfig, name),
            help=ParityConfig.__dataclass_fields__[name].metadata["help"],
        )
    export.set_defaults(func=_export)

    serve_defaults = ServeConfig()
    serve = sub.add_parser("serve", help="the prediction service (FastAPI + uvicorn) on an export or a run")
    serve.add_argument("model", help="export folder, or run directory (exported for --engine first if needed)")
    serve.add_argument(
        "--engine",
        choices=ENGINES,
        default=None,
        help="default: the export folder's engine, or onnx-int8 for a run directory",
    )
    serve.add_argument("--host", default=serve_defaults.host)
    serve.add_argument("--port", type=int, default=serve_defaults.port)
    serve.add_argument("--no-batching", action="store_true", help="one model call per request")
    for name in ("max_batch_size", "engine_batch_size", "max_queue", "max_texts", "max_chars", "max_body_bytes"):
        serve.add_argument(
            "--" + name.replace("_", "-"),
            type=int,
            default=getattr(serve_defaults, name),
            help=ServeConfig.__dataclass_fields__[name].metadata["help"],
        )
    serve.add_argument(
        "--max-wait-ms",
        type=float,
        default=serve_defaults.max_wait_ms,
        help=ServeConfig.__dataclass_fields__["max_wait_ms"].metadata["help"],
    )
    serve.add_argument(
        "--api-key-env",
        default=serve_defaults.api_key_env,
        help=ServeConfig.__dataclass_fields__["api_key_env"].metadata["help"],
    )
    serve.add_argument("--threads", type=int, default=None, help="engine threads (default: one per core)")
    serve.set_defaults(func=_serve)

    run = sub.add_parser("run", help="execute notebooks for every experiment in a file; write HTML reports + index")
    run.add_argument("experiments", help="experiments YAML (see experiments/ and workbench/reports.py)")
    run.add_argument(
        "--resume", action="store_true", help="skip notebooks that already succeeded with the same parameters"
    )
    run.add_argument(
        "--set",
        nargs="*",
        metavar="NAME=VALUE",
        default=None,
        help="parameter values for every notebook that declares them, e.g. --set epochs=0.1 model=minilm",
    )
    run.add_argument("--reports", help="reports folder (default: the file's reports_dir, or reports)")
    run.add_argument("--cell-timeout", type=float, default=None, help="seconds one cell may run (default: no limit)")
    run.add_argument("--no-progress", action="store_true", help="hide the per-cell progress bar")
    with_executor(run)
    run.set_defaults(func=_run)

    config = with_config(sub.add_parser("config", help="print the resolved configuration with help texts"))
    config.set_defaults(func=_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except WorkbenchError as exc:
        print(f"workbench {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
