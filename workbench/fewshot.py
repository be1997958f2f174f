"""Few-shot and zero-shot classification with SetFit (``train.method: setfit``).

SetFit (Tunstall et al. 2022, arXiv 2209.11055) trains a sentence encoder contrastively on pairs of the few
labelled examples (same class: similar, different classes: dissimilar), then fits a head on its embeddings. The
``setfit`` library does the training; this module is what it does not provide: the workbench's data (``data.shots``,
cleaning, labels), templated examples for zero-shot (``setfit.zero_shot``, ``data.label_descriptions``), and the
result as an ordinary :class:`~workbench.models.TextClassificationModel` (the trained encoder, the sentence
encoder's pooling and unit-length step, its head as a Linear layer), so a SetFit run's ``best/`` loads, evaluates,
explains, calibrates, exports to ONNX and serves like any other run::

    workbench train --config configs/trec.yaml train.method=setfit data.shots=8
    workbench train --config configs/trec.yaml train.method=setfit setfit.zero_shot=true

A logistic-regression head becomes the Linear layer whose softmax gives its probabilities (a binary one's single
score ``s`` becomes the logits ``(-s/2, s/2)``); a differentiable head's Linear is divided by its temperature.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import transformers

from workbench.backbones import resolve_backbone
from workbench.config import Config, ModelConfig, SetFitConfig
from workbench.data import TextDataModule
from workbench.errors import ConfigError, DataError
from workbench.evaluation import evaluate_model
from workbench.metrics import monitored_metric
from workbench.models import TextClassificationModel
from workbench.runs import RunDir, environment_info
from workbench.text import TextProcessing

log = logging.getLogger(__name__)


def check_setfit(config: Config, dm: TextDataModule) -> None:
    """Refuse, in one line, what a SetFit run cannot do with this data and config (before any training)."""
    if dm.multi_label:
        raise ConfigError(
            "train.method=setfit trains single-label classifiers, and this data is multi-label. "
            "Use train.method=finetune for multi-label data."
        )
    if config.data.text_pair_column:
        raise ConfigError(
            f"train.method=setfit embeds single texts, and data.text_pair_column='{config.data.text_pair_column}' "
            "makes pairs: use train.method=finetune for sentence pairs."
        )
    if config.data.truncation != "head":
        raise ConfigError(
            f"train.method=setfit reads the first data.max_length tokens of a text (the sentence encoder's own "
            f"truncation), not data.truncation={config.data.truncation}: set data.truncation=head."
        )
    if config.model.pooling not in ("mean", "cls"):
        raise ConfigError(
            f"train.method=setfit pools as the sentence encoder does (mean or cls), not "
            f"model.pooling={config.model.pooling}: leave model.pooling at mean."
        )
    if config.run.track:
        raise ConfigError(
            f"run.track={config.run.track} does not follow a SetFit run yet (its training is not transformers' "
            "Trainer): leave run.track empty; the run directory holds its metrics."
        )
    check_label_descriptions(config.data.label_descriptions, dm.label_names)


def check_label_descriptions(descriptions: dict | None, labels: Sequence[str]) -> None:
    """A DataError naming a described label the data lacks."""
    unknown = sorted(set(descriptions or {}) - set(labels))
    if unknown:
        raise DataError(
            f"data.label_descriptions describes label(s) {', '.join(unknown)} that the data lacks "
            f"(its labels: {', '.join(labels)}). Describe only those labels."
        )


def templated_examples(
    labels: Sequence[str], descriptions: dict | None, template: str, per_label: int
) -> tuple[list[str], list[int]]:
    """``per_label`` copies of the template filled with each label's description (or its name), and label ids.

    Example:
        >>> templated_examples(["neg", "pos"], {"pos": "positive"}, "This sentence is {}.", 1)
        (['This sentence is neg.', 'This sentence is positive.'], [0, 1])
    """
    texts, ids = [], []
    for index, label in enumerate(labels):
        texts += [template.format((descriptions or {}).get(label, label))] * per_label
        ids += [index] * per_label
    return texts, ids


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _sentence_encoder(backbone: str, setfit: SetFitConfig, num_labels: int, max_length: int, seed: int):
    """A ``setfit.SetFitModel`` on the backbone's sentence encoder (a plain encoder gets mean pooling)."""
    from setfit import SetFitModel

    differentiable = setfit.head == "differentiable"
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # the differentiable head's initial weights
        model = SetFitModel.from_pretrained(
            resolve_backbone(backbone),
            use_differentiable_head=differentiable,
            head_params={"out_features": num_labels} if differentiable else {},
            device=_device(),
        )
    model.model_body.max_seq_length = max_length
    return model


