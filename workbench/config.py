"""One typed tree of configuration for every workbench run.

The root :class:`Config` holds one dataclass per component (``data``, ``model``, ``train``, ``run``);
each component owns its defaults and validates them in ``__post_init__``. An experiment file in
``configs/*.yaml`` holds only what differs from these defaults, and dotted overrides such as
``train.lr=3e-5`` come from the command line or a notebook::

    cfg = load_config("configs/sst2.yaml", ["train.lr=3e-5", "data.train_subset=2000"])

Unknown keys are errors that name the key and list the valid ones.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from workbench.errors import ConfigError

TRUNCATION_STRATEGIES = ("head", "tail", "head+tail", "windows")
WINDOW_POOLING = ("mean", "max", "attention")  # how a long document's window logits become its logits
POOLING_MODES = ("cls", "mean", "attention")
HEAD_NORMS = ("layer", "l2", "none")  # what the pooled vector passes through before the head
TRAIN_METHODS = ("finetune", "setfit")  # train.method: fine-tuning with a loss, or SetFit (workbench.fewshot)
SETFIT_HEADS = ("logistic", "differentiable")
# active learning (workbench.active): how the texts to label next are picked
QUERY_STRATEGIES = ("random", "least_confidence", "entropy", "breaking_ties", "bald", "kmeans", "coreset", "cal")
# behavioural tests (workbench.behave, CheckList's three kinds): minimum functionality (templated texts with known
# labels), invariance (a perturbation must not change the prediction), directional (a label's probability must not
# move the wrong way)
BEHAVIOR_TEST_TYPES = ("mft", "inv", "dir")
# what an invariance or directional test does to a real text; append / prepend add a templated phrase
PERTURBATIONS = (
    "typos", "keyboard", "punctuation", "lowercase", "contractions", "names", "places", "numbers", "synonym",
    "append", "prepend",
)  # fmt: skip
BEHAVIOR_DIRECTIONS = ("rise", "fall")  # a directional test's expect.must_not
EXECUTORS = ("local", "ray")  # where a grid's experiments, CV folds and batch predictions run (workbench.cluster)
COLD_STARTS = ("random", "kmeans")  # the first labels: a seeded random draw, or one text per k-means cluster
SINGLE_LABEL_LOSSES = ("cross_entropy", "focal")
MULTI_LABEL_LOSSES = ("bce", "focal_bce")  # cross_entropy and focal on multi-label data mean these two
LOSSES = SINGLE_LABEL_LOSSES + MULTI_LABEL_LOSSES
OPTIMIZERS = ("adamw", "adafactor", "lamb")
SCHEDULES = ("linear", "cosine", "one_cycle", "constant")
PRECISIONS = ("auto", "32", "16", "bf16", "16-mixed", "bf16-mixed")
# train.precision=auto trains in bf16 from this backbone width up, where the hardware multiplies bf16 matrices: on an
# AMX Xeon MPNet (768 wide) ran 2-3x faster in bf16 and MiniLM (384) gained nothing (bench/README.md, train_speed)
AUTO_BF16_MIN_WIDTH = 768
# How a hyperparameter is searched (tune.space): {log_uniform: [low, high]}, {uniform: [low, high]},
# {int: [low, high]} (both ends included) or {choice: [a, b, ...]}.
SEARCH_DISTRIBUTIONS = ("log_uniform", "uniform", "int", "choice")
PRUNERS = ("median", "hyperband", "none")
TRACKERS = ("tensorboard", "wandb", "mlflow")  # run.track: experiment trackers each run reports to
# augment.ops: word operations run on the fly (a fresh variant every epoch); model operations run once per
# training set and are cached. "eda" stands for EDA's four operations (Wei & Zou 2019).
EDA_OPS = ("synonym", "insert", "swap", "delete")
WORD_AUGMENT_OPS = (*EDA_OPS, "aeda")
MODEL_AUGMENT_OPS = ("back_translation", "contextual")
AUGMENT_OPS = ("eda", *WORD_AUGMENT_OPS, *MODEL_AUGMENT_OPS)
# Inference engines (workbench speed / serve --engine). "torch" is the trained model in PyTorch eager fp32; every
# other engine is an export (workbench export): its format, whether ONNX Runtime's transformer fusions are applied
# and its quantization. onnx-int8 quantizes the plain graph: the fused one (onnx-optimized-int8) was 15-20% slower
# and less accurate (bench/README.md, "Export").
EXPORT_FORMATS = ("onnx", "torchscript", "pt2")
QUANTIZATIONS = ("int8",)
ENGINE_EXPORTS = {  # engine -> (format, optimize, quantize)
    "pt2": ("pt2", False, None),
    "torchscript": ("torchscript", False, None),
    "torch-int8": ("torchscript", False, "int8"),
    "onnx": ("onnx", False, None),
    "onnx-optimized": ("onnx", True, None),
    "onnx-int8": ("onnx", False, "int8"),
    "onnx-optimized-int8": ("onnx", True, "int8"),
}
ENGINES = ("torch", *tuple(ENGINE_EXPORTS))
# Dynamic int8 quantization (ONNX Runtime's and torch.ao's) scales a layer's activations by the largest value in the
# whole call, padding included, so an example's answer moved with its batch-mates (on TREC questions in random groups
# of 32, probabilities by up to 0.45 with onnx-int8 and 0.81 with torch-int8). These engines run each example alone,
# cut to its own length, so a text gets one answer in any batch. At batch 32 that kept 94% of onnx-int8's throughput
# and 61% of torch-int8's; statically calibrated int8 was no faster (bench/README.md, "Int8 and batching").
PER_EXAMPLE_ENGINES = tuple(engine for engine, (_, _, quantize) in ENGINE_EXPORTS.items() if quantize)


def engine_of(model_format: str, optimize: bool, quantize: str | None) -> str:
    """The engine name of an export recipe: the key of :data:`ENGINE_EXPORTS` that holds it."""
    _require_choice("export", "format", model_format, EXPORT_FORMATS)
    _require(
        quantize is None or quantize in QUANTIZATIONS,
        f"export quantize={quantize!r} is not one of {', '.join(QUANTIZATIONS)}.",
    )
    _require(
        not optimize or model_format == "onnx", "--optimize applies ONNX Runtime's fusions: use it with --format onnx."
    )
    _require(
        not (quantize and model_format == "pt2"),
        "int8 is offered for --format onnx (ONNX Runtime) and "
        "torchscript (torch's dynamic int8 Linear layers), not pt2.",
    )
    if quantize:
        return {"onnx": "onnx-optimized-int8" if optimize else "onnx-int8", "torchscript": "torch-int8"}[model_format]
    return "onnx-optimized" if optimize else model_format


DEFAULT_SEARCH_SPACE = {  # a space that suits fine-tuning a small encoder, used when tune.space is empty
    "train.lr": {"log_uniform": [1.0e-5, 5.0e-4]},
    "train.warmup": {"uniform": [0.0, 0.1]},
    "train.weight_decay": {"log_uniform": [1.0e-4, 0.1]},
    "data.batch_size": {"choice": [16, 32, 64]},
    "model.dropout": {"uniform": [0.0, 0.3]},
}


def _help(text: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING):
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _require_choice(section: str, name: str, value: Any, choices: tuple) -> None:
    _require(value in choices, f"{section}.{name}={value!r} is not one of {', '.join(map(str, choices))}.")


@dataclass
class DataConfig:
    """Where the examples come from and how they become batches."""

    dataset: str | None = _help("Catalog dataset name (sst2, imdb, ag_news, reuters, trec, trec_fine).", None)
    train_file: str | None = _help("Training file: .csv, .tsv, .jsonl or .parquet.", None)
    val_file: str | None = _help("Validation file; without one a stratified split of train is used.", None)
    test_file: str | None = _help("Optional test file, evaluated after training.", None)
    train_split: str = _help("Catalog split used for training.", "train")
    val_split: str | None = _help("Catalog split used for validation (None: split off train).", "validation")
    test_split: str | None = _help("Catalog split used for the final test evaluation.", None)
    text_column: str = _help("Column holding the text.", "text")
    text_pair_column: str | None = _help("Second text column for sentence-pair tasks.", None)
    label_column: str = _help("Column holding the label (or labels, for multi-label).", "label")
    multi_label: bool = _help("Each example may carry several labels.", False)
    label_delimiter: str = _help("Separator of a delimited multi-label cell, e.g. 'earn|acq'.", "|")
    val_fraction: float = _help("Fraction of train held out for validation when none is given.", 0.1)
    train_subset: int | None = _help("Use a stratified subset of this many training examples.", None)
    val_subset: int | None = _help("Use a stratified subset of this many validation examples.", None)
    shots: int | None = _help(
        "Few-shot: train on this many examples of each class, a seeded sample (train.seed) of the training split "
        "(after train_subset), recorded in the run's training_rows.json. Single-label data only.",
        None,
    )
    label_descriptions: dict | None = _help(
        "Label -> description, e.g. {ENTY: an entity}: what a SetFit template says of each label "
        "(setfit.template; the label's name where none is given).",
        None,
    )
    max_length: int = _help("Longest tokenized input, special tokens included.", 128)
    truncation: str = _help(
        "Which tokens to keep from long texts: head, tail or head+tail; windows keeps them all, as overlapping "
        "windows of max_length tokens whose outputs are pooled into one answer per text (window_pooling).",
        "head",
    )
    head_fraction: float = _help("With head+tail truncation, the share of tokens taken from the head.", 0.25)
    stride: int | None = _help(
        "With windows truncation, the tokens each window shares with the one before it (None: a quarter of "
        "max_length).",
        None,
    )
    window_pooling: str = _help(
        "With windows truncation, how the windows' logits become the text's: mean or max (per class), or attention "
        "(a mean weighted by a score learned from each window's vector on the validation texts once training ends).",
        "mean",
    )
    max_windows: int = _help(
        "With windows truncation, the most windows of one training text in an epoch, drawn afresh each epoch "
        "(so a long text does not dominate the epoch); 0 = all. Prediction always reads every window.",
        8,
    )
    batch_size: int = _help("Most examples in one batch.", 32)
    max_tokens: int = _help("Token budget of one batch: examples x padded length stays within it.", 8192)
    eval_batch_size: int = _help("Most examples in one evaluation batch.", 128)
    clean_html: bool = _help("Strip HTML tags such as IMDB's <br /> and unescape entities.", True)
    mask_urls: bool = _help("Replace URLs by a [URL] marker.", False)
    mask_emails: bool = _help("Replace e-mail addresses by an [EMAIL] marker.", False)
    lowercase: bool = _help("Lowercase text (uncased tokenizers do this already).", False)
    cache: bool = _help(
        "Keep the token ids of splits of 5,000 rows or more on disk ($WORKBENCH_CACHE/encoded, Arrow), "
        "keyed by their texts, the tokenizer and the text processing: a second run on the same data "
        "skips tokenizing. A file read in pieces (stream_from_mb) is encoded again when off.",
        True,
    )
    stream_from_mb: float = _help(
        "Data files of this many megabytes or more are read in pieces into an Arrow file "
        "($WORKBENCH_CACHE/encoded, keyed by the file's content) and trained from it "
        "memory-mapped, so memory does not grow with the corpus; 0 does this for every file.",
        256.0,
    )

    def __post_init__(self):
        _require_choice("data", "truncation", self.truncation, TRUNCATION_STRATEGIES)
        _require_choice("data", "window_pooling", self.window_pooling, WINDOW_POOLING)
        _require(
            self.stride is None or self.stride >= 0,
            f"data.stride={self.stride} must be 0 or more (the tokens windows share).",
        )
        _require(
            self.truncation != "windows" or self.window_stride < self.max_length // 2,
            f"data.stride={self.stride} must be below half of data.max_length={self.max_length}: windows overlap "
            "by stride tokens and move on by the rest. Lower data.stride (e.g. a quarter of max_length).",
        )
        _require(self.max_windows >= 0, f"data.max_windows={self.max_windows} must be 0 (all) or a positive count.")
        _require(
            self.truncation != "windows" or self.text_pair_column is None,
            f"data.truncation=windows reads single texts, but data.text_pair_column='{self.text_pair_column}' "
            "makes pairs: use head, tail or head+tail for sentence pairs.",
        )
        _require(
            bool(self.label_delimiter),
            "data.label_delimiter must not be empty (quote it on the command line: data.label_delimiter='|').",
        )
        _require(0.0 < self.val_fraction < 1.0, f"data.val_fraction={self.val_fraction} must be between 0 and 1.")
        _require(0.0 < self.head_fraction < 1.0, f"data.head_fraction={self.head_fraction} must be between 0 and 1.")
        _require(self.stream_from_mb >= 0, f"data.stream_from_mb={self.stream_from_mb} must be 0 or more.")
        _require(self.max_length >= 8, f"data.max_length={self.max_length} must be at least 8.")
        _require(self.batch_size >= 1, f"data.batch_size={self.batch_size} must be at least 1.")
        _require(
            self.max_tokens >= self.max_length,
            f"data.max_tokens={self.max_tokens} must be at least data.max_length={self.max_length}, "
            "or the longest example cannot form a batch.",
        )
        for name in ("train_subset", "val_subset"):
            value = getattr(self, name)
            _require(value is None or value > 0, f"data.{name}={value} must be a positive count.")
        _require(
            self.shots is None or self.shots > 0,
            f"data.shots={self.shots} must be a positive count of examples per class (zero-shot, no examples: "
            "train.method=setfit with setfit.zero_shot=true).",
        )
        _require(
            self.shots is None or not self.multi_label,
            "data.shots samples single-label data (one class per example); leave it out for multi-label data.",
        )
        _require(
            self.label_descriptions is None
            or (
                isinstance(self.label_descriptions, dict)
                and all(isinstance(v, str) for v in self.label_descriptions.values())
            ),
            f"data.label_descriptions={self.label_descriptions!r} must map each label to a text, "
            "e.g. {positive: a happy review}.",
        )
        if self.label_descriptions is not None:
            self.label_descriptions = {str(k): v for k, v in self.label_descriptions.items()}

    @property
    def window_stride(self) -> int:
        """The tokens a window shares with the one before it: ``stride``, or a quarter of ``max_length``."""
        return self.max_length // 4 if self.stride is None else self.stride


@dataclass
class ModelConfig:
    """The backbone, its pooling and the classification head."""

    backbone: str = _help("Hugging Face name or local path; 'minilm' is the packaged all-MiniLM-L6-v2.", "minilm")
    pooling: str = _help("How token states become one vector: cls, mean or attention.", "mean")
    dropout: float = _help("Dropout before the head.", 0.1)
    head_norm: str = _help(
        "What the pooled vector passes through before the head: layer (a learned LayerNorm), l2 (unit length, as "
        "a sentence-transformers model's Normalize module; SetFit sets it) or none.",
        "layer",
    )
    hidden_layers: list[int] = _help("Widths of hidden Linear layers in the head ([] = one Linear).", None, list)
    activation: str = _help("Activation between head layers (any torch.nn.functional name).", "gelu")
    freeze_embeddings: bool = _help(
        "Keep the embedding block (word, position and token-type embeddings and their LayerNorm) fixed. "
        "On a CPU their gradients cost a fifth of each training step; see bench/README.md for the accuracy check.",
        True,
    )
    multi_label_threshold: float = _help("Default decision threshold of each class in multi-label mode.", 0.5)
    init_from: str | None = _help(
        "A finished run (or saved model folder) whose weights start training instead of the pretrained backbone and "
        "a fresh head: same backbone and labels (active learning's warm-started rounds set it).",
        None,
    )
    trust_remote_code: list[str] = _help(
        "Backbones (hub names or folders, as written in model.backbone) allowed to run Python code shipped with them "
        "(transformers' trust_remote_code). Empty: no backbone runs its own code.",
        None,
        list,
    )

    def __post_init__(self):
        self.hidden_layers, self.trust_remote_code = list(self.hidden_layers), list(self.trust_remote_code)  # or tuples
        _require_choice("model", "pooling", self.pooling, POOLING_MODES)
        _require_choice("model", "head_norm", self.head_norm, HEAD_NORMS)
        _require(0.0 <= self.dropout < 1.0, f"model.dropout={self.dropout} must be in [0, 1).")
        _require(0.0 < self.multi_label_threshold < 1.0, "model.multi_label_threshold must be between 0 and 1.")


@dataclass
class TrainConfig:
    """Optimisation, precision, checkpoints and early stopping."""

    method: str = _help(
        "finetune (the backbone and head trained on a loss, the settings below) or setfit (few-shot: contrastive "
        "training of a sentence encoder on pairs, then a head; the setfit section).",
        "finetune",
    )
    epochs: float = _help("Passes over the training data (fractions allowed).", 3.0)
    lr: float = _help("Peak learning rate.", 5e-5)
    weight_decay: float = _help("Decoupled weight decay (not applied to biases and LayerNorm).", 0.01)
    layer_lr_decay: float = _help(
        "Layer-wise learning-rate decay: each encoder layer below the top gets this "
        "factor times the rate of the one above (1.0 = the same rate everywhere).",
        1.0,
    )
    optimizer: str = _help("adamw, adafactor or lamb.", "adamw")
    schedule: str = _help("linear, cosine, one_cycle or constant (all with warmup).", "linear")
    warmup: float = _help("Warmup: a ratio of all steps if < 1, else a step count.", 0.06)
    grad_accum: int = _help("Batches accumulated per optimizer step.", 1)
    max_grad_norm: float = _help("Clip the global gradient norm to this (0 = off).", 1.0)
    loss: str = _help("cross_entropy, focal (single-label); bce, focal_bce (multi-label).", "cross_entropy")
    label_smoothing: float = _help("Label smoothing for cross-entropy.", 0.0)
    focal_gamma: float = _help("Focusing parameter of focal losses.", 2.0)
    class_weights: str | list[float] | None = _help("None, 'balanced', or one weight per class.", None)
    precision: str = _help(
        "auto, 32, 16 or bf16 (mixed precision: bf16/16 autocast). auto: bf16 for a backbone 768 or more wide "
        "on a GPU with bf16 or a CPU with bf16 matrix units (Intel AMX), where it measured about 2x faster at "
        "equal accuracy, else 32. 16 needs a GPU (falls back to 32 with a warning); bf16 on a CPU without AMX "
        "runs, slower than 32.",
        "auto",
    )
    seed: int = _help("Seed for weights, sampling and dropout.", 42)
    eval_every: int = _help("Evaluate every N optimizer steps (0 = once per epoch).", 0)
    log_every: int = _help("Write a training log line every N optimizer steps.", 50)
    monitor: str | None = _help(
        "Validation metric that picks the best checkpoint (e.g. macro_f1, loss); "
        "None: accuracy for single-label data, micro_f1 for multi-label.",
        None,
    )
    early_stopping_patience: int = _help("Stop after this many evaluations without improvement (0 = off).", 0)
    keep_top_k: int = _help("Checkpoints kept on disk besides the last one.", 1)
    save_only_model: bool = _help(
        "Checkpoints hold the model only, no optimizer, scheduler or RNG state (about half "
        "the bytes), but such a run cannot be resumed; tuning trials turn it on.",
        False,
    )
    num_workers: int = _help("DataLoader worker processes.", 0)
    device: str = _help("auto, cpu or cuda.", "auto")

    def __post_init__(self):
        _require_choice("train", "method", self.method, TRAIN_METHODS)
        _require_choice("train", "optimizer", self.optimizer, OPTIMIZERS)
        _require_choice("train", "schedule", self.schedule, SCHEDULES)
        _require_choice("train", "loss", self.loss, LOSSES)
        self.precision = str(self.precision)
        _require_choice("train", "precision", self.precision, PRECISIONS)
        _require(self.epochs > 0, f"train.epochs={self.epochs} must be positive.")
        _require(self.lr > 0, f"train.lr={self.lr} must be positive.")
        _require(0.0 < self.layer_lr_decay <= 1.0, f"train.layer_lr_decay={self.layer_lr_decay} must be in (0, 1].")
        _require(self.warmup >= 0, f"train.warmup={self.warmup} must not be negative.")
        _require(self.grad_accum >= 1, f"train.grad_accum={self.grad_accum} must be at least 1.")
        _require(0.0 <= self.label_smoothing < 1.0, "train.label_smoothing must be in [0, 1).")
        _require(self.log_every >= 1, f"train.log_every={self.log_every} must be at least 1.")
        _require_choice("train", "device", self.device, ("auto", "cpu", "cuda"))
        _require(self.keep_top_k >= 1, f"train.keep_top_k={self.keep_top_k} must be at least 1.")
        _require(
            self.class_weights is None or self.class_weights == "balanced" or isinstance(self.class_weights, list),
            f"train.class_weights={self.class_weights!r} must be None, 'balanced' or a list of numbers.",
        )


@dataclass
class RunConfig:
    """Where a run's outputs go."""

    name: str = _help("Run name: outputs go to <root>/<name>/version_N/.", "default")
    root: str = _help("Root folder of all runs.", "runs")
    track: list[str] = _help(
        "Experiment trackers to report to, any of tensorboard, wandb, mlflow ([] = none).", None, list
    )
    mlflow_uri: str | None = _help(
        "MLflow tracking URI (None: $MLFLOW_TRACKING_URI, else SQLite <root>/mlflow.db).", None
    )

    def __post_init__(self):
        _require(bool(self.name) and "/" not in self.name, f"run.name={self.name!r} must be a non-empty folder name.")
        for name in self.track:
            _require_choice("run", "track", name, TRACKERS)


