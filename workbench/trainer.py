"""Fine-tuning on top of ``transformers.Trainer``, with workbench's batching, losses and run records.

``transformers.Trainer`` does the loop: optimisation, gradient accumulation and clipping, mixed
precision, evaluation, checkpoint rotation, best-model tracking, early stopping and exact resume
(model, optimizer, scheduler, RNG state and position in the epoch). This module adds what it lacks:
token-budget length-bucketed batches, our losses, LAMB and one-cycle schedules, layer-wise learning-rate
decay, the records of each run written into its :class:`~workbench.runs.RunDir` (resolved config,
environment, per-step log, metrics, summary, best model), and a Lightning-style surface for notebooks::

    trainer = Trainer(max_epochs=3, precision=16, run_name="sst2")
    result = trainer.fit(model, data_module)
    result.run_dir, result.metrics["validation"]["accuracy"]
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from accelerate import PartialState
from accelerate.utils import broadcast_object_list
from torch.utils.data import DataLoader
from transformers import EarlyStoppingCallback, EvalPrediction, TrainerCallback, TrainingArguments
from transformers.trainer import OPTIMIZER_NAME
from transformers.trainer_pt_utils import safe_globals
from transformers.trainer_utils import EvalLoopOutput, rotate_checkpoints

from workbench.config import (
    AUTO_BF16_MIN_WIDTH,
    Config,
    DistillConfig,
    RunConfig,
    TrainConfig,
    check_options,
    load_config,
)
from workbench.data import TextDataModule
from workbench.errors import ConfigError, ModelLoadError, WorkbenchError
from workbench.evaluation import evaluate_model
from workbench.fewshot import fit_setfit
from workbench.labels import LabelMap
from workbench.losses import DISTILL_FEATURES, DistillationLoss, build_loss, class_weights_from_labels
from workbench.metrics import (
    MULTI_LABEL_METRICS,
    SINGLE_LABEL_METRICS,
    classification_metrics,
    greater_is_better,
    monitored_metric,
    multilabel_metrics,
    tune_thresholds,
)
from workbench.models import WINDOW_ATTENTION, TextClassificationModel
from workbench.runs import (
    CHECKPOINT_PREFIX,
    Run,
    RunDir,
    checkpoint_problem,
    checkpoint_step,
    cpu_bf16_matrix_units,
    environment_info,
    load_run,
    mark_complete,
    point_link,
    resume_point,
    trim_log,
)
from workbench.text import TextProcessing
from workbench.track import StudyRun, Tracking, check_installed, data_description

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# The transformers.Trainer subclass


class StepLogCallback(TrainerCallback):
    """Appends every training and evaluation log to ``log.jsonl`` (one JSON object a line) for learning curves."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and state.is_world_process_zero:  # one writer when several processes train
            record = {"step": state.global_step, "epoch": state.epoch, "time": time.time(), **logs}
            with self.path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")


def layer_depths(model: torch.nn.Module) -> dict[str, int]:
    """How far each trainable parameter sits below the head: 0 for the head and pooling, 1 for the top
    encoder layer, ..., L for the bottom one, L + 1 for the embeddings.

    Encoder layers are found by the ``.layer.<i>.`` in their names (BERT, RoBERTa, DistilBERT, MPNet); a
    backbone without numbered layers (ALBERT shares one) gets depth 0 throughout, i.e. no decay.
    """
    pattern = re.compile(r"\.layers?\.(\d+)\.")
    names = [name for name, param in model.named_parameters() if param.requires_grad]
    indices = {name: int(match.group(1)) for name in names if (match := pattern.search(name))}
    top = max(indices.values(), default=-1) + 1  # number of encoder layers
    depths = {}
    for name in names:
        if name in indices:
            depths[name] = top - indices[name]
        elif "embeddings" in name and top:
            depths[name] = top + 1
        else:
            depths[name] = 0
    return depths


def parameter_groups(
    model: torch.nn.Module, decay_names: list[str], weight_decay: float, lr: float, layer_lr_decay: float = 1.0
) -> list[dict]:
    """Optimizer groups: weight decay only on ``decay_names``, and ``lr * layer_lr_decay ** depth`` per
    :func:`layer_depths`, so lower layers, which hold more general features, move less (layer-wise
    learning-rate decay, Howard & Ruder 2018; Clark et al. 2020)."""
    groups: dict[tuple[int, bool], dict] = {}
    parameters, decay_names = dict(model.named_parameters()), set(decay_names)
    for name, depth in layer_depths(model).items():
        decays = name in decay_names
        group = groups.setdefault(
            (depth, decays),
            {"params": [], "weight_decay": weight_decay if decays else 0.0, "lr": lr * layer_lr_decay**depth},
        )
        group["params"].append(parameters[name])
    return [groups[key] for key in sorted(groups)]


