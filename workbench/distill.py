"""Knowledge distillation: a small student trained on a large teacher's soft targets (``workbench distill``).

A teacher is a finished run or a saved model folder, or several whose probabilities are averaged (an ensemble,
such as the fold runs of ``workbench cv``); its folder holds its weights, config and tokenizer, so its backbone
need not be installed. The transfer set is the training split, plus ``distill.transfer_copies`` augmented copies of
it (:mod:`workbench.augment`: the ``augment`` section's operations, EDA if it names none) and the texts of
``distill.unlabelled_file``. The teacher labels all of it once; its logits are cached as ``.npy`` files under
``$WORKBENCH_CACHE/teacher`` (next to the encoded-data cache) keyed by the teacher's weights, its text processing
and the texts, so a second student costs no teacher time. The student is an ordinary run, trained by
:class:`~workbench.trainer.Trainer` with a :class:`~workbench.losses.DistillationLoss` (checkpoints, ``--resume``,
trackers, torchrun); its ``metrics.json`` gains a ``distill`` section: the teachers, their accuracy on the same
splits, and the student's agreement with them::

    config = load_config("configs/sst2.yaml", {"distill.teacher": ["runs/sst2_mpnet/version_0"]})
    result = distill(config)
    result.metrics["distill"]["validation"]  # teacher and student accuracy, agreement
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from tqdm.auto import tqdm

from workbench.augment import Augmenter, cache_root
from workbench.backbones import ALIASES, resolve_backbone
from workbench.config import Config, DistillConfig
from workbench.data import EncodedDataset, TextDataModule
from workbench.datafiles import check_text_column, read_table, require_columns
from workbench.errors import ConfigError, DataError, ModelLoadError
from workbench.labels import LabelMap
from workbench.losses import DISTILL_FEATURES
from workbench.metrics import predict_from_proba, proba_from_logits
from workbench.models import META_FILE, MODEL_FILE, TextClassificationModel
from workbench.runs import load_run, model_folder
from workbench.store import encode_cached
from workbench.track import check_installed
from workbench.trainer import FitResult, Trainer, choose_precision

log = logging.getLogger(__name__)

CHUNK = 2048  # texts per step of the teacher's progress bar


@dataclass
class Teacher:
    """A teacher model, where it came from, and a hash of its weights (part of its outputs' cache key)."""

    path: str
    model: TextClassificationModel
    fingerprint: str


def load_teacher(path: str | Path) -> Teacher:
    """The teacher at ``path``: a finished run directory (its ``best/``) or a saved model folder.

    Raises:
        ConfigError: a backbone name given instead of a run (naming how to train one, or `make mpnet`).
        RunNotFoundError: the folder is missing or not a finished run.
        ModelLoadError: the model folder is incomplete or corrupt.
    """
    folder = Path(path)
    if not folder.exists() and str(path) in ALIASES:
        try:
            resolve_backbone(str(path))
        except ModelLoadError as exc:
            raise ConfigError(f"distill.teacher '{path}' is a backbone, not a trained teacher, and {exc}") from None
        raise ConfigError(
            f"distill.teacher '{path}' is a backbone, not a trained teacher. Fine-tune it first (e.g. `workbench "
            f"train --config configs/sst2_mpnet.yaml`) and pass the run directory it prints."
        )
    if not (folder / META_FILE).exists():
        folder = model_folder(load_run(folder).path)  # a run directory: finished, with its best model
    model = TextClassificationModel.from_pretrained(folder)
    digest = hashlib.sha256()
    with open(folder / MODEL_FILE, "rb") as weights:
        for block in iter(lambda: weights.read(2**22), b""):
            digest.update(block)
    return Teacher(str(path), model, digest.hexdigest())


def check_teachers(teachers: list[Teacher], label_names: list[str], multi_label: bool) -> LabelMap:
    """The label map the student learns: the teachers', which must agree with each other and cover every label of
    the training data (a one-line ConfigError otherwise)."""
    first = teachers[0]
    for other in teachers[1:]:
        if other.model.label_names != first.model.label_names or other.model.multi_label != first.model.multi_label:
            raise ConfigError(
                f"Teachers {first.path} and {other.path} predict different labels ({first.model.label_names} against "
                f"{other.model.label_names}): an ensemble must share one label set."
            )
    if first.model.multi_label != multi_label:
        kinds = {True: "multi-label", False: "single-label"}
        raise ConfigError(
            f"Teacher {first.path} is {kinds[first.model.multi_label]} but the training data is {kinds[multi_label]}."
        )
    unknown = sorted(set(label_names) - set(first.model.label_names))
    if unknown:
        raise ConfigError(
            f"The training data has label(s) {unknown[:10]} that teacher {first.path} does not predict (its labels: "
            f"{first.model.label_names[:20]}). Distil on data with the teacher's label set."
        )
    return LabelMap(first.model.label_names, multi_label)


def _cache_path(teacher: Teacher, texts: list[str], pairs: list[str] | None, precision: str, what: str = "") -> Path:
    key = hashlib.sha256()
    for part in (teacher.fingerprint, json.dumps(asdict(teacher.model.processing), sort_keys=True), precision, what):
        key.update(part.encode())
    for text in texts:
        key.update(text.encode() + b"\0")
    for pair in pairs or []:
        key.update(b"\1" + pair.encode())
    return cache_root() / "teacher" / f"{key.hexdigest()[:32]}.npy"


def _cached_teacher_output(
    teacher: Teacher,
    texts: list[str],
    pairs: list[str] | None,
    what: str,
    row_shape: tuple[int, ...],
    dtype: type,
    compute: Callable[[list[dict]], np.ndarray],
    desc: str,
) -> tuple[np.ndarray, bool]:
    """What ``compute`` makes of the teacher's encoded ``texts``, ``(N, *row_shape)``, and whether it came from the
    cache (keyed by ``what`` too). It is computed once, in bf16 autocast where
    :func:`~workbench.trainer.choose_precision` would train the teacher in bf16, in chunks under a progress bar, and
    saved atomically; with several processes (torchrun) the first computes it and the others read its file."""
    model = teacher.model
    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision, _ = choose_precision("auto", device, model.backbone.config.hidden_size)
    path = _cache_path(teacher, texts, pairs, precision, what)
    shape = (len(texts), *row_shape)
    with PartialState(cpu=device == "cpu").main_process_first():
        if path.exists():
            try:
                out = np.load(path)
                if out.shape == shape:
                    return out, True
            except (OSError, ValueError) as exc:
                log.warning("Teacher-output cache %s is unreadable (%s); computing again.", path, exc)
        model.to(device)
        features = encode_cached(model.processor(), texts, pairs)
        out = np.empty(shape, dtype=dtype)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
            for start in tqdm(range(0, len(texts), CHUNK), desc=desc, unit="chunk"):
                chunk = features[start : start + CHUNK]
                out[start : start + len(chunk)] = compute(chunk)
        model.to("cpu")
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{PartialState().process_index}.partial.npy")
        np.save(partial, out)
        partial.replace(path)
    return out, False


def teacher_logits(
    teacher: Teacher, texts: list[str], pairs: list[str] | None = None, batch_size: int = 64, desc: str = "teacher"
) -> tuple[np.ndarray, bool]:
    """The teacher's logits ``(N, K)`` for ``texts`` and whether they came from the cache (computed once:
    :func:`_cached_teacher_output`)."""
    model = teacher.model
    return _cached_teacher_output(
        teacher,
        texts,
        pairs,
        "",
        (model.num_labels,),
        np.float32,
        lambda chunk: model.logits_of(chunk, batch_size=batch_size).numpy(),
        f"{desc} ({len(texts)} texts)",
    )


def teacher_states(
    teacher: Teacher, texts: list[str], layers: list[int], batch_size: int = 64
) -> tuple[np.ndarray, bool]:
    """The teacher's token-averaged states at ``layers`` for ``texts``, ``(N, len(layers), width)`` in float16 (what
    ``distill.match_layers`` matches), and whether they came from the cache (computed once, as logits are)."""
    model = teacher.model
    return _cached_teacher_output(
        teacher,
        texts,
        None,
        f"layer means {layers}",
        (len(layers), model.backbone.config.hidden_size),
        np.float16,
        lambda chunk: model.layer_means(chunk, layers, batch_size),
        f"teacher layers {layers}",
    )


def student_layers(teacher_layers: list[int], teacher_depth: int, student_depth: int) -> list[int]:
    """The student layer that matches each teacher layer: the one at the same relative depth.

    Example:
        >>> student_layers([4, 8, 12], 12, 6)
        [2, 4, 6]
    """
    return [round(layer * student_depth / teacher_depth) for layer in teacher_layers]


def soft_targets(logits: list[np.ndarray], temperature: float, multi_label: bool) -> np.ndarray:
    """The teachers' averaged probabilities ``(N, K)`` at ``temperature``: softmax, or sigmoid per class.

    Example:
        >>> soft_targets([np.array([[2.0, 0.0]]), np.array([[0.0, 2.0]])], 2.0, False).round(3).tolist()
        [[0.5, 0.5]]
    """
    return np.mean([proba_from_logits(z, temperature, multi_label=multi_label) for z in logits], axis=0)


def _unlabelled_texts(dm: TextDataModule, path: str) -> tuple[list[str], list[int]]:
    """The texts of a file of unlabelled texts (its ``data.text_column``) and their row numbers."""
    frame = read_table(path)
    require_columns(frame, [dm.text_column], path)
    check_text_column(frame, dm.text_column, path)
    return frame[dm.text_column].astype(str).tolist(), frame["_row"].tolist()


class TransferSet(EncodedDataset):
    """The student's training examples: each carries its label (a placeholder where it has none), the teachers'
    ``soft_targets`` and ``hard_mask`` (1 where the label is real). ``kinds`` says where each came from:
    ``train``, ``augmented`` or ``unlabelled``. With ``distill.match_layers``, ``teacher_hidden`` holds the teacher's
    layer means ``(N, layers, width)`` and each example its row, ``teacher_index``."""

    def __init__(self, features: list[dict], texts: list[str], rows: list[int], kinds: list[str]):
        super().__init__(features, texts, rows, "distillation transfer set")
        self.kinds = kinds
        self.teacher_hidden: torch.Tensor | None = None

    def sizes(self) -> dict[str, int]:
        return {kind: self.kinds.count(kind) for kind in ("train", "augmented", "unlabelled")}


def transfer_set(dm: TextDataModule, config: Config, teachers: list[Teacher]) -> tuple[TransferSet, dict[str, object]]:
    """The training split plus augmented copies and unlabelled texts, each with the teachers' soft targets, and
    what it cost (teacher seconds, cache hits)."""
    cfg: DistillConfig = config.distill
    train: EncodedDataset = dm.train_dataset
    processor = dm.processor
    if dm.config.text_pair_column:
        raise ConfigError("distill does not take sentence-pair data yet (data.text_pair_column); distil single texts.")
    texts, rows, kinds = list(train.texts), list(train.rows), ["train"] * len(train)
    features = [dict(f) for f in train.features]
    if cfg.transfer_copies:
        augment = replace(config.augment, ops=config.augment.ops or ["eda"], variants=cfg.transfer_copies)
        augmenter = Augmenter(augment, seed=cfg.transfer_seed)  # not train.seed: one transfer set for every student
        originals = [processor.clean(t) for t in train.texts]
        made = augmenter.epoch_variants(originals, 0, augmenter.model_variants(originals))
        copies = [text for _, text in made]
        for feature, original in zip(
            encode_cached(processor, copies), train.features * cfg.transfer_copies, strict=True
        ):
            features.append(feature | {"labels": original["labels"]})
        texts += copies
        rows += list(train.rows) * cfg.transfer_copies
        kinds += ["augmented"] * len(copies)
    if cfg.unlabelled_file:
        extra, extra_rows = _unlabelled_texts(dm, cfg.unlabelled_file)
        blank = [0.0] * dm.num_labels if dm.multi_label else 0
        features += [feature | {"labels": blank} for feature in encode_cached(processor, extra)]
        texts += extra
        rows += extra_rows
        kinds += ["unlabelled"] * len(extra)
    start, hits, logits = time.perf_counter(), 0, []
    for teacher in teachers:
        made, cached = teacher_logits(teacher, texts, None, cfg.teacher_batch_size, desc=f"teacher {teacher.path}")
        logits.append(made)
        hits += cached
    targets = soft_targets(logits, cfg.temperature, dm.multi_label)
    for index, (feature, target, kind) in enumerate(zip(features, targets, kinds, strict=True)):
        feature[DISTILL_FEATURES[0]] = target.tolist()
        feature[DISTILL_FEATURES[1]] = int(kind != "unlabelled")
        if cfg.match_layers:
            feature[DISTILL_FEATURES[2]] = index
    transfer = TransferSet(features, texts, rows, kinds)
    if cfg.match_layers:
        states, cached = teacher_states(teachers[0], texts, cfg.match_layers, cfg.teacher_batch_size)
        transfer.teacher_hidden = torch.from_numpy(states)
        hits += cached
    cost = {"teacher_seconds": time.perf_counter() - start, "teacher_cache_hits": hits}
    return transfer, cost


def _check_match_layers(cfg: DistillConfig, teachers: list[Teacher]) -> None:
    """distill.match_layers needs one teacher that reads a text as one sequence, and layers it has."""
    if len(teachers) > 1:
        raise ConfigError(
            f"distill.match_layers matches one teacher's states, but {len(teachers)} teachers are given (their "
            "vectors live in different spaces). Give one teacher, or set distill.match_layers=[]."
        )
    teacher = teachers[0].model
    if teacher.processing.truncation == "windows":
        raise ConfigError(
            f"distill.match_layers needs a teacher that truncates; {teachers[0].path} reads texts as windows. "
            "Set distill.match_layers=[]."
        )
    depth = teacher.backbone.config.num_hidden_layers
    if max(cfg.match_layers) > depth:
        raise ConfigError(
            f"distill.match_layers={cfg.match_layers}: the teacher {teachers[0].path} has layers 0..{depth}."
        )


def _agreement(student: np.ndarray, teacher: np.ndarray) -> float:
    """Share of examples where two predictions ``(N,)`` or multi-hot ``(N, K)`` are the same."""
    same = student == teacher
    return float(same.all(axis=1).mean() if same.ndim == 2 else same.mean())


def _split_report(model, teachers: list[Teacher], dataset: EncodedDataset, multi_label: bool) -> dict:
    """Teacher (ensemble) and student accuracy on one evaluation split, and how often they agree."""
    averaged = soft_targets(
        [teacher_logits(t, list(dataset.texts), desc="teacher")[0] for t in teachers], 1.0, multi_label
    )
    thresholds = model.thresholds if multi_label else None
    teacher_pred = predict_from_proba(averaged, thresholds)
    student_pred = predict_from_proba(model.predict_proba_features(dataset), thresholds)
    truth = np.asarray(dataset.labels)
    return {
        "teacher_accuracy": _agreement(teacher_pred, truth),
        "student_accuracy": _agreement(student_pred, truth),
        "agreement": _agreement(student_pred, teacher_pred),
        "examples": len(dataset),
    }


def distill(config: Config, resume: bool | str | Path = False, callbacks: list | None = None) -> FitResult:
    """Everything ``workbench distill`` does: load the teachers, build and label the transfer set, train the student
    as a run, and record the teachers' figures in its metrics.

    Args:
        config: the resolved config; ``distill.teacher`` names the teacher run(s), ``model`` the student.
        resume: as in :meth:`~workbench.trainer.Trainer.fit`.
        callbacks: extra ``transformers.TrainerCallback`` objects.

    Raises:
        ConfigError: no teacher, a backbone instead of a run, teachers or data whose labels differ.
    """
    cfg = config.distill
    if not cfg.teacher:
        raise ConfigError("No teacher: pass `workbench distill --teacher RUN_DIR` (or set distill.teacher).")
    check_installed(config.run.track)
    if config.data.truncation == "windows":
        raise ConfigError(
            "A windowed student (data.truncation=windows) cannot be distilled yet: the transfer set is one "
            "example per text. Use head, tail or head+tail truncation for the student (a teacher may be windowed)."
        )
    if cfg.unlabelled_file and not Path(cfg.unlabelled_file).is_file():
        raise DataError(f"distill.unlabelled_file {cfg.unlabelled_file} does not exist. Give a file of texts.")
    teachers = [load_teacher(path) for path in cfg.teacher]
    if cfg.match_layers:
        _check_match_layers(cfg, teachers)
    # augment.ops make the transfer copies, labelled once by the teacher, not fresh variants every epoch
    dm = TextDataModule(
        config=config.data,
        model_name=config.model.backbone,
        trust_remote_code=config.model.trust_remote_code,
        seed=config.train.seed,
    )
    dm.setup()
    label_map = check_teachers(teachers, dm.label_names, dm.multi_label)
    if label_map.names != dm.label_names:  # the data lacks a teacher label, or orders them otherwise
        dm.setup(label_map=label_map)
    transfer, cost = transfer_set(dm, config, teachers)
    dm.use_training_split(transfer)
    log.info("transfer set: %s; teacher outputs in %.1f s", dm.train_dataset.sizes(), cost["teacher_seconds"])
    model = TextClassificationModel(
        config.model, labels=dm.label_names, multi_label=dm.multi_label, seed=config.train.seed
    )
    matched = {}
    if cfg.match_layers:
        teacher_backbone = teachers[0].model.backbone.config
        layers = student_layers(
            cfg.match_layers, teacher_backbone.num_hidden_layers, model.backbone.config.num_hidden_layers
        )
        model.match_hidden(layers, teacher_backbone.hidden_size, seed=config.train.seed)
        matched = {
            "match_layers": {"teacher": cfg.match_layers, "student": layers},
            "match_weight": cfg.match_weight,
        }

    def report(student: TextClassificationModel, data: TextDataModule) -> dict:
        splits = {"validation": data.val_dataset, "test": data.test_dataset}
        return {
            "distill": {
                "teachers": [t.path for t in teachers],
                "temperature": cfg.temperature,
                "soft_weight": cfg.soft_weight,
                **matched,
                "transfer_set": data.train_dataset.sizes(),
                **cost,
                **{
                    name: _split_report(student, teachers, split, data.multi_label)
                    for name, split in splits.items()
                    if split is not None
                },
            }
        }

    trainer = Trainer(config, checkpoint_dir=None, callbacks=callbacks, distill=cfg, extra_metrics=report)
    return trainer.fit(model, dm, resume=resume, full_config=config)