@dataclass
class TuneConfig:
    """Hyperparameter search with Optuna (``workbench tune``); the other sections are each trial's starting point."""

    space: dict[str, dict] = _help(
        "Search space keyed by dotted config keys, e.g. {train.lr: {log_uniform: "
        "[1.0e-5, 3.0e-4]}, data.batch_size: {choice: [16, 32]}}; {} = the default space.",
        None,
        dict,
    )
    trials: int = _help("Trials to run (a resumed study counts those it already has).", 20)
    timeout: float | None = _help("Stop starting new trials after this many seconds (None: no limit).", None)
    pruner: str = _help("Stop bad trials at an evaluation: median, hyperband or none.", "median")
    pruner_warmup_epochs: float = _help(
        "Epochs a trial trains before the pruner may stop it (its evaluations "
        "before then still count towards the other trials' medians).",
        0.5,
    )

    def __post_init__(self):
        _require(self.trials >= 1, f"tune.trials={self.trials} must be at least 1.")
        _require(self.timeout is None or self.timeout > 0, f"tune.timeout={self.timeout} must be positive.")
        _require_choice("tune", "pruner", self.pruner, PRUNERS)
        _require(
            self.pruner_warmup_epochs >= 0,
            f"tune.pruner_warmup_epochs={self.pruner_warmup_epochs} must not be negative (0 = no warm-up).",
        )