class _HFTrainer(transformers.Trainer):
    """transformers.Trainer with our batch sampler, loss, optimizers, schedules and save format, and, with several
    processes, validation that each process runs over the whole split (see ``evaluation_loop``)."""

    def __init__(
        self, *args, datamodule: TextDataModule, train_config: TrainConfig, loss_fn: torch.nn.Module, **kwargs
    ):
        super().__init__(*args, **kwargs)
        self.datamodule, self.train_config, self.loss_fn = datamodule, train_config, loss_fn

    def _loader(self, dataset, batch_sampler) -> DataLoader:
        loader = DataLoader(
            dataset,
            batch_sampler=batch_sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
        )
        return self.accelerator.prepare(loader)

    # With several processes (torchrun, accelerate launch) accelerate deals batch i to process i % world_size; the
    # training sampler plans a multiple of world_size batches, so no process repeats a batch to keep step counts equal.
    def get_train_dataloader(self) -> DataLoader:
        return self._loader(
            self.train_dataset, self.datamodule.train_batch_sampler(self.args.seed, self.args.world_size)
        )

    def get_eval_dataloader(self, eval_dataset=None) -> DataLoader:
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        loader_batches = self.datamodule.eval_batch_sampler(dataset)
        if self.args.world_size > 1:  # see evaluation_loop: each process reads the whole split itself
            return DataLoader(dataset, batch_sampler=loader_batches, collate_fn=self.data_collator)
        return self._loader(dataset, loader_batches)

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ) -> EvalLoopOutput:
        dataset = dataloader.dataset
        windowed = len(dataset) > 0 and "windows" in dataset[0]  # one answer per text, pooled over its windows
        if self.args.world_size == 1 and not windowed:
            return super().evaluation_loop(
                dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix
            )
        # Several processes: each scores the whole validation split with the unwrapped model, so metrics cover every
        # example exactly once and agree everywhere. (Sharding it would gather length-bucketed batches of unequal
        # sizes across processes, which accelerate's gather cannot do, or count repeated examples twice.) Windowed
        # texts: the model pools each text's windows (logits_of), which batches of windows cannot.
        model = self.accelerator.unwrap_model(self.model)
        logits = model.logits_of(
            dataset.features, batch_size=self.args.per_device_eval_batch_size, lengths=dataset.lengths
        )  # (N, K)
        labels = torch.as_tensor(dataset.labels)
        self.loss_fn.to(logits.device)
        with torch.no_grad():
            loss = self.loss_fn(logits, labels.to(logits.dtype) if labels.dtype.is_floating_point else labels)
        metrics = self.compute_metrics(EvalPrediction(predictions=logits.numpy(), label_ids=labels.numpy()))
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in metrics.items()} | {
            f"{metric_key_prefix}_loss": float(loss)
        }
        return EvalLoopOutput(
            predictions=logits.numpy(), label_ids=labels.numpy(), metrics=metrics, num_samples=len(dataset)
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        teacher = {key: inputs.pop(key) for key in DISTILL_FEATURES if key in inputs}  # a distillation transfer set
        match_hidden = "teacher_index" in teacher and getattr(self.loss_fn, "matches_hidden", False)
        outputs = model(**inputs, match_hidden=True) if match_hidden else model(**inputs)
        if match_hidden:
            teacher["projected"] = outputs["projected"]
        logits = outputs["logits"]
        self.loss_fn.to(logits.device)  # class weights are buffers built on the CPU; a no-op once moved
        loss = self.loss_fn(logits, labels.to(logits.dtype) if labels.dtype.is_floating_point else labels, **teacher)
        return (loss, outputs) if return_outputs else loss

    def create_optimizer(self, model=None):
        cfg = self.train_config
        if self.optimizer is None and (cfg.optimizer == "lamb" or cfg.layer_lr_decay < 1.0):
            groups = parameter_groups(
                self.model,
                self.get_decay_parameter_names(self.model),
                self.args.weight_decay,
                self.args.learning_rate,
                cfg.layer_lr_decay,
            )
            if cfg.optimizer == "lamb":
                from pytorch_optimizer import Lamb

                self.optimizer = Lamb(groups, lr=self.args.learning_rate)
            else:
                optimizer_cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
                self.optimizer = optimizer_cls(groups, **kwargs)  # each group's own lr overrides kwargs["lr"]
            return self.optimizer
        return super().create_optimizer(model)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None and self.train_config.schedule == "one_cycle" and num_training_steps >= 4:
            warmup = self.train_config.warmup
            pct = warmup if warmup < 1 else warmup / num_training_steps
            # OneCycleLR needs at least one step in each phase
            pct = min(max(pct, 2 / num_training_steps), 1 - 1 / num_training_steps)
            self.lr_scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer or self.optimizer,
                max_lr=self.args.learning_rate,
                total_steps=num_training_steps,
                pct_start=pct,
                anneal_strategy="cos",
                cycle_momentum=False,
            )
            return self.lr_scheduler
        return super().create_scheduler(num_training_steps, optimizer)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        if not self.args.should_save:  # transformers calls this on every process; one writes (as its own _save does)
            return
        self.model.save_pretrained(output_dir or self.args.output_dir, training=True)  # a checkpoint

    def _save_checkpoint(self, model, trial) -> None:
        # Record the checkpoint as whole (runs.mark_complete) after its last file and before older checkpoints are
        # rotated away, so a crash at any moment leaves a whole checkpoint to resume from.
        folder = Path(self._get_output_dir(trial=trial))
        checkpoint = folder / f"{CHECKPOINT_PREFIX}{self.state.global_step}"
        if self.args.should_save:  # a resumed run writing this step again: not whole until rewritten
            (checkpoint / RunDir.COMPLETE).unlink(missing_ok=True)
        limit, self.args.save_total_limit = self.args.save_total_limit, None
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit
        self.accelerator.wait_for_everyone()  # every process has written its own RNG state
        if self.args.should_save:
            mark_complete(checkpoint)
            rotate_checkpoints(
                output_dir=str(folder),
                save_total_limit=limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=True,
            )


