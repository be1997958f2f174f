"""Loss functions for single-label and multi-label classification.

``build_loss`` picks one from the train config: cross-entropy (with label smoothing and class
weights), softmax focal loss, BCE-with-logits for multi-label (with per-class positive weights) and
its sigmoid focal variant (Lin et al. 2017).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight
from torch import nn

from workbench.config import MULTI_LABEL_LOSSES, SINGLE_LABEL_LOSSES
from workbench.errors import ConfigError


class FocalLoss(nn.Module):
    """Softmax focal loss: cross-entropy scaled by ``(1 - p_true) ** gamma`` to focus on hard examples."""

    def __init__(self, gamma: float = 2.0, weight: torch.Tensor | None = None, label_smoothing: float = 0.0):
        super().__init__()
        self.gamma, self.label_smoothing = gamma, label_smoothing
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # logits (batch, K), target (batch,) class ids
        ce = F.cross_entropy(logits, target, weight=self.weight, reduction="none", label_smoothing=self.label_smoothing)
        p_true = logits.softmax(-1).gather(1, target[:, None]).squeeze(1)
        return ((1 - p_true) ** self.gamma * ce).mean()


class SigmoidFocalLoss(nn.Module):
    """Per-class sigmoid focal loss for multi-label targets ``(batch, K)`` of 0/1."""

    def __init__(self, gamma: float = 2.0, pos_weight: torch.Tensor | None = None):
        super().__init__()
        self.gamma = gamma
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = F.binary_cross_entropy_with_logits(logits, target, pos_weight=self.pos_weight, reduction="none")
        p = logits.sigmoid()
        p_true = p * target + (1 - p) * (1 - target)
        return ((1 - p_true) ** self.gamma * ce).mean()


def class_weights_from_labels(labels: Sequence, num_labels: int, multi_label: bool) -> torch.Tensor:
    """'Balanced' weights: inverse class frequency (single-label) or negatives/positives per class (multi-label)."""
    if multi_label:
        matrix = np.asarray(labels, dtype=np.float64)  # (N, K) multi-hot
        positives = matrix.sum(0).clip(min=1.0)
        return torch.tensor((len(matrix) - positives) / positives, dtype=torch.float32)
    ids = np.asarray(labels)
    present = np.unique(ids)
    weights = np.ones(num_labels)
    weights[present] = compute_class_weight("balanced", classes=present, y=ids)
    return torch.tensor(weights, dtype=torch.float32)


def build_loss(
    name: str,
    *,
    multi_label: bool,
    num_labels: int,
    label_smoothing: float = 0.0,
    focal_gamma: float = 2.0,
    class_weights: torch.Tensor | Sequence[float] | None = None,
) -> nn.Module:
    """The loss module named by ``train.loss``.

    Args:
        name: ``cross_entropy`` or ``focal`` (single-label); ``bce`` or ``focal_bce`` (multi-label).
            ``cross_entropy`` with a multi-label model means ``bce``.
        class_weights: one weight per class, shape ``(K,)`` (positive weights for multi-label).

    Example:
        >>> build_loss("focal", multi_label=False, num_labels=3)
        FocalLoss()
    """
    weight = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
    if weight is not None and weight.shape != (num_labels,):
        raise ConfigError(f"train.class_weights has {weight.numel()} values but the data has {num_labels} labels.")
    if multi_label:
        name = dict(zip(SINGLE_LABEL_LOSSES, MULTI_LABEL_LOSSES, strict=True)).get(
            name, name
        )  # cross_entropy -> bce, ...
        if name == "bce":
            return nn.BCEWithLogitsLoss(pos_weight=weight)
        if name == "focal_bce":
            return SigmoidFocalLoss(focal_gamma, weight)
    else:
        if name == "cross_entropy":
            return nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
        if name == "focal":
            return FocalLoss(focal_gamma, weight, label_smoothing)
    kind, fitting = ("multi-label", MULTI_LABEL_LOSSES) if multi_label else ("single-label", SINGLE_LABEL_LOSSES)
    raise ConfigError(f"train.loss='{name}' does not fit {kind} data: use {' or '.join(fitting)}.")