@dataclass
class AugmentConfig:
    """Text augmentation of the training split (``workbench augment`` writes it out for inspection); off by default."""

    ops: list[str] = _help(
        "Operations, any of eda (= synonym, insert, swap, delete), synonym, insert, swap, delete, "
        "aeda, back_translation, contextual; each variant uses one, drawn at random ([] = off).",
        None,
        list,
    )
    alpha: float = _help(
        "Share of a text's words each word operation changes (EDA's alpha); aeda inserts up to a "
        "third of the word count in punctuation, whatever alpha is.",
        0.1,
    )
    variants: int = _help("Augmented copies of each training example per epoch, beside the original (EDA's n_aug).", 1)
    protect_numbers: bool = _help("Never change a word holding a digit (12, $9.99, 3rd).", True)
    protect_urls: bool = _help("Never change URLs and e-mail addresses.", True)
    protect_words: list[str] = _help(
        "Further words never changed (case-insensitive), e.g. [not, no, never].", None, list
    )
    translation_models: list[str] = _help(
        "back_translation: the MarianMT pair (to a pivot language, and back), hub names or local folders.",
        None,
        lambda: ["Helsinki-NLP/opus-mt-en-de", "Helsinki-NLP/opus-mt-de-en"],
    )
    translation_temperature: float = _help(
        "back_translation: sampling temperature (0 = beam search, no sampling).", 0.8
    )
    fill_mask_model: str = _help(
        "contextual: the masked language model proposing substitutes (name or folder).", "bert-base-uncased"
    )
    model_batch_size: int = _help("Texts per batch of the model operations.", 32)
    cache_dir: str | None = _help(
        "Where model-operation variants are cached (None: $WORKBENCH_CACHE/augment, else ~/.cache/workbench/augment).",
        None,
    )

    def __post_init__(self):
        for name in self.ops:
            _require_choice("augment", "ops", name, AUGMENT_OPS)
        _require(0.0 <= self.alpha <= 1.0, f"augment.alpha={self.alpha} must be in [0, 1].")
        _require(
            self.variants >= 1,
            f"augment.variants={self.variants} must be at least 1 (augment.ops=[] turns augmentation off).",
        )
        _require(
            len(self.translation_models) == 2,
            "augment.translation_models needs two models, to the pivot "
            f"language and back, e.g. [Helsinki-NLP/opus-mt-en-de, Helsinki-NLP/opus-mt-de-en]; got "
            f"{self.translation_models}.",
        )
        _require(
            self.translation_temperature >= 0,
            f"augment.translation_temperature={self.translation_temperature} must be 0 (beam search) or positive.",
        )
        _require(self.model_batch_size >= 1, f"augment.model_batch_size={self.model_batch_size} must be at least 1.")

    @property
    def enabled(self) -> bool:
        return bool(self.ops)

    def operations(self) -> list[str]:
        """The operations a variant is drawn from, with ``eda`` expanded into its four."""
        expanded = [op for name in self.ops for op in (EDA_OPS if name == "eda" else (name,))]
        return list(dict.fromkeys(expanded))