# --------------------------------------------------------------------------------------------------
# The public Trainer


@dataclass
class FitResult:
    """What ``Trainer.fit`` produced: the run folder, its metrics and the trained model."""

    run_dir: Path
    metrics: dict
    model: TextClassificationModel
    main: bool = True  # False in the other processes of a torchrun / accelerate launch run (they wrote nothing)

    @property
    def best_dir(self) -> Path:
        return RunDir(self.run_dir).best


def _resolve_device_and_precision(cfg: TrainConfig, gpus: int | None) -> tuple[str, str]:
    """The device, and the precision as asked (``auto`` stays ``auto`` until the model's width is known:
    :func:`choose_precision`)."""
    cuda = torch.cuda.is_available()
    device = cfg.device
    if gpus is not None:
        device = "cuda" if gpus else "cpu"
    if device == "cuda" and not cuda:
        warnings.warn(
            f"A GPU was requested (gpus={gpus}, device={cfg.device}) but none is available: training on the CPU.",
            stacklevel=3,
        )
        device = "cpu"
    if device == "auto":
        device = "cuda" if cuda else "cpu"
    precision = cfg.precision.replace("-mixed", "")
    if precision == "16" and device == "cpu":
        warnings.warn(
            f"precision={cfg.precision} needs a GPU; on this CPU training runs in 32-bit precision instead "
            "(bf16 runs on CPUs, and pays on those with AMX).",
            stacklevel=3,
        )
        precision = "32"
    if precision == "bf16" and device == "cpu" and not cpu_bf16_matrix_units():
        warnings.warn(
            "precision=bf16 on a CPU without bf16 matrix units (Intel AMX): autocast runs, but slower than 32-bit.",
            stacklevel=3,
        )
    if precision == "bf16" and device == "cuda" and not torch.cuda.is_bf16_supported():
        warnings.warn("This GPU has no bf16 support: using fp16 mixed precision instead.", stacklevel=3)
        precision = "16"
    return device, precision


def choose_precision(requested: str, device: str, width: int | None) -> tuple[str, str]:
    """The precision ``train.precision=auto`` trains in, and why, for a backbone ``width`` wide on ``device``.

    bf16 autocast where the hardware multiplies bf16 matrices (a GPU with bf16, or a CPU with AMX) and the
    backbone is at least ``config.AUTO_BF16_MIN_WIDTH`` wide; 32 otherwise. Any other request is kept as it is.

    Example:
        >>> choose_precision("auto", "cpu", 384)[0]
        '32'
    """
    if requested != "auto":
        return requested, "as set in train.precision"
    units = torch.cuda.is_bf16_supported() if device == "cuda" else cpu_bf16_matrix_units()
    hardware = "this GPU" if device == "cuda" else "this CPU"
    if not units:
        return "32", f"auto: {hardware} has no bf16 matrix units"
    what = "bf16 support" if device == "cuda" else "bf16 matrix units (AMX)"
    if width is None or width < AUTO_BF16_MIN_WIDTH:
        return "32", f"auto: {hardware} has {what}, but the backbone is {width} wide, below {AUTO_BF16_MIN_WIDTH}"
    return "bf16", f"auto: {hardware} has {what} and the backbone is {width} wide"


