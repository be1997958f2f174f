"""The text-classification model: any Hugging Face encoder, a pooling layer and a classification head.

``TextClassificationModel`` wraps ``transformers.AutoModel`` (BERT, RoBERTa, DistilBERT, DeBERTa, MPNet,
...). It pools the token states (CLS, mean or learned attention), passes them through dropout,
LayerNorm and one or more Linear layers, and predicts one label or several (multi-label, with one
tunable threshold per class). The model keeps what it was built from: ``model.model_config`` (a
:class:`~workbench.config.ModelConfig`) and ``model.processing`` (a :class:`~workbench.text.TextProcessing`, how
its text is encoded). A saved model is a folder: ``model.safetensors``, ``workbench_model.json`` (labels, the
ModelConfig, thresholds, text processing), ``backbone_config.json`` and the tokenizer files.

    model = TextClassificationModel.from_pretrained("runs/sst2/version_0/best")
    model.predict(["a gripping film", "dull and long"])   # -> ['positive', 'negative']
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from workbench.backbones import backbone_from_config, load_backbone, load_tokenizer, refuse_pickle_weights
from workbench.config import ModelConfig, TrainConfig
from workbench.errors import ConfigError, DataError, ModelLoadError
from workbench.metrics import labels_from_proba, pool_windows, proba_from_logits
from workbench.runs import model_folder
from workbench.sampler import LengthBucketedBatchSampler
from workbench.store import EncodedExamples
from workbench.text import TextProcessing, TextProcessor, check_model_inputs, window_items

MODEL_FILE = "model.safetensors"
DISTILL_PROJECTION = "distill_projection"  # training-only layers (distillation's hidden-state matching): not saved
WINDOW_ATTENTION = "window_attention"  # attention pooling's window scorer, fitted after training (fit_window_attention)
META_FILE = "workbench_model.json"
BACKBONE_CONFIG_FILE = "backbone_config.json"
_NO_TOKEN_TYPES = ("distilbert", "roberta", "mpnet")  # backbones without a token-type embedding
# ModelConfig fields that workbench_model.json files written before the field existed lack: they load with its default
_ADDED_TO_METADATA = ("freeze_embeddings", "multi_label_threshold", "trust_remote_code", "head_norm", "init_from")

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# Faster dropout on the CPU


class CPUFastDropout(nn.Dropout):
    """``nn.Dropout`` whose CPU mask comes from 64-bit random words split into 16-bit draws.

    torch's CPU dropout draws one Bernoulli sample per element from the Mersenne Twister, which on a
    2-core machine costs ~100x the multiply it guards (2.9 ms for a 32x25x384 activation, measured in
    bench/README.md). Four 16-bit draws per 64-bit word cut that to ~0.9 ms with the same semantics:
    each element is dropped with probability p (to 1/65536) and survivors are scaled by 1/(1-p). It uses
    torch's default generator, so seeding and checkpoint resume work as before. On a GPU it is plain
    ``nn.Dropout``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or not x.is_cpu or not x.is_floating_point():
            return super().forward(x)
        n = x.numel()
        words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)
        draws = words.view(torch.int16)[:n].view(x.shape)  # uniform over [-32768, 32767]
        keep = draws >= round(self.p * 65536) - 32768
        return x * keep * (1.0 / (1.0 - self.p))


def use_fast_cpu_dropout(module: nn.Module) -> int:
    """Swap every ``nn.Dropout`` inside ``module`` for :class:`CPUFastDropout`; returns how many."""
    count = 0
    for parent in module.modules():
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                setattr(parent, name, CPUFastDropout(child.p, child.inplace))
                count += 1
    return count


# --------------------------------------------------------------------------------------------------
# Pooling and head


class AttentionPooling(nn.Module):
    """A learned query scores each token; the pooled vector is the softmax-weighted sum of token states."""

    def __init__(self, hidden: int):
        super().__init__()
        self.score = nn.Linear(hidden, 1)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = self.score(states).squeeze(-1)  # (batch, seq)
        scores = scores.masked_fill(mask == 0, torch.finfo(scores.dtype).min)
        weights = scores.softmax(-1).unsqueeze(-1)  # (batch, seq, 1)
        return (weights * states).sum(1)  # (batch, hidden)