@dataclass
class ParityConfig:
    """What an export must show against PyTorch, checked right after it is written (``workbench export``).

    Quantization moves probabilities a little, so it may flip a prediction whose top two classes are nearly tied,
    which says nothing about the engine: agreement is judged only where PyTorch decides with a clear margin, and
    the accuracy may not fall by more than a bound. fp32 exports must also match PyTorch's logits within
    ``workbench.export.FP32_TOLERANCE``. On the 1-epoch TREC model of ``experiments/tiny.yaml`` (41% accurate,
    half its validation questions decided by less than 0.15), int8 moved probabilities by up to 0.03 (ONNX
    Runtime) and 0.13 (torch), flipping 5 and 12 of 100 predictions, none of those decided by 0.2 or more; on the
    89%-accurate model notebook 11 trains, torch's int8 flipped 3.4% of the 522 decided by 0.2 or more (accuracy
    -0.9 points), so the floor stays the 90% that used to apply to all predictions.
    """

    margin: float = _help(
        "An example counts as clearly decided when PyTorch's two highest class probabilities differ "
        "by at least this (multi-label: every class at least this far from its threshold); only "
        "those examples are held to min_agreement (int8 moved the probabilities of "
        "experiments/tiny.yaml's TREC model by up to 0.13, and flipped no decision this clear).",
        0.2,
    )
    min_agreement: float = _help(
        "Least share of the clearly decided examples on which the export predicts what PyTorch predicts.", 0.9
    )
    max_accuracy_drop: float = _help(
        "Most the export's accuracy on the labelled examples may fall below PyTorch "
        "fp32's, as a share (0.05 = 5 points; on 100 examples each flipped near tie "
        "moves it by 1 point).",
        0.05,
    )
    accuracy_alpha: float = _help(
        "An accuracy fall beyond max_accuracy_drop refuses the export only when its flipped predictions went to "
        "wrong more often than chance would send them (McNemar's exact test, p below this): on the 100 "
        "validation questions of experiments/tiny.yaml's 41%-accurate model, torch's int8 flipped 14 near ties "
        "and lost 6 points, which coin flips do one time in ten.",
        0.05,
    )

    def __post_init__(self):
        for field_ in dataclasses.fields(self):
            name = field_.name
            _require(0.0 <= getattr(self, name) <= 1.0, f"parity.{name}={getattr(self, name)} must be in [0, 1].")