class Trainer:
    """Fine-tunes a :class:`TextClassificationModel` on a :class:`TextDataModule`.

    Args:
        config: a :class:`~workbench.config.TrainConfig` (or the whole :class:`Config`, whose ``train`` and
            ``run`` sections are used).
        max_epochs, gpus, precision, log_every_n_steps: Lightning-style shortcuts for ``epochs``,
            ``device``, ``precision`` and ``log_every``. ``gpus=1`` or ``precision=16`` without a GPU warn
            and train on the CPU in 32-bit.
        run_name, run_root: outputs go to ``<run_root>/<run_name>/version_N/``.
        study: the tuning study (:class:`~workbench.track.StudyRun`) this run is a trial of; its trackers
            group the run under the study.
        checkpoint_dir: after ``fit``, ``<checkpoint_dir>/best-model.ckpt`` points at the best model
            (a folder that ``TextClassificationModel.load_from_checkpoint`` reads). None to skip.
        distill: train on a teacher's soft targets (:class:`~workbench.losses.DistillationLoss`): the training
            split's examples then carry ``soft_targets`` (see :mod:`workbench.distill`, which sets this).
        extra_metrics: called with the trained model and the data module before ``metrics.json`` is written; what
            it returns is added to the metrics (distillation's teacher figures).
        **options: any TrainConfig field, e.g. ``lr=3e-5``, ``early_stopping_patience=2``.

    Example:
        >>> trainer = Trainer(max_epochs=1, lr=1e-4, run_name="trec")
        >>> result = trainer.fit(model, data_module)
    """

    def __init__(
        self,
        config: TrainConfig | Config | None = None,
        *,
        max_epochs: float | None = None,
        gpus: int | None = None,
        precision: int | str | None = None,
        log_every_n_steps: int | None = None,
        run_name: str | None = None,
        run_root: str | None = None,
        checkpoint_dir: str | None = "checkpoints",
        callbacks: list[TrainerCallback] | None = None,
        study: StudyRun | None = None,
        distill: DistillConfig | None = None,
        extra_metrics: Callable[[TextClassificationModel, TextDataModule], dict] | None = None,
        **options,
    ):
        run = RunConfig()
        if isinstance(config, Config):
            config, run = config.train, config.run
        config = config or TrainConfig()
        shortcuts = {
            "epochs": max_epochs,
            "precision": None if precision is None else str(precision),
            "log_every": log_every_n_steps,
        }
        check_options("Trainer", options, TrainConfig)
        self.config = replace(config, **{k: v for k, v in shortcuts.items() if v is not None}, **options)
        self.run = replace(run, **{k: v for k, v in {"name": run_name, "root": run_root}.items() if v is not None})
        self.gpus, self.checkpoint_dir, self.callbacks, self.study = gpus, checkpoint_dir, list(callbacks or []), study
        self.device, self.precision = _resolve_device_and_precision(self.config, gpus)
        self.precision_reason = "as set in train.precision"
        self.distill, self.extra_metrics = distill, extra_metrics

    # -- helpers ------------------------------------------------------------------------------------

    def _prepare(self, model: TextClassificationModel, dm: TextDataModule) -> torch.nn.Module:
        """Check model against data, hand the model what the data decides (``use_data``), and build the loss."""
        if dm.train_dataset is None:
            dm.setup()
        if model.multi_label != dm.multi_label:
            raise ConfigError(
                f"The model is {'multi' if model.multi_label else 'single'}-label but the data is "
                f"{'multi' if dm.multi_label else 'single'}-label. Build the model with multi_label={dm.multi_label}."
            )
        if model.num_labels != dm.num_labels:
            raise ConfigError(
                f"The model has {model.num_labels} classes but the training data has {dm.num_labels} labels "
                f"({', '.join(dm.label_names[:10])}...). Build it with num_classes={dm.num_labels}."
            )
        limit = model.max_positions
        if limit is not None and dm.config.max_length > limit:
            raise ConfigError(
                f"data.max_length={dm.config.max_length} is longer than the {limit} positions backbone "
                f"'{model.model_config.backbone}' has. Set data.max_length to {limit} or less."
            )
        model.use_data(dm.label_names, dm.tokenizer, TextProcessing.from_config(dm.config))
        if model.window_attention is not None:  # attention pooling pools by the mean while the encoder trains
            with torch.no_grad():
                model.window_attention.weight.zero_()
        if self.precision == "auto":
            width = model.backbone.config.hidden_size  # every transformers config maps it (DistilBERT's dim)
            self.precision, self.precision_reason = choose_precision("auto", self.device, width)
        cfg = self.config
        valid = {"loss", *(MULTI_LABEL_METRICS if dm.multi_label else SINGLE_LABEL_METRICS)}
        if self.monitor(dm) not in valid:
            raise ConfigError(
                f"train.monitor='{cfg.monitor}' is not a validation metric of "
                f"{'multi' if dm.multi_label else 'single'}-label data. Use one of {', '.join(sorted(valid))}."
            )
        weights = cfg.class_weights
        if weights == "balanced":
            weights = class_weights_from_labels(dm.train_dataset.labels, dm.num_labels, dm.multi_label)
        loss = build_loss(
            cfg.loss,
            multi_label=dm.multi_label,
            num_labels=dm.num_labels,
            label_smoothing=cfg.label_smoothing,
            focal_gamma=cfg.focal_gamma,
            class_weights=weights,
        )
        if self.distill is None:
            return loss
        return DistillationLoss(
            loss,
            self.distill.temperature,
            self.distill.soft_weight,
            dm.multi_label,
            hidden_weight=self.distill.match_weight,
            teacher_hidden=getattr(dm.train_dataset, "teacher_hidden", None),  # a transfer set's (workbench.distill)
        )

    def monitor(self, dm: TextDataModule) -> str:
        """The metric that picks the best checkpoint: train.monitor, or accuracy / micro_f1 by the kind of data."""
        return monitored_metric(self.config.monitor, multi_label=dm.multi_label)

    def _arguments(self, run: RunDir, dm: TextDataModule) -> TrainingArguments:
        cfg = self.config
        strategy = "steps" if cfg.eval_every else "epoch"
        monitor = f"eval_{self.monitor(dm)}"
        schedules = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup", "one_cycle": "linear"}
        optimizers = {"adamw": "adamw_torch_fused", "adafactor": "adafactor", "lamb": "adamw_torch"}
        return TrainingArguments(
            output_dir=str(run.checkpoints),
            num_train_epochs=cfg.epochs,
            learning_rate=cfg.lr,
            weight_decay=cfg.weight_decay,
            warmup_steps=cfg.warmup,
            lr_scheduler_type=schedules[cfg.schedule],
            optim=optimizers[cfg.optimizer],
            gradient_accumulation_steps=cfg.grad_accum,
            max_grad_norm=cfg.max_grad_norm or 0.0,
            per_device_train_batch_size=dm.config.batch_size,
            per_device_eval_batch_size=dm.config.eval_batch_size,
            eval_strategy=strategy,
            save_strategy=strategy,
            eval_steps=cfg.eval_every or None,
            save_steps=cfg.eval_every or None,
            logging_steps=cfg.log_every,
            logging_first_step=True,
            save_total_limit=cfg.keep_top_k + 1,
            load_best_model_at_end=True,
            metric_for_best_model=monitor,
            greater_is_better=greater_is_better(monitor),  # not for eval_loss and eval_hamming_loss
            seed=cfg.seed,
            data_seed=cfg.seed,
            fp16=self.precision == "16",
            bf16=self.precision == "bf16",
            use_cpu=self.device == "cpu",
            dataloader_num_workers=cfg.num_workers,
            remove_unused_columns=False,
            report_to="none",
            label_names=["labels"],
            disable_tqdm=False,
            save_only_model=cfg.save_only_model,
        )

    def _compute_metrics(self, dm: TextDataModule, model: TextClassificationModel):
        def compute(prediction) -> dict:
            logits = torch.as_tensor(prediction.predictions)
            labels = np.asarray(prediction.label_ids)
            if dm.multi_label:
                out = multilabel_metrics(labels, logits.sigmoid().numpy(), model.thresholds)
            else:
                out = classification_metrics(labels, logits.softmax(-1).numpy(), dm.label_names)
            return {k: v for k, v in out.items() if isinstance(v, (int, float)) and v is not None}

        return compute

    # -- the two public calls -----------------------------------------------------------------------

    def fit(
        self,
        model: TextClassificationModel,
        datamodule: TextDataModule,
        resume: bool | str | Path = False,
        full_config: Config | None = None,
    ) -> FitResult:
        """Train, keep the best checkpoint by ``monitor``, evaluate, and write the run directory.

        Args:
            model: the model to train (its label count must match the data).
            datamodule: the data; ``setup()`` is called if it has not been.
            resume: ``True`` resumes the newest version of this run name from its last checkpoint; a path
                resumes that run directory or checkpoint folder.
            full_config: the whole config to save (the CLI passes it); built from the parts otherwise.

        Returns:
            A :class:`FitResult` with the run directory, the metrics and the model (best weights loaded).
        """
        cfg = self.config
        transformers.set_seed(cfg.seed)
        loss_fn = self._prepare(model, datamodule)
        # torchrun / accelerate launch start one process per device: process 0 picks (and writes) the run
        # directory, the others train into the same one and write nothing
        processes = PartialState(cpu=self.device == "cpu")
        main = processes.is_main_process
        run, checkpoint = self._shared_run_dir(processes, resume)
        run_dir = run.path
        config = full_config or Config(
            data=datamodule.config, model=model.model_config, train=cfg, run=self.run, augment=datamodule.augment
        )
        environment = {
            **environment_info(cfg.seed),
            "device": self.device,
            "precision": self.precision,
            "precision_reason": self.precision_reason,
            "processes": processes.num_processes,
        }
        if main:
            run.record_start(config, environment, datamodule.label_map.to_dict(), datamodule.training_rows)
        if checkpoint is not None and main:
            trim_log(run / RunDir.LOG, checkpoint_step(checkpoint))
        callbacks = [StepLogCallback(run / RunDir.LOG), *self.callbacks]
        if cfg.early_stopping_patience:
            callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
        tracking = (
            Tracking(config, run, environment, _data_description(datamodule), study=self.study)
            if config.run.track and main
            else None
        )
        log.info("Run directory: %s", run_dir)
        try:
            if tracking:
                callbacks.extend(tracking.start())
            hf = _HFTrainer(
                model=model,
                args=self._arguments(run, datamodule),
                train_dataset=datamodule.train_dataset,
                eval_dataset=datamodule.val_dataset,
                data_collator=datamodule.collator,
                compute_metrics=self._compute_metrics(datamodule, model),
                callbacks=callbacks,
                datamodule=datamodule,
                train_config=cfg,
                loss_fn=loss_fn,
            )
            # read before training: the checkpoint may be rotated away once newer ones are saved
            start_epoch = (
                json.loads((checkpoint / "trainer_state.json").read_text()).get("epoch", 0.0) if checkpoint else 0.0
            )
            output = hf.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
            metrics = self._finish(hf, model, datamodule, run, output, start_epoch, write=main)
            processes.wait_for_everyone()
        except KeyboardInterrupt:
            if tracking:
                tracking.finish(None, status="KILLED")
            last = run.latest_checkpoint()
            raise KeyboardInterrupt(
                "Training interrupted. "
                f"{'Checkpoint ' + str(last) + ' is kept' if last else 'No checkpoint was written yet'}; "
                f"resume with `workbench train ... --resume {run_dir}` or Trainer.fit(..., resume='{run_dir}')."
            ) from None
        except BaseException:  # an error, or a tuning trial stopped by its pruner
            if tracking:
                tracking.finish(None)
            raise
        if tracking:
            tracking.finish(metrics)
        return FitResult(run_dir, metrics, model, main)

    def _shared_run_dir(self, processes: PartialState, resume) -> tuple[RunDir, Path | None]:
        """Process 0 picks the run directory and checkpoint (:meth:`_run_dir_and_checkpoint`) and sends them, or
        its error, to the other processes, so every process trains into the same folder or stops with the same
        error instead of waiting."""
        chosen: tuple | Exception | None = None
        if processes.is_main_process:
            try:
                chosen = self._run_dir_and_checkpoint(resume)
            except WorkbenchError as exc:
                chosen = exc
        if processes.num_processes > 1:
            chosen = broadcast_object_list([chosen], from_process=0)[0]
        if isinstance(chosen, Exception):
            raise chosen
        return chosen

    def _run_dir_and_checkpoint(self, resume) -> tuple[RunDir, Path | None]:
        if not resume:
            return RunDir.next_version(self.run.root, self.run.name), None
        if resume is True:
            run = RunDir.latest(self.run.root, self.run.name)
            if run is None:
                raise ModelLoadError(
                    f"Nothing to resume: {Path(self.run.root) / self.run.name} has no "
                    f"{RunDir.VERSION}N folder with a whole checkpoint."
                )
            names = [v.path.name for v in RunDir.versions(self.run.root, self.run.name)]
            skipped = names[names.index(run.path.name) + 1 :]
            if skipped:
                log.warning(
                    "Resuming %s: %s stopped before their first whole checkpoint.", run.path, ", ".join(skipped)
                )
            resume = run.path
        run, checkpoint = resume_point(resume)
        check_checkpoint_files(checkpoint)
        for folder in run.checkpoint_folders():  # half-written by a crash after it: training writes them again
            if checkpoint_step(folder) > checkpoint_step(checkpoint) and checkpoint_problem(folder):
                shutil.rmtree(folder)
        return run, checkpoint

    def _finish(
        self,
        hf: _HFTrainer,
        model: TextClassificationModel,
        dm: TextDataModule,
        run: RunDir,
        output,
        start_epoch: float,
        write: bool = True,
    ) -> dict:
        state = hf.state
        epochs_done = float(state.epoch or 0)
        epochs_now = epochs_done - float(start_epoch or 0)  # a resumed run's runtime covers only these
        n_train = len(dm.train_dataset)
        tokens = int(dm.train_dataset.lengths.sum())
        runtime = float(output.metrics.get("train_runtime", 0.0))
        window_attention = None
        if model.window_attention is not None:
            # attention pooling's scorer, on the best weights' window vectors of the validation texts: post hoc, as
            # the thresholds and the temperature are (the training texts teach it nothing once the encoder has
            # learned them: on Reuters the loss it minimises was 0.003 under mean pooling, and stayed there)
            window_attention = model.fit_window_attention(dm.val_dataset.features, seed=self.config.seed)
            log.info(
                "Window attention fitted on %d validation texts in %.1f s.",
                window_attention["texts"],
                window_attention["seconds"],
            )
        val_proba = model.predict_proba_features(dm.val_dataset)  # once: tunes thresholds and scores validation
        if dm.multi_label:
            model.thresholds = tune_thresholds(dm.val_dataset.labels, val_proba, default=float(model.thresholds.mean()))
        metrics: dict[str, Any] = {
            "validation": evaluate_model(model, dm.val_dataset, val_proba),
            "train": {
                "examples": n_train,
                "original_examples": dm.train_dataset.original_count,
                "epochs": epochs_done,
                "optimizer_steps": state.global_step,
                "runtime_s": runtime,
                "samples_per_s": n_train * epochs_now / runtime if runtime else None,
                "tokens_per_s": tokens * epochs_now / runtime if runtime else None,
                "resumed_from_epoch": float(start_epoch or 0),
                "final_train_loss": output.metrics.get("train_loss"),
                "padding_ratio": _padding_ratio(dm),
                **({"window_attention": window_attention} if window_attention else {}),
            },
            "best_checkpoint": state.best_model_checkpoint,
            "best_metric": state.best_metric,
            "monitor": self.monitor(dm),
            "device": self.device,
            "precision": self.precision,
        }
        if dm.test_dataset is not None:
            metrics["test"] = evaluate_model(model, dm.test_dataset)
        metrics["processes"] = hf.args.world_size
        if not write:  # another process of a multi-process run writes the run directory
            return metrics
        if self.extra_metrics is not None:
            metrics.update(self.extra_metrics(model, dm))
        run.record_finish(model, metrics)
        if self.checkpoint_dir:
            point_link(Path(self.checkpoint_dir) / "best-model.ckpt", run.best.resolve())
        return metrics