def pool(states: torch.Tensor, mask: torch.Tensor, mode: str, attention: nn.Module | None = None) -> torch.Tensor:
    """Token states ``(batch, seq, hidden)`` to one vector per example ``(batch, hidden)``."""
    if mode == "cls":
        return states[:, 0]
    if mode == "mean":
        weights = mask.unsqueeze(-1).to(states.dtype)  # (batch, seq, 1)
        return (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    return attention(states, mask)


class UnitLength(nn.Module):
    """Scales each vector to length 1, as a sentence-transformers ``Normalize`` module does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, p=2.0, dim=-1)


def build_head(
    hidden: int, num_labels: int, dropout: float, hidden_layers: Sequence[int], activation: str, norm: str = "layer"
) -> nn.Sequential:
    """Dropout -> norm (LayerNorm, :class:`UnitLength` or none: ``model.head_norm``) -> [Linear -> activation ->
    Dropout]* -> Linear."""
    act = getattr(F, activation, None)
    if act is None:
        raise ModelLoadError(
            f"model.activation='{activation}' is not a torch.nn.functional function (try gelu, relu, tanh)."
        )
    norms = {"layer": lambda: nn.LayerNorm(hidden), "l2": UnitLength, "none": nn.Identity}
    layers: list[nn.Module] = [nn.Dropout(dropout), norms[norm]()]
    width = hidden
    for size in hidden_layers:
        layers += [nn.Linear(width, size), _Activation(activation), nn.Dropout(dropout)]
        width = size
    layers.append(nn.Linear(width, num_labels))
    return nn.Sequential(*layers)


class _Activation(nn.Module):
    def __init__(self, name: str):
        super().__init__()
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(F, self.name)(x)


# --------------------------------------------------------------------------------------------------
# The model


class TextClassificationModel(nn.Module):
    """An encoder with pooling and a classification head, for single- or multi-label classification.

    Built once from a :class:`~workbench.config.ModelConfig` (kept as ``model_config``; ``config`` is left to
    what Hugging Face's Trainer and trackers expect of it), the label names and the text processing
    (``processing``). Training hands it its data's labels, tokenizer and processing with :meth:`use_data`.

    Args:
        model_name: backbone given as a hub name, a local folder, or the alias ``"minilm"`` (default); or a whole
            :class:`~workbench.config.ModelConfig`.
        num_classes: number of labels. May be left out when ``labels`` is given.
        labels: label names in id order; defaults to ``"0" .. "K-1"`` until training sets them from data.
        multi_label: predict a set of labels with one sigmoid per class.
        processing: how text is cleaned and cut before tokenizing (default: DataConfig's defaults).
        seed: seed of the pooling and head layers' initial weights.
        backbone, tokenizer: an encoder and tokenizer already loaded, instead of loading the named backbone's.
        options: :class:`~workbench.config.ModelConfig` fields, over those of ``model_name``: ``pooling`` (``"cls"``,
            ``"mean"`` or ``"attention"``); ``dropout``, ``hidden_layers``, ``activation`` (the head, see
            :func:`build_head`); ``freeze_embeddings`` (keep the embedding block fixed: faster, same accuracy, see
            bench/README.md); ``multi_label_threshold`` (each class's default decision threshold);
            ``trust_remote_code`` (backbone names allowed to run code shipped with them, off for every other name).

    Example:
        >>> model = TextClassificationModel(model_name="minilm", num_classes=4, dropout=0.1)
        >>> model.predict_proba(["stocks fell sharply"]).shape
        (1, 4)
        >>> model = TextClassificationModel(config.model, labels=dm.label_names)  # doctest: +SKIP
    """

    def __init__(
        self,
        model_name: str | ModelConfig = ModelConfig.backbone,
        num_classes: int | None = None,
        *,
        labels: Sequence[str] | None = None,
        multi_label: bool = False,
        processing: TextProcessing | None = None,
        seed: int = TrainConfig.seed,
        backbone: nn.Module | None = None,
        tokenizer=None,
        **options,
    ):
        super().__init__()
        if labels is not None and len(labels) < (1 if multi_label else 2):
            raise ModelLoadError(
                f"A {'multi' if multi_label else 'single'}-label model needs at least "
                f"{1 if multi_label else 2} labels; got {list(labels)}."
            )
        if labels is None:
            if not num_classes or (num_classes < 2 and not multi_label):
                raise ModelLoadError("TextClassificationModel needs num_classes >= 2 (or labels=[...]).")
            labels = [str(i) for i in range(num_classes)]
        elif num_classes is not None and num_classes != len(labels):
            raise ModelLoadError(f"num_classes={num_classes} disagrees with {len(labels)} labels given.")
        try:  # a copy either way: the model's config is its own
            config = (
                replace(model_name, **options)
                if isinstance(model_name, ModelConfig)
                else ModelConfig(backbone=model_name, **options)
            )
        except ConfigError as exc:  # a bad argument of the model, as a bad num_classes is
            raise ModelLoadError(str(exc)) from None
        self.model_config = config
        self.label_names = [str(label) for label in labels]
        self.multi_label = multi_label
        self.processing = processing or TextProcessing()
        self.thresholds = np.full(len(labels), config.multi_label_threshold, dtype=np.float32)
        self.temperature = 1.0  # logits are divided by it before softmax/sigmoid (workbench.calibration)
        self.backbone = backbone if backbone is not None else load_backbone(config.backbone, config.trust_remote_code)
        self._tokenizer = tokenizer
        hidden = self.backbone.config.hidden_size
        with torch.random.fork_rng():  # the new layers' initial weights follow `seed`, not the global RNG
            torch.manual_seed(seed)
            self.attention_pool = AttentionPooling(hidden) if config.pooling == "attention" else None
            self.head = build_head(
                hidden, len(labels), config.dropout, config.hidden_layers, config.activation, config.head_norm
            )
        self.distill_projection: nn.ModuleList | None = None  # see match_hidden
        self.distill_layers: list[int] = []
        self.window_attention: nn.Linear | None = None  # see fit_window_attention
        self._use_window_attention()
        use_fast_cpu_dropout(self)
        if config.freeze_embeddings:
            # The whole embedding block (word, position and token-type tables and their LayerNorm): then
            # autograd also skips the gradient into the first layer's input. See bench/README.md.
            embeddings = getattr(self.backbone, "embeddings", None) or self.backbone.get_input_embeddings()
            for param in embeddings.parameters():
                param.requires_grad_(False)

    def use_data(
        self, labels: Sequence[str] | None = None, tokenizer=None, processing: TextProcessing | None = None
    ) -> None:
        """Take what the training data decides, so that predictions and the saved model match it: the label names
        (in id order, one per class of the head), the tokenizer and the text processing. What is not given stays.

        Example:
            >>> model.use_data(dm.label_names, dm.tokenizer, TextProcessing.from_config(dm.config))  # doctest: +SKIP
        """
        if labels is not None:
            if len(labels) != self.num_labels:
                raise ConfigError(
                    f"The model has {self.num_labels} classes but {len(labels)} labels were given "
                    f"({', '.join(map(str, labels[:10]))}). Build it with num_classes={len(labels)}."
                )
            self.label_names = [str(label) for label in labels]
        if tokenizer is not None:
            self._tokenizer = tokenizer
        if processing is not None:
            self.processing = processing
            self._use_window_attention()

    def _use_window_attention(self) -> None:
        """Give a model whose processing pools windows by attention its window scorer (``window_attention``,
        zero at first, so that it pools as the mean does until :meth:`fit_window_attention`), and take it from one
        that pools otherwise. The scorer is not trained with the encoder: its weights are frozen."""
        if not self.processing.pools_windows_by_attention:
            self.window_attention = None
        elif self.window_attention is None:
            scorer = nn.Linear(self.backbone.config.hidden_size, 1)
            nn.init.zeros_(scorer.weight)
            nn.init.zeros_(scorer.bias)
            self.window_attention = scorer.requires_grad_(False).to(next(self.backbone.parameters()).device)

    def match_hidden(self, layers: Sequence[int], width: int, seed: int = TrainConfig.seed) -> None:
        """Give the model, for training only, one learned projection per backbone layer in ``layers`` (0 = the
        embeddings) from its width to ``width``: ``forward(..., match_hidden=True)`` then also returns
        ``projected`` ``(batch, len(layers), width)``, each layer's token-averaged states projected, for distillation
        to match with a teacher's (:class:`~workbench.losses.DistillationLoss`). Checkpoints keep the projections
        (a resumed run goes on with them); the saved model does not (:meth:`save_pretrained`)."""
        depth = self.backbone.config.num_hidden_layers
        if any(not 0 <= layer <= depth for layer in layers):
            raise ConfigError(f"Layers {list(layers)} are not all in 0..{depth}, the layers of this backbone.")
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            hidden = self.backbone.config.hidden_size
            self.distill_projection = nn.ModuleList(nn.Linear(hidden, width) for _ in layers).to(self.device)
        self.distill_layers = list(layers)

    # -- forward ------------------------------------------------------------------------------------

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def max_positions(self) -> int | None:
        """The longest input, in tokens, the backbone has position embeddings for (None: no such limit)."""
        config = self.backbone.config
        positions = getattr(config, "max_position_embeddings", None)
        if positions is None or getattr(config, "position_biased_input", True) is False:  # DeBERTa: relative only
            return None
        if config.model_type in ("roberta", "xlm-roberta", "camembert", "mpnet"):  # positions start after padding
            positions -= (config.pad_token_id or 0) + 1
        return int(positions)

    @property
    def input_names(self) -> list[str]:
        """The inputs :meth:`forward` uses: token_type_ids only where the tokenizer makes them and the backbone
        reads them."""
        types = (
            "token_type_ids" in self.tokenizer.model_input_names
            and self.backbone.config.model_type not in _NO_TOKEN_TYPES
        )
        return ["input_ids", "attention_mask"] + (["token_type_ids"] if types else [])

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        match_hidden: bool = False,
    ) -> dict:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        output = {}
        if match_hidden and self.distill_projection is not None:  # distillation: layer means, projected (match_hidden)
            layers = self._encode(inputs, hidden_states=True).hidden_states
            states = layers[-1]
            output["projected"] = torch.stack(
                [
                    project(pool(layers[layer], attention_mask, "mean"))
                    for project, layer in zip(self.distill_projection, self.distill_layers, strict=True)
                ],
                dim=1,
            )  # (batch, len(distill_layers), teacher width)
        else:
            states = self._encode(inputs).last_hidden_state
        pooled = pool(states, attention_mask, self.model_config.pooling, self.attention_pool)  # (batch, hidden)
        logits = self.head(pooled)  # (batch, labels)
        output["logits"] = logits
        if self.window_attention is not None:  # each window's score for attention pooling (fit_window_attention)
            with torch.autocast(pooled.device.type, enabled=False):  # in fp32: the score is exponentiated
                output["window_score"] = self.window_attention(pooled.float()).squeeze(-1)
        if labels is not None:
            # the Trainer computes its configured loss itself; this default serves direct calls
            loss_fn = nn.BCEWithLogitsLoss() if self.multi_label else nn.CrossEntropyLoss()
            output["loss"] = loss_fn(logits, labels.to(logits.dtype) if self.multi_label else labels)
        return output

    def engine_output(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """What an inference engine returns for a padded batch: the logits ``(batch, K)``, and for a model that pools
        windows by attention each window's score as one more column ``(batch, K + 1)``
        (:class:`workbench.runtime.Predictor` splits it off to pool)."""
        output = self(input_ids, attention_mask, token_type_ids)
        if "window_score" in output:
            return torch.cat([output["logits"], output["window_score"][:, None]], dim=-1)
        return output["logits"]

    # -- prediction ---------------------------------------------------------------------------------

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.model_config.backbone, self.model_config.trust_remote_code)
        return self._tokenizer

    def processor(self) -> TextProcessor:
        """The TextProcessor with the cleaning and truncation this model was trained with."""
        return TextProcessor.from_config(self.processing.data_config(), self.tokenizer)

    def _features(self, texts: Sequence[str]) -> list[dict]:
        if self.processing.text_pair_column:
            raise DataError(
                "This model was trained on text pairs; predict() takes single texts. Evaluate it with "
                "TextDataModule.for_model(model).encode_file(...) on a file with both columns."
            )
        check_model_inputs(texts)
        return self.processor().encode(list(texts))

    @torch.no_grad()
    def logits_of(
        self,
        features: Sequence[dict],
        batch_size: int = 64,
        max_tokens: int = 16384,
        lengths: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Logits ``(N, K)`` for encoded examples, in their given order, using length-sorted batches. A windowed
        text (``{"windows": [...]}``, ``data.truncation=windows``) gets its windows' logits pooled
        (``processing.window_pooling``: :func:`workbench.metrics.pool_windows`).

        ``lengths``: each example's token count when the caller knows it (a dataset's ``lengths``), which spares
        reading every example twice.
        """
        windowed = window_items(features)
        if windowed is not None:  # every window, then pooled per text
            logits, scores = self._window_rows(windowed[0], batch_size, max_tokens)
            return torch.from_numpy(pool_windows(logits, windowed[1], self.processing.window_pooling, scores))
        return self._batched(
            features, self.num_labels, lambda padded: self(**padded)["logits"], batch_size, max_tokens, lengths
        )

    @torch.no_grad()
    def _window_rows(
        self, windows: Sequence[dict], batch_size: int = 64, max_tokens: int = 16384
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Each window's logits ``(W, K)`` and, for attention pooling, its score ``(W,)`` (else None)."""
        if self.window_attention is None:
            return self.logits_of(windows, batch_size, max_tokens).numpy(), None
        rows = self._batched(
            windows, self.num_labels + 1, lambda padded: self.engine_output(**padded), batch_size, max_tokens
        ).numpy()
        return rows[:, :-1], rows[:, -1]

    @torch.no_grad()
    def vectors_of(
        self, features: Sequence[dict], batch_size: int = 64, dropout: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each encoded example's pooled vector ``(N, hidden)`` (what the head reads) and its logits ``(N, K)``; a
        windowed text gets the mean of its windows' vectors and its pooled logits. ``dropout=True`` keeps dropout on:
        each call is one Monte-Carlo draw (BALD, :mod:`workbench.active`)."""
        windowed = window_items(features)
        if windowed is not None:
            vectors, logits = self.vectors_of(windowed[0], batch_size, dropout)
            starts = np.cumsum([0, *windowed[1][:-1]])
            means = torch.stack([vectors[s : s + n].mean(0) for s, n in zip(starts, windowed[1], strict=True)])
            scores = None if self.window_attention is None else self._scores(vectors)
            pooled = pool_windows(logits.numpy(), windowed[1], self.processing.window_pooling, scores)
            return means, torch.from_numpy(pooled)
        width = self.backbone.config.hidden_size

        def both(padded: dict) -> torch.Tensor:
            pooled = self._pooled(padded)
            return torch.cat([pooled, self.head(pooled)], dim=-1)

        out = self._batched(features, width + self.num_labels, both, batch_size, train_mode=dropout)
        return out[:, :width], out[:, width:]

    def _encode(self, padded: dict, hidden_states: bool = False):
        """The backbone's output for a padded batch (with every layer's states when ``hidden_states``); token types
        reach the backbone only where it has a token-type embedding."""
        inputs = {"input_ids": padded["input_ids"], "attention_mask": padded["attention_mask"]}
        if padded.get("token_type_ids") is not None and self.backbone.config.model_type not in _NO_TOKEN_TYPES:
            inputs["token_type_ids"] = padded["token_type_ids"]
        if hidden_states:
            inputs["output_hidden_states"] = True
        return self.backbone(**inputs)

    def _pooled(self, padded: dict) -> torch.Tensor:
        """One vector per example ``(batch, hidden)``: the backbone's token states pooled (``model.pooling``)."""
        states = self._encode(padded).last_hidden_state  # (batch, seq, hidden)
        return pool(states, padded["attention_mask"], self.model_config.pooling, self.attention_pool)

    @torch.no_grad()
    def layer_means(self, features: Sequence[dict], layers: Sequence[int], batch_size: int = 64) -> np.ndarray:
        """Each encoded example's token-averaged states at each backbone layer in ``layers`` (0 = the embeddings):
        ``(N, len(layers), hidden)``, float16 (a distillation teacher's, :func:`workbench.distill.teacher_states`)."""
        width = self.backbone.config.hidden_size

        def means(padded: dict) -> torch.Tensor:
            states = self._encode(padded, hidden_states=True).hidden_states
            return torch.cat([pool(states[layer], padded["attention_mask"], "mean") for layer in layers], dim=-1)

        out = self._batched(features, width * len(layers), means, batch_size)
        return out.reshape(len(features), len(layers), width).numpy().astype(np.float16)

    def _batched(
        self,
        features: Sequence[dict],
        width: int,
        run: Callable[[dict], torch.Tensor],
        batch_size: int = 64,
        max_tokens: int = 16384,
        lengths: Sequence[int] | None = None,
        train_mode: bool = False,
    ) -> torch.Tensor:
        """``run`` on length-sorted padded batches of ``features``, its ``(batch, width)`` rows back in order."""
        was_training = self.training
        self.train(train_mode)
        lengths = [len(f["input_ids"]) for f in features] if lengths is None else np.asarray(lengths)
        sampler = LengthBucketedBatchSampler(
            lengths, max(max_tokens, int(np.max(lengths, initial=1))), batch_size, shuffle=False
        )
        out = torch.empty(len(features), width)
        keys = [k for k in ("input_ids", "token_type_ids") if len(features) and k in features[0]]
        for batch in sampler:
            items = [features[i] for i in batch]
            padded = self.tokenizer.pad([{k: item[k] for k in keys} for item in items], return_tensors="pt")
            padded = {k: v.to(self.device) for k, v in padded.items()}
            out[batch] = run(padded).float().cpu()
        self.train(was_training)
        return out

    def window_logits(self, features: Sequence[dict]) -> list[np.ndarray]:
        """Each encoded text's windows' logits ``(windows, K)``, before pooling (``data.truncation=windows``); a
        model that truncates gives each text one row. :func:`workbench.analysis.deciding_windows` says which window
        decided."""
        return [logits for logits, _ in self.window_outputs(features)]

    def window_outputs(self, features: Sequence[dict]) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """Each encoded text's windows' logits ``(windows, K)`` and, for attention pooling, their scores
        ``(windows,)`` (else None), before pooling; a model that truncates gives each text one row."""
        windowed = window_items(features)
        if windowed is None:
            return [(row[None], None) for row in self.logits_of(features).numpy()]
        logits, scores = self._window_rows(windowed[0])
        cuts = np.cumsum(windowed[1])[:-1]
        scores = [None] * len(features) if scores is None else np.split(scores, cuts)
        return list(zip(np.split(logits, cuts), scores, strict=True))

    @torch.no_grad()
    def _scores(self, vectors: torch.Tensor) -> np.ndarray:
        """Window vectors' attention scores ``(W,)`` (:meth:`fit_window_attention`)."""
        scorer = self.window_attention
        return scorer(vectors.to(scorer.weight.device, scorer.weight.dtype)).squeeze(-1).float().cpu().numpy()

    def fit_window_attention(
        self, features: Sequence[dict], max_texts: int = 4000, steps: int = 300, seed: int = TrainConfig.seed
    ) -> dict:
        """Learn attention pooling's window scorer (``data.window_pooling=attention``) on encoded texts whose labels
        are known (the trainer gives it the validation split once training ends), with the encoder and head fixed:
        each window's score is a linear function of its pooled vector, a text's logits are its windows' logits
        weighted by the softmax of their scores, and the scorer minimises the texts' loss (cross-entropy, or binary
        cross-entropy per class for multi-label models), with a little weight decay. The second stage of a
        hierarchical long-document model (segments first, then how to combine them: Pappagari et al. 2019,
        "Hierarchical Transformers for Long Document Classification"), here reduced to the weights of the
        combination.

        Only texts of two or more windows teach anything (one window is weighed 1); at most ``max_texts`` of them,
        a seeded sample, which bounds the cost to one pass of the encoder over their windows. Returns what it did:
        ``texts``, ``windows``, the loss before (mean pooling) and after, and the seconds it took.
        """
        if self.window_attention is None:
            raise ConfigError(
                "fit_window_attention: this model does not pool windows by attention "
                "(data.truncation=windows with data.window_pooling=attention)."
            )
        start = time.perf_counter()
        long = [i for i, feature in enumerate(features) if len(feature.get("windows", ())) > 1]
        if len(long) > max_texts:
            long = sorted(np.random.default_rng(seed).choice(long, max_texts, replace=False).tolist())
        if not long:
            log.warning("Attention pooling has no text of two or more windows to learn from: it stays the mean.")
            return {"texts": 0, "windows": 0, "seconds": 0.0}
        chosen = [features[i] for i in long]
        items, counts = window_items(chosen)
        vectors, logits = self.vectors_of(items)  # (W, hidden), (W, K): each window alone
        text_of = torch.repeat_interleave(torch.arange(len(chosen)), torch.as_tensor(counts))
        labels = torch.as_tensor(np.asarray([f["labels"] for f in chosen]))
        loss_fn = nn.BCEWithLogitsLoss() if self.multi_label else nn.CrossEntropyLoss()
        labels = labels.float() if self.multi_label else labels.long()
        weight = torch.zeros(vectors.shape[1], requires_grad=True)  # zero: the mean, where training left it
        optimizer = torch.optim.Adam([weight], lr=0.01)

        def loss_of(weight: torch.Tensor) -> torch.Tensor:
            scores = vectors @ weight
            top = torch.full((len(chosen),), -torch.inf).scatter_reduce(0, text_of, scores, "amax")
            exp = (scores - top[text_of]).exp()  # a softmax over each text's windows
            total = torch.zeros(len(chosen)).index_add(0, text_of, exp)
            weights = (exp / total[text_of])[:, None]
            return loss_fn(torch.zeros(len(chosen), logits.shape[1]).index_add(0, text_of, logits * weights), labels)

        with torch.enable_grad():
            before = float(loss_of(weight.detach()))
            for _ in range(steps):  # full batch: the vectors are fixed, so a step costs microseconds per window
                optimizer.zero_grad()
                (loss_of(weight) + 1e-3 * weight.square().sum()).backward()
                optimizer.step()
            after = float(loss_of(weight.detach()))
        with torch.no_grad():
            self.window_attention.weight.copy_(weight.detach()[None])
            self.window_attention.bias.zero_()  # one constant for every window of a text: no effect on a softmax
        return {
            "texts": len(chosen),
            "windows": len(items),
            "loss_mean_pooling": before,
            "loss_attention": after,
            "seconds": time.perf_counter() - start,
        }

    def predict_proba_features(self, dataset: EncodedExamples) -> np.ndarray:
        """Probabilities ``(N, K)`` for an encoded dataset, in order."""
        return self._probabilities(self.logits_of(dataset.features, lengths=dataset.lengths))

    def _probabilities(self, logits: torch.Tensor) -> np.ndarray:
        return proba_from_logits(logits.numpy(), self.temperature, multi_label=self.multi_label)

    def proba_from_logits(self, logits: np.ndarray | torch.Tensor) -> np.ndarray:
        """Probabilities ``(N, K)`` from raw logits, with this model's temperature applied."""
        return self._probabilities(torch.as_tensor(np.asarray(logits), dtype=torch.float32))

    def predict_proba(self, inputs: str | Sequence[str] | Mapping[str, torch.Tensor]) -> np.ndarray:
        """Class probabilities: ``(K,)`` for one string, ``(N, K)`` for a list or a tokenized batch."""
        if isinstance(inputs, Mapping):  # a BatchEncoding from TextProcessor.process_text
            self.eval()
            with torch.no_grad():
                batch = {
                    k: v.to(self.device)
                    for k, v in inputs.items()
                    if k in ("input_ids", "attention_mask", "token_type_ids")
                }
                return self._probabilities(self(**batch)["logits"].float().cpu())
        single = isinstance(inputs, str)
        proba = self._probabilities(self.logits_of(self._features([inputs] if single else list(inputs))))
        return proba[0] if single else proba

    def predict(self, inputs: str | Sequence[str] | Mapping[str, torch.Tensor]) -> str | list:
        """Label names: one per text (single-label) or a list per text (multi-label).

        One string in gives one answer out; a list or a tokenized batch gives a list.
        """
        proba = self.predict_proba(inputs)
        answers = self.labels_from_proba(np.atleast_2d(proba))
        return answers[0] if proba.ndim == 1 else answers

    def labels_from_proba(self, proba: np.ndarray) -> list:
        """Label names from probabilities ``(N, K)``: argmax, or every class at or over its threshold (multi-label)."""
        return labels_from_proba(proba, self.label_names, multi_label=self.multi_label, thresholds=self.thresholds)

    # -- saving and loading -------------------------------------------------------------------------

    def metadata(self) -> dict:
        """What ``workbench_model.json`` holds: the labels, the ModelConfig's fields (the backbone as
        ``model_name``), thresholds, temperature and the text processing."""
        config = asdict(self.model_config)
        return {
            "format": "workbench-text-classifier/1",
            "model_name": config.pop("backbone"),
            "labels": self.label_names,
            "multi_label": self.multi_label,
            "thresholds": [float(t) for t in self.thresholds],
            "temperature": float(self.temperature),
            "processing": asdict(self.processing),
            **config,
        }

    def save_pretrained(self, folder: str | Path, training: bool = False) -> Path:
        """Write weights (safetensors), labels, head and processing settings, backbone config and tokenizer.
        ``training``: a checkpoint, which also keeps training-only layers (:meth:`match_hidden`)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {
            k: v.detach().contiguous().cpu()
            for k, v in self.state_dict().items()
            if training or not k.startswith(DISTILL_PROJECTION + ".")
        }
        save_file(state, folder / MODEL_FILE, metadata={"format": "pt"})
        (folder / META_FILE).write_text(json.dumps(self.metadata(), indent=2))
        (folder / BACKBONE_CONFIG_FILE).write_text(self.backbone.config.to_json_string())
        self.tokenizer.save_pretrained(folder)
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu") -> TextClassificationModel:
        """Load a model written by :meth:`save_pretrained`, a run directory or a training checkpoint folder.

        A registered model (``models:/NAME@alias`` or ``models:/NAME/VERSION``) is fetched to a folder first:
        ``from_pretrained(workbench.track.resolve_model_path("models:/trec@champion"))``.

        Raises ModelLoadError naming the file when the folder is incomplete or a file is corrupt.
        """
        folder = Path(folder)
        if folder.is_dir() and not (folder / META_FILE).exists():
            folder = model_folder(folder)  # a run directory: its best model
        if not folder.is_dir():
            raise ModelLoadError(
                f"{folder} is not a saved model folder. Pass a folder written by save_pretrained, "
                "a run directory (runs/<name>/version_N) or checkpoints/best-model.ckpt; a "
                "registered model (models:/NAME@alias) through workbench.track.resolve_model_path."
            )
        if not (folder / MODEL_FILE).exists():
            refuse_pickle_weights(folder, "model")
        for name in (META_FILE, BACKBONE_CONFIG_FILE, MODEL_FILE):
            if not (folder / name).exists():
                raise ModelLoadError(
                    f"{folder} lacks {name}, so it is not a complete saved model. "
                    "Re-save it, or point at another checkpoint of the run."
                )
        try:
            meta = json.loads((folder / META_FILE).read_text())
            backbone = backbone_from_config(json.loads((folder / BACKBONE_CONFIG_FILE).read_text()))
        except (json.JSONDecodeError, ValueError, TypeError, KeyError) as exc:
            raise ModelLoadError(
                f"{folder}: {META_FILE} or {BACKBONE_CONFIG_FILE} is corrupt ({exc}). "
                "Re-save the model or use another checkpoint."
            ) from None
        try:
            state = load_file(str(folder / MODEL_FILE))
        except Exception as exc:  # safetensors raises its own error types for truncated or garbled files
            raise ModelLoadError(
                f"{folder / MODEL_FILE} is corrupt or truncated ({exc}). "
                "Use another checkpoint of the run (e.g. its last/ folder) or retrain."
            ) from None
        tokenizer = load_tokenizer(str(folder))
        try:
            model = cls(
                _config_from_metadata(meta),
                labels=meta["labels"],
                multi_label=meta["multi_label"],
                processing=TextProcessing(**meta.get("processing", {})),
                backbone=backbone,
                tokenizer=tokenizer,
            )
        except (KeyError, TypeError, ConfigError) as exc:
            raise ModelLoadError(
                f"{folder / META_FILE} lacks or garbles the entry {exc}. Re-save the model or use another checkpoint."
            ) from None
        state = {k: v for k, v in state.items() if not k.startswith(DISTILL_PROJECTION + ".")}  # a checkpoint's
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # shape mismatches
            missing, unexpected = [str(exc).splitlines()[-1].strip()], []
        if missing or unexpected:
            raise ModelLoadError(
                f"{folder / MODEL_FILE} does not match the saved architecture "
                f"(missing or mismatched: {missing[:3]}, unexpected: {unexpected[:3]}). "
                "The weights were written by another model; use the folder they were saved with."
            )
        model.thresholds = np.asarray(meta["thresholds"], dtype=np.float32)
        model.temperature = float(meta.get("temperature", 1.0))
        return model.to(device).eval()

    load_from_checkpoint = from_pretrained


def _config_from_metadata(meta: dict) -> ModelConfig:
    """The ModelConfig in a ``workbench_model.json`` (see :meth:`TextClassificationModel.metadata`); raises
    KeyError for a field that shapes the model and is missing."""
    names = [field.name for field in fields(ModelConfig) if field.name != "backbone"]
    return ModelConfig(
        backbone=meta["model_name"],
        **{name: meta[name] for name in names if name in meta or name not in _ADDED_TO_METADATA},
    )