@dataclass
class ServeConfig:
    """The prediction service (``workbench serve``): where it listens, how it batches and what it accepts."""

    host: str = _help("Interface to listen on (127.0.0.1: this machine only).", "127.0.0.1")
    port: int = _help("TCP port.", 8000)
    batching: bool = _help("Gather concurrent requests into one model call (micro-batching).", True)
    max_batch_size: int = _help("Most texts in one model call.", 64)
    max_wait_ms: float = _help("Longest a text waits for others to join its batch, in milliseconds.", 5.0)
    engine_batch_size: int = _help(
        "Most texts in one engine call: a gathered batch is sorted by length and cut into "
        "calls of this size, so texts of a call have similar lengths and little padding.",
        8,
    )
    max_queue: int = _help(
        "Most requests waiting for the model; beyond it the service answers 503 with "
        "Retry-After instead of queueing without limit.",
        256,
    )
    max_texts: int = _help("Most texts in one request (413 beyond).", 64)
    max_chars: int = _help("Most characters in one text (413 beyond).", 20_000)
    max_body_bytes: int = _help("Largest request body in bytes (413 beyond).", 2_000_000)
    api_key_env: str = _help(
        "Environment variable holding the API key; when it is set, every endpoint but "
        "/health wants 'Authorization: Bearer <key>'.",
        "WORKBENCH_API_KEY",
    )
    threads: int | None = _help("Engine threads (None: the engine's choice, one per core).", None)

    def __post_init__(self):
        for name in ("max_batch_size", "engine_batch_size", "max_queue", "max_texts", "max_chars", "max_body_bytes"):
            _require(getattr(self, name) >= 1, f"serve.{name}={getattr(self, name)} must be at least 1.")
        _require(self.max_wait_ms >= 0, f"serve.max_wait_ms={self.max_wait_ms} must be 0 or more.")
        _require(0 <= self.port <= 65535, f"serve.port={self.port} must be in 0..65535.")
        _require(self.threads is None or self.threads >= 1, f"serve.threads={self.threads} must be at least 1.")