def check_checkpoint_files(checkpoint: Path) -> None:
    """Open each torch file of a checkpoint (optimizer, scheduler, RNG states) as transformers will, with
    ``weights_only=True``, before training starts: a file holding anything but tensors and plain values (which
    unpickling could run as code) or a truncated one is a ModelLoadError naming it, not a traceback mid-resume.
    A whole checkpoint without optimizer state was saved with ``train.save_only_model``: transformers would resume
    it with a fresh optimizer and schedule, so it is refused."""
    if not (checkpoint / OPTIMIZER_NAME).is_file():
        raise ModelLoadError(
            f"Cannot resume from {checkpoint}: it holds the model only (train.save_only_model was "
            "on), no optimizer, scheduler or RNG state. Start a new run."
        )
    for path in sorted(checkpoint.glob("*.pt")) + sorted(checkpoint.glob("*.pth")):
        try:
            with safe_globals():
                torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
            if found is None:  # torch's safe unpickler met bytes that are no pickle at all
                raise ModelLoadError(
                    f"{path} is corrupt or truncated (not a torch file). Resume from another "
                    "checkpoint of the run, or start a new run."
                ) from None
            raise ModelLoadError(
                f"{path} holds more than tensors and plain values ({found.group(1)}), and loading "
                "it could run code, so it was refused (torch.load with weights_only=True). Resume "
                "from another checkpoint of the run, or start a new run."
            ) from None
        except (RuntimeError, EOFError, OSError) as exc:
            raise ModelLoadError(
                f"{path} is corrupt or truncated ({str(exc).splitlines()[0]}). Resume from another "
                "checkpoint of the run, or start a new run."
            ) from None