def fit_setfit_model(
    texts: Sequence[str],
    label_ids: Sequence[int],
    labels: Sequence[str],
    *,
    model_config: ModelConfig,
    setfit: SetFitConfig,
    processing: TextProcessing,
    tokenizer,
    seed: int,
    workdir: str | Path,
) -> tuple[TextClassificationModel, dict]:
    """Train SetFit on cleaned ``texts`` with ``label_ids`` (indices into ``labels``) and return the workbench model
    (see :func:`to_workbench_model`) and what training did (examples, pairs, steps, seconds).

    ``workdir`` takes the sentence-transformers trainer's scratch files and is removed afterwards.
    """
    from datasets import Dataset
    from setfit import Trainer, TrainingArguments

    if not texts:
        raise DataError("SetFit needs training examples: give data.shots or training rows, or setfit.zero_shot=true.")
    transformers.set_seed(seed)
    body = _sentence_encoder(model_config.backbone, setfit, len(labels), processing.max_length, seed)
    args = TrainingArguments(
        output_dir=str(workdir),
        batch_size=(setfit.pair_batch_size, setfit.pair_batch_size),
        num_epochs=(max(setfit.body_epochs, 1), setfit.head_epochs),
        num_iterations=setfit.iterations,
        body_learning_rate=(setfit.body_lr, setfit.body_lr),
        head_learning_rate=setfit.head_lr,
        max_length=processing.max_length,
        seed=seed,
        report_to="none",
        save_strategy="no",
        logging_steps=50,
    )
    trainer = Trainer(model=body, args=args, train_dataset=Dataset.from_dict({"text": texts, "label": label_ids}))
    started = time.perf_counter()
    try:
        if setfit.body_epochs > 0:
            trainer.train()
        else:  # frozen embeddings: the head alone
            trainer.train_classifier(list(texts), list(label_ids))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    seconds = time.perf_counter() - started
    trained = setfit.body_epochs > 0
    steps = int(trainer.st_trainer.state.global_step) if trained else 0
    done = {
        "examples": len(texts),
        "pairs": len(trainer.st_trainer.train_dataset) * setfit.body_epochs if trained else 0,
        "epochs": float(setfit.body_epochs),
        "optimizer_steps": steps,
        "runtime_s": seconds,
    }
    model = to_workbench_model(body, labels, model_config, processing, tokenizer, seed)
    return model, done


def to_workbench_model(
    setfit_model, labels: Sequence[str], model_config: ModelConfig, processing: TextProcessing, tokenizer, seed: int
) -> TextClassificationModel:
    """A :class:`TextClassificationModel` that computes what ``setfit_model`` does: its encoder's weights, its pooling
    (mean or cls) and unit-length step (``model.head_norm=l2`` where the sentence encoder normalises), and its head
    as the last Linear layer. Probabilities agree with ``setfit_model.predict_proba`` to float precision."""
    modules = list(setfit_model.model_body)
    encoder, pooling = modules[0], modules[1]
    mode = pooling.get_pooling_mode_str() if hasattr(pooling, "get_pooling_mode_str") else pooling.pooling_mode
    if mode not in ("mean", "cls"):
        raise ConfigError(
            f"The sentence encoder pools by '{mode}'; the workbench model reproduces mean or cls pooling only."
        )
    normalises = any(type(module).__name__ == "Normalize" for module in modules[2:])
    config = replace(model_config, pooling=mode, head_norm="l2" if normalises else "none", hidden_layers=[])
    model = TextClassificationModel(config, labels=labels, processing=processing, tokenizer=tokenizer, seed=seed)
    missing, _ = model.backbone.load_state_dict(encoder.auto_model.state_dict(), strict=False)
    if missing:
        raise ConfigError(f"The trained sentence encoder lacks weights the backbone needs: {', '.join(missing[:5])}.")
    weight, bias = _head_weights(setfit_model.model_head, len(labels))
    linear = model.head[-1]
    with torch.no_grad():
        linear.weight.copy_(torch.as_tensor(weight, dtype=linear.weight.dtype))
        linear.bias.copy_(torch.as_tensor(bias, dtype=linear.bias.dtype))
    return model.eval()