@dataclass
class DistillConfig:
    """Knowledge distillation (``workbench distill``): a student trained on a teacher's soft targets."""

    teacher: list[str] = _help(
        "The teacher: a run directory, or several whose probabilities are averaged (an ensemble, e.g. the fold "
        "runs of `workbench cv`). `workbench distill --teacher` sets it.",
        None,
        list,
    )
    temperature: float = _help(
        "Softmax (sigmoid, multi-label) temperature T of the soft targets and the student's matching outputs; "
        "the soft loss is scaled by T^2 (Hinton et al. 2015).",
        2.0,
    )
    soft_weight: float = _help(
        "Weight of the soft-target loss; the hard-label loss gets 1 - soft_weight (texts without a label, from "
        "distill.unlabelled_file, count the soft loss only).",
        0.9,
    )
    transfer_copies: int = _help(
        "Augmented copies of each training text added to the transfer set, made once by the augment section's "
        "operations (augment.ops; EDA if none) and labelled by the teacher (0 = the training split only).",
        0,
    )
    transfer_seed: int = _help(
        "Seed of the augmented copies (transfer_copies). Fixed rather than train.seed, so students of different "
        "seeds share one transfer set and the teacher labels it once.",
        42,
    )
    unlabelled_file: str | None = _help(
        "A file of unlabelled texts (in data.text_column) the teacher labels for the transfer set.", None
    )
    teacher_batch_size: int = _help("Texts per batch when the teacher labels the transfer set.", 64)
    match_layers: list[int] = _help(
        "Teacher layers (0 = embeddings, 1 up to its depth) whose token-averaged states the student's layers at the "
        "same relative depth learn to reproduce through a learned projection (widths differ; the tokenizers may "
        "too, so tokens are not matched one by one). [] = off. One teacher only.",
        None,
        list,
    )
    match_weight: float = _help(
        "Weight of the hidden-state loss (squared distance of unit-length vectors, 0..4) with distill.match_layers.",
        1.0,
    )

    def __post_init__(self):
        self.teacher = [str(path) for path in self.teacher]
        _require(
            all(isinstance(layer, int) and layer >= 0 for layer in self.match_layers),
            f"distill.match_layers={self.match_layers} must be layer numbers, 0 (embeddings) or more.",
        )
        _require(self.match_weight >= 0, f"distill.match_weight={self.match_weight} must be 0 or more.")
        _require(self.temperature > 0, f"distill.temperature={self.temperature} must be positive (T > 0).")
        _require(0.0 <= self.soft_weight <= 1.0, f"distill.soft_weight={self.soft_weight} must be in [0, 1].")
        _require(self.transfer_copies >= 0, f"distill.transfer_copies={self.transfer_copies} must be 0 or more.")
        _require(
            self.teacher_batch_size >= 1, f"distill.teacher_batch_size={self.teacher_batch_size} must be at least 1."
        )


@dataclass
class SetFitConfig:
    """SetFit (``train.method: setfit``): a sentence encoder trained on pairs of examples, then a head on it."""

    iterations: int = _help(
        "Pair generation: each training example goes into this many similar and this many dissimilar pairs "
        "(SetFit's num_iterations; the paper's 20).",
        20,
    )
    body_epochs: int = _help("Passes over the pairs while training the encoder (0: frozen encoder, head only).", 1)
    body_lr: float = _help("Learning rate of the encoder on the pairs.", 2.0e-5)
    pair_batch_size: int = _help("Pairs per batch while training the encoder.", 16)
    head: str = _help(
        "logistic (scikit-learn's logistic regression on the embeddings) or differentiable (a linear head "
        "trained with torch, the encoder frozen).",
        "logistic",
    )
    head_epochs: int = _help("Epochs of the differentiable head.", 16)
    head_lr: float = _help("Learning rate of the differentiable head.", 1.0e-2)
    zero_shot: bool = _help(
        "Train on templated examples only (setfit.template with each label's description or name), none of the "
        "training split's texts: a model before the first label.",
        False,
    )
    template: str = _help("The templated example of a label; {} stands for its description.", "This sentence is {}.")
    template_examples: int | None = _help(
        "Templated examples per label added to the training data (None: 8 when zero_shot, else 0).", None
    )

    def __post_init__(self):
        _require_choice("setfit", "head", self.head, SETFIT_HEADS)
        _require(self.iterations >= 1, f"setfit.iterations={self.iterations} must be at least 1.")
        _require(self.body_epochs >= 0, f"setfit.body_epochs={self.body_epochs} must be 0 or more.")
        _require(self.body_lr > 0, f"setfit.body_lr={self.body_lr} must be positive.")
        _require(self.pair_batch_size >= 2, f"setfit.pair_batch_size={self.pair_batch_size} must be at least 2.")
        _require(self.head_epochs >= 1, f"setfit.head_epochs={self.head_epochs} must be at least 1.")
        _require(self.head_lr > 0, f"setfit.head_lr={self.head_lr} must be positive.")
        _require(
            "{}" in self.template,
            f"setfit.template={self.template!r} needs {{}} where the label's description goes, "
            "e.g. 'This sentence is {}.'",
        )
        _require(
            self.template_examples is None or self.template_examples >= 0,
            f"setfit.template_examples={self.template_examples} must be 0 or more.",
        )
        _require(
            not self.zero_shot or self.template_examples != 0,
            "setfit.zero_shot trains on templated examples only: setfit.template_examples must be 1 or more "
            "(or left out: 8).",
        )

    @property
    def templates_per_label(self) -> int:
        """Templated examples per label: ``template_examples``, or 8 zero-shot and 0 otherwise."""
        if self.template_examples is not None:
            return self.template_examples
        return 8 if self.zero_shot else 0