def _padding_ratio(dm: TextDataModule) -> float:
    """The training batches' padding in the last epoch trained (an augmented split is at that epoch already)."""
    sampler = dm.train_batch_sampler()
    sampler.set_epoch(dm.train_dataset.epoch)
    return sampler.padding_ratio()


def _data_description(dm: TextDataModule) -> str:
    sizes = {
        "train": len(dm.train_dataset),
        "validation": len(dm.val_dataset),
        "test": len(dm.test_dataset) if dm.test_dataset is not None else 0,
    }
    return data_description(dm.config.dataset or dm.config.train_file, sizes, dm.label_names)


def train(
    config: Config,
    resume: bool | str | Path = False,
    callbacks: list | None = None,
    *,
    label_map: LabelMap | None = None,
    study: StudyRun | None = None,
) -> FitResult:
    """Everything ``workbench train`` does: build the data module and the model from ``config``, then fit.

    Args:
        config: the resolved config.
        resume: as in :meth:`Trainer.fit`.
        callbacks: extra ``transformers.TrainerCallback`` objects.
        label_map: the labels the model predicts; by default those of the training data. Cross-validation
            gives every fold the labels of the whole pool, so a rare label held out with its fold is still known.
        study: the tuning study this run is a trial of (for its trackers).

    Example:
        >>> result = train(load_config("configs/tiny.yaml", {"train.lr": 3e-5}))  # doctest: +SKIP
        >>> result.run_dir, result.metrics["validation"]["accuracy"]  # doctest: +SKIP
    """
    check_installed(config.run.track)  # before minutes of loading, not after
    dm = TextDataModule(
        config=config.data,
        model_name=config.model.backbone,
        trust_remote_code=config.model.trust_remote_code,
        seed=config.train.seed,
        augment=config.augment,
    )
    dm.setup(label_map=label_map)
    log.info(
        "data: %d train / %d validation examples, %d labels, %d batches per epoch",
        len(dm.train_dataset),
        len(dm.val_dataset),
        dm.num_labels,
        len(dm.train_batch_sampler()),
    )
    if config.train.method == "setfit":
        if resume:
            raise ConfigError(
                "A SetFit run (train.method=setfit) keeps no checkpoints to resume: it trains in minutes. "
                "Run it again without --resume."
            )
        return FitResult(*fit_setfit(config, dm))
    model = TextClassificationModel(
        config.model, labels=dm.label_names, multi_label=dm.multi_label, seed=config.train.seed
    )
    if config.model.init_from:
        start_from(model, config.model.init_from)
    return Trainer(config, checkpoint_dir=None, callbacks=callbacks, study=study).fit(
        model, dm, resume=resume, full_config=config
    )