def _head_weights(head, num_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """The (labels, hidden) weight and (labels,) bias of the Linear layer that gives ``head``'s probabilities."""
    if isinstance(head, torch.nn.Module):  # setfit's SetFitHead: softmax(linear(x) / temperature)
        scale = 1.0 / (head.temperature + head.eps)
        return head.linear.weight.detach().cpu().numpy() * scale, head.linear.bias.detach().cpu().numpy() * scale
    classes = [int(c) for c in head.classes_]
    if classes != list(range(num_labels)):
        raise DataError(
            f"The head saw the classes {classes} but the model has {num_labels}: every class needs a training "
            "example (data.shots gives each one)."
        )
    coef, intercept = np.asarray(head.coef_), np.asarray(head.intercept_)
    if num_labels == 2 and coef.shape[0] == 1:  # binary: p(1) = sigmoid(s) = softmax((-s/2, s/2))[1]
        return np.concatenate([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    return coef, intercept


def zero_shot_model(
    label_descriptions: dict[str, str],
    config: Config | None = None,
    *,
    workdir: str | Path = "setfit-scratch",
) -> TextClassificationModel:
    """A model before the first label: SetFit trained on templated examples of each label alone.

    Args:
        label_descriptions: label -> description (the text put into ``config.setfit.template``), in label order.
        config: the backbone (``model.backbone``), text processing (``data``) and SetFit settings; defaults otherwise.

    Example:
        >>> model = zero_shot_model({"sports": "about sport", "business": "about business"})  # doctest: +SKIP
        >>> model.predict(["The striker scored twice"])  # doctest: +SKIP
    """
    config = config or Config()
    labels = list(label_descriptions)
    if len(labels) < 2:
        raise DataError(f"A zero-shot model needs at least two labels to tell apart; got {labels}.")
    texts, ids = templated_examples(
        labels, label_descriptions, config.setfit.template, config.setfit.templates_per_label or 8
    )
    processing = TextProcessing.from_config(config.data)
    dm = TextDataModule(config=config.data, model_name=config.model.backbone)
    model, _ = fit_setfit_model(
        texts,
        ids,
        labels,
        model_config=config.model,
        setfit=config.setfit,
        processing=processing,
        tokenizer=dm.tokenizer,
        seed=config.train.seed,
        workdir=workdir,
    )
    return model


def fit_setfit(config: Config, dm: TextDataModule) -> tuple[Path, dict, TextClassificationModel]:
    """Everything ``workbench train`` does for ``train.method=setfit``: train on ``dm``'s training split (or on
    templated examples alone, zero-shot), then write an ordinary run directory (config, environment, labels, the
    few-shot sample's rows, ``best/``, metrics on validation and test). Returns (run folder, metrics, model)."""
    check_setfit(config, dm)
    setfit, labels = config.setfit, dm.label_names
    processor = dm.processor
    if setfit.zero_shot:
        texts, ids = [], []
    else:
        texts = [processor.clean(text) for text in dm.train_dataset.texts]
        ids = [int(label) for label in dm.train_dataset.labels]
    extra_texts, extra_ids = templated_examples(
        labels, config.data.label_descriptions, setfit.template, setfit.templates_per_label
    )
    run = RunDir.next_version(config.run.root, config.run.name)
    environment = {**environment_info(config.train.seed), "device": _device(), "precision": "32", "method": "setfit"}
    run.record_start(config, environment, dm.label_map.to_dict(), dm.training_rows)
    log.info("Run directory: %s", run.path)
    model, done = fit_setfit_model(
        texts + extra_texts,
        ids + extra_ids,
        labels,
        model_config=config.model,
        setfit=setfit,
        processing=TextProcessing.from_config(config.data),
        tokenizer=dm.tokenizer,
        seed=config.train.seed,
        workdir=run / "setfit-scratch",
    )
    monitor = monitored_metric(config.train.monitor, multi_label=False)
    validation = evaluate_model(model, dm.val_dataset)
    metrics = {
        "validation": validation,
        "train": {
            **done,
            "method": "setfit",
            "shots": config.data.shots,
            "zero_shot": setfit.zero_shot,
            "templated_examples": len(extra_texts),
            "original_examples": len(texts),
            "samples_per_s": done["pairs"] / done["runtime_s"] if done["pairs"] else None,
            "tokens_per_s": None,
            "padding_ratio": None,
        },
        "best_checkpoint": None,
        "best_metric": validation.get(monitor),
        "monitor": monitor,
        "device": environment["device"],
        "precision": "32",
        "processes": 1,
    }
    if dm.test_dataset is not None:
        metrics["test"] = evaluate_model(model, dm.test_dataset)
    run.record_finish(model, metrics)
    return run.path, metrics, model