@dataclass
class ActiveConfig:
    """Active learning (``workbench al``): rounds of training on the labels so far and asking for the next ones."""

    strategy: str = _help(
        "How the next texts are picked: random, least_confidence, entropy, breaking_ties, bald (Monte-Carlo "
        "dropout), kmeans (one per cluster of the pooled vectors), coreset or cal (contrastive).",
        "breaking_ties",
    )
    batch: int = _help("Texts asked for in each round.", 20)
    initial: int = _help("Labels of the cold start, before any model exists.", 20)
    cold_start: str = _help(
        "How the first texts are picked: random (a seeded draw) or kmeans (one text nearest each of `initial` "
        "k-means clusters of the untrained encoder's vectors: diverse).",
        "random",
    )
    max_labels: int = _help("The loop stops when this many texts are labelled.", 500)
    warm_start: bool = _help(
        "Start each round's training from the round before's model (model.init_from) instead of the pretrained "
        "backbone; fine-tuning only.",
        False,
    )
    pool_size: int | None = _help(
        "Score at most this many unlabelled texts a round (a seeded sample, drawn afresh each round); None: all.",
        None,
    )
    labels: list[str] = _help(
        "The labels a person chooses from (workbench label, the labeller widget); a labels file naming another is "
        "refused.",
        None,
        list,
    )
    stop_agreement: float | None = _help(
        "Stop early once this share of the pool is predicted as in the round before (stabilising predictions, "
        "e.g. 0.99); None: run to max_labels.",
        None,
    )

    def __post_init__(self):
        self.labels = [str(label) for label in self.labels]
        _require(len(set(self.labels)) == len(self.labels), f"active.labels={self.labels} names a label twice.")
        _require_choice("active", "strategy", self.strategy, QUERY_STRATEGIES)
        _require_choice("active", "cold_start", self.cold_start, COLD_STARTS)
        _require(self.batch >= 1, f"active.batch={self.batch} must be at least 1.")
        _require(self.initial >= 1, f"active.initial={self.initial} must be at least 1.")
        _require(
            self.max_labels >= self.initial,
            f"active.max_labels={self.max_labels} must be at least active.initial={self.initial}.",
        )
        _require(self.pool_size is None or self.pool_size >= 1, f"active.pool_size={self.pool_size} must be positive.")
        _require(
            self.stop_agreement is None or 0.0 < self.stop_agreement <= 1.0,
            f"active.stop_agreement={self.stop_agreement} must be in (0, 1].",
        )