def start_from(model: TextClassificationModel, source: str | Path) -> None:
    """Load a finished run's (or saved model's) weights into ``model`` (``model.init_from``): the same backbone
    architecture, head and labels, or a ConfigError saying which differs."""
    start = TextClassificationModel.from_pretrained(source)
    if start.label_names != model.label_names:
        raise ConfigError(
            f"model.init_from={source} predicts {start.label_names}, the data {model.label_names}: "
            "start from a model with the same labels."
        )
    # attention pooling's scorer is not carried over: the new run's training end fits its own
    theirs = {k: v for k, v in start.state_dict().items() if not k.startswith(WINDOW_ATTENTION + ".")}
    ours = {k: v for k, v in model.state_dict().items() if not k.startswith(WINDOW_ATTENTION + ".")}
    differ = sorted(
        k for k in ours.keys() | theirs.keys() if k not in theirs or k not in ours or theirs[k].shape != ours[k].shape
    )
    if differ:
        raise ConfigError(
            f"model.init_from={source} is another architecture ({', '.join(differ[:3])} differ): start from a "
            "model with the same backbone and head settings."
        )
    model.load_state_dict(theirs, strict=False)  # every key but the scorer's, checked above


def ensure_run(run_dir: str | Path | None, **small_run: object) -> Run:
    """The finished run at ``run_dir``; when ``run_dir`` is None, train a small run first and return it.

    Args:
        run_dir: a finished run directory, or None.
        small_run: dotted config keys for the small run, e.g. ``{"data.dataset": "trec", "train.epochs": 1}``
            (``config`` may name a YAML file to start from).

    Example:
        >>> run = ensure_run(None, **{"data.dataset": "trec", "data.train_subset": 500})  # doctest: +SKIP
    """
    if run_dir:
        return load_run(run_dir)
    overrides = dict(small_run)
    config_file = overrides.pop("config", None)
    return load_run(train(load_config(config_file, overrides)).run_dir)