@dataclass
class Config:
    """The root of the configuration tree."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    setfit: SetFitConfig = field(default_factory=SetFitConfig)
    active: ActiveConfig = field(default_factory=ActiveConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def updated(self, overrides: list[str] | dict) -> Config:
        """A validated copy with dotted overrides applied, e.g. ``cfg.updated({"train.lr": 3e-5})``."""
        cfg = copy.deepcopy(self)
        _apply(cfg, parse_overrides(overrides), "")
        _validate(cfg)
        return cfg

    def flat(self) -> dict:
        """Every setting under its dotted key, e.g. ``{"data.dataset": "trec", "train.lr": 5e-05, ...}``."""
        return {
            f"{section}.{key}": value for section, values in self.to_dict().items() for key, value in values.items()
        }

    def changes(self) -> dict:
        """The dotted keys whose values differ from the defaults, e.g. ``{"train.lr": 0.0001}``."""
        default = Config().flat()
        return {key: value for key, value in self.flat().items() if default[key] != value}

    def save(self, path: str | Path) -> None:
        """Write the config as YAML (to a temporary name, then renamed: a crash never leaves half a file)."""
        path = Path(path)
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        partial.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        os.replace(partial, path)


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one line: where (line and column, counted from 1) and what."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    what = " ".join(part for part in (getattr(exc, "context", None), getattr(exc, "problem", None)) if part)
    return where + (what or " ".join(str(exc).split()))


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Turn a YAML/CLI value into the annotated type, or raise ConfigError naming the key."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if value is None:
        if origin in (typing.Union, types.UnionType) and type(None) in args:
            return None
        raise ConfigError(f"{key} needs a value, e.g. {key}=... (it cannot be empty or null).")
    if origin in (typing.Union, types.UnionType):
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}={value!r} does not fit {annotation}.")
    if origin is list:
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip() else []
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            example = "[256,128]" if args and args[0] is int else "[a,b]"
            raise ConfigError(f"{key}={value!r} must be a list, e.g. {key}={example}.")
        return [_coerce(v, args[0], key) for v in value] if args else value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{key}={value!r} must be true or false.")
    if annotation in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} must be a number.")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={value!r} must be a number.") from None
        if annotation is int:
            if not number.is_integer():
                raise ConfigError(f"{key}={value!r} must be a whole number.")
            return int(number)
        return number
    if annotation is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}={value!r} must be a single value.")
        return str(value)
    return value


def _apply(section: Any, values: dict, prefix: str) -> None:
    """Set ``values`` on a dataclass section, recursing into nested sections."""
    fields = {f.name: f for f in dataclasses.fields(section)}
    hints = typing.get_type_hints(type(section))  # resolves "int | None" (annotations are strings here)
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(
                f"Unknown config key '{dotted}'. Valid keys under '{prefix or '<root>'}': {', '.join(fields)}."
            )
        current = getattr(section, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(
                    f"'{dotted}' is a section; give it keys, e.g. {dotted}.{next(iter(_field_names(current)))}=..."
                )
            _apply(current, value, f"{dotted}.")
        else:
            setattr(section, key, _coerce(value, hints[key], dotted))


def _field_names(section: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(section)]


def check_options(owner: str, options: typing.Iterable[str], section: type) -> None:
    """Raise ConfigError naming the keyword options that are no field of the config dataclass ``section``.

    Example:
        >>> check_options("Trainer", {"max_epoch": 3}, TrainConfig)  # doctest: +SKIP
        ConfigError: Trainer got unknown option(s) max_epoch. Valid: accumulate, ...
    """
    valid = sorted(_field_names(section))
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(f"{owner} got unknown option(s) {', '.join(unknown)}. Valid: {', '.join(valid)}.")


def _validate(cfg: Config) -> None:
    for section in (
        cfg.data,
        cfg.model,
        cfg.train,
        cfg.run,
        cfg.tune,
        cfg.augment,
        cfg.distill,
        cfg.setfit,
        cfg.active,
    ):
        section.__post_init__()
    check_search_space(cfg.tune.space)


def check_search_space(space: dict) -> None:
    """Raise ConfigError naming the first search-space entry whose key or range is wrong.

    Keys are dotted keys of the data, model, train, augment and setfit sections; values are one of
    :data:`SEARCH_DISTRIBUTIONS` with its arguments.
    """
    _require(isinstance(space, dict), f"tune.space must map dotted config keys to ranges, not {space!r}.")
    searchable = {
        f"{s.name}.{f.name}"
        for s in dataclasses.fields(Config)
        if s.name in ("data", "model", "train", "augment", "setfit")
        for f in dataclasses.fields(s.default_factory)
    }
    for key, spec in space.items():
        where = f"tune.space['{key}']"
        _require(
            key in searchable,
            f"{where}: '{key}' is not a config key that can be searched. Use a dotted key of "
            "the data, model, train, augment or setfit section, e.g. train.lr (see `workbench config`).",
        )
        _require(
            isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in SEARCH_DISTRIBUTIONS,
            f"{where}={spec!r} must be one of {{{': ..., '.join(SEARCH_DISTRIBUTIONS)}: ...}}, "
            "e.g. {log_uniform: [1.0e-5, 3.0e-4]}.",
        )
        kind, values = next(iter(spec.items()))
        _require(isinstance(values, list) and values, f"{where}: {kind} needs a list, e.g. {kind}: [1, 2].")
        if kind == "choice":  # Optuna stores choices as they are: numbers, strings, booleans or null
            _require(
                all(v is None or isinstance(v, (bool, int, float, str)) for v in values),
                f"{where}: choice values must be numbers, strings, true/false or null; got {values!r}.",
            )
            continue
        _require(
            len(values) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values),
            f"{where}: {kind} needs [low, high] numbers; got {values!r}.",
        )
        low, high = values
        _require(low < high if kind != "int" else low <= high, f"{where}: low {low} must be below high {high}.")
        _require(kind != "log_uniform" or low > 0, f"{where}: log_uniform needs a positive low end; got {low}.")
        _require(kind != "int" or all(float(v).is_integer() for v in values), f"{where}: int needs whole numbers.")


def parse_overrides(overrides: list[str] | dict | None) -> dict:
    """Turn ``["train.lr=3e-5", "model.pooling=cls"]`` into a nested dict.

    Values are parsed as YAML scalars, so ``3e-5`` is a float, ``true`` a bool and ``[1,2]`` a list.
    """
    if not overrides:
        return {}
    if isinstance(overrides, dict):
        flat = overrides.items()
    else:
        flat = []
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"Override '{item}' needs the form section.key=value, e.g. train.lr=3e-5.")
            key, raw = item.split("=", 1)
            try:
                value = yaml.safe_load(raw) if raw.strip() else None
            except yaml.YAMLError:
                raise ConfigError(
                    f"Override '{item}': the value {raw!r} is not valid YAML; quote it or fix the brackets."
                ) from None
            flat.append((key.strip(), value))
    nested: dict = {}
    for key, value in flat:
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested


def load_config(path: str | Path | None = None, overrides: list[str] | dict | None = None) -> Config:
    """Build the resolved config: defaults, then the experiment file, then overrides.

    Args:
        path: an experiment YAML (or JSON) file holding only what differs from the defaults.
        overrides: dotted ``key=value`` strings, or a dict of dotted keys to values.

    Returns:
        A validated :class:`Config`.

    Example:
        >>> load_config(overrides=["train.lr=3e-5"]).train.lr
        3e-05
    """
    cfg = Config()
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"Config file {path} does not exist.")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"Config file {path} is not valid YAML: {yaml_problem(exc)}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"Config file {path} must hold a mapping of sections (data:, model:, train:, run:).")
        try:
            _apply(cfg, values, "")
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    _apply(cfg, parse_overrides(overrides), "")
    _validate(cfg)
    return cfg


def config_from_dict(values: dict) -> Config:
    """Rebuild a Config from ``Config.to_dict()`` output (e.g. a saved run's config.yaml)."""
    cfg = Config()
    _apply(cfg, values, "")
    _validate(cfg)
    return cfg


def describe(section: Any = None) -> str:
    """Human-readable list of every key with its default and help text (used by ``workbench config``)."""
    section = section or Config()
    lines = []
    for sec in dataclasses.fields(section):
        lines.append(f"{sec.name}:")
        for f in dataclasses.fields(getattr(section, sec.name)):
            value = json.dumps(getattr(getattr(section, sec.name), f.name))
            lines.append(f"  {f.name} = {value}  # {f.metadata.get('help', '')}")
    return "\n".join(lines)


# Notebook parameter name -> dotted config key. Every key is reachable by its own name (no name appears in
# two sections; tests/test_config.py checks), plus the names the notebooks use for three of them.
NOTEBOOK_PARAMETERS: dict[str, str] = {
    **{
        f.name: f"{section.name}.{f.name}"
        for section in dataclasses.fields(Config)
        for f in dataclasses.fields(section.default_factory)
    },
    "model": "model.backbone",
    "run_name": "run.name",
    "run_root": "run.root",
}


def config_from_parameters(config_file: str | Path | None = None, **parameters: Any) -> Config:
    """Build a notebook's config from its parameters: defaults, then ``config_file``, then every parameter.

    A parameter is named by its config key's own name (``lr`` is ``train.lr``, ``dataset`` is
    ``data.dataset``) or by one of ``model`` (``model.backbone``), ``run_name`` and ``run_root``; see
    :data:`NOTEBOOK_PARAMETERS`. Every parameter is applied, None included, exactly as a dotted override
    of :func:`load_config`: None clears an optional key (``test_split=None`` overrides the file's
    ``test_split``) and is an error for a key that needs a value.

    Args:
        config_file: an experiment YAML to start from, or None for the defaults.
        parameters: notebook parameter names and their values.

    Returns:
        A validated :class:`Config`.

    Example:
        >>> config_from_parameters(dataset="trec", model="minilm", lr=3e-5, run_name="nb").changes()
        {'data.dataset': 'trec', 'train.lr': 3e-05, 'run.name': 'nb'}
    """
    unknown = [name for name in parameters if name not in NOTEBOOK_PARAMETERS]
    if unknown:
        raise ConfigError(
            f"Unknown notebook parameter(s) {', '.join(map(repr, unknown))}. Valid names: "
            f"{', '.join(NOTEBOOK_PARAMETERS)}."
        )
    return load_config(config_file, {NOTEBOOK_PARAMETERS[name]: value for name, value in parameters.items()})
