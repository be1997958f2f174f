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


# What a distillation transfer set's examples carry beside the label (workbench.distill), passed to DistillationLoss
DISTILL_FEATURES = ("soft_targets", "hard_mask", "teacher_index")


class DistillationLoss(nn.Module):
    """Knowledge distillation (Hinton et al. 2015): the student matches a teacher's soft targets at temperature T,
    mixed with the ordinary loss on the hard labels, and optionally the teacher's hidden states.

    ``loss = soft_weight * T^2 * soft + (1 - soft_weight) * hard + hidden_weight * hidden``, where ``soft`` is the
    KL divergence from the teacher's softmax at T to the student's (single-label), or the binary cross-entropy of the
    student's sigmoid at T against the teacher's (multi-label), averaged over the batch; ``hard`` is ``hard_loss``
    over the examples that have a label (``hard_mask`` 1; a text the teacher alone labelled has 0), scaled by their
    share of the batch. The T^2 keeps the soft gradients' size independent of T. ``hidden`` (with
    ``teacher_hidden``, the teacher's token-averaged states at chosen layers ``(N, layers, width)``, and the
    student's ``projected`` ones for the batch's rows ``teacher_index``) is the squared distance between the two
    after scaling each to unit length, averaged over layers and examples (Patient KD, Sun et al. 2019): 0 when they
    point the same way, 4 at most. Without ``soft_targets`` (validation batches) it is ``hard_loss``.

    Example:
        >>> loss = DistillationLoss(nn.CrossEntropyLoss(), temperature=2.0, soft_weight=0.5)
        >>> float(loss(torch.zeros(1, 2), torch.tensor([0]), torch.tensor([[0.5, 0.5]])))  # doctest: +ELLIPSIS
        0.34...
    """

    def __init__(
        self,
        hard_loss: nn.Module,
        temperature: float,
        soft_weight: float,
        multi_label: bool = False,
        hidden_weight: float = 0.0,
        teacher_hidden: torch.Tensor | None = None,
    ):
        super().__init__()
        self.hard_loss, self.temperature, self.soft_weight, self.multi_label = (
            hard_loss,
            temperature,
            soft_weight,
            multi_label,
        )
        self.hidden_weight, self.teacher_hidden = hidden_weight, teacher_hidden  # on the CPU: rows move per batch

    @property
    def matches_hidden(self) -> bool:
        """Whether the student's hidden states are matched (the trainer then asks the model for them)."""
        return self.teacher_hidden is not None and self.hidden_weight > 0

    def soft(self, logits: torch.Tensor, soft_targets: torch.Tensor) -> torch.Tensor:
        """The soft-target loss alone (before the T^2 scale): logits and targets ``(batch, K)``."""
        scaled = logits.float() / self.temperature
        if self.multi_label:
            return F.binary_cross_entropy_with_logits(scaled, soft_targets.float())
        return F.kl_div(scaled.log_softmax(-1), soft_targets.float(), reduction="batchmean")

    def hidden(self, projected: torch.Tensor, teacher_index: torch.Tensor) -> torch.Tensor:
        """The hidden-state loss alone: the student's ``projected`` layer means ``(batch, layers, width)`` against the
        teacher's rows ``teacher_index``."""
        teacher = self.teacher_hidden[teacher_index.cpu()].to(projected.device, torch.float32)
        distance = (F.normalize(projected.float(), dim=-1) - F.normalize(teacher, dim=-1)).pow(2).sum(-1)
        return distance.mean()

    def forward(
        self,
        logits: torch.Tensor,
        target: torch.Tensor,
        soft_targets: torch.Tensor | None = None,
        hard_mask: torch.Tensor | None = None,
        teacher_index: torch.Tensor | None = None,
        projected: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if soft_targets is None:
            return self.hard_loss(logits, target)
        loss = self.soft_weight * self.temperature**2 * self.soft(logits, soft_targets)
        if self.soft_weight < 1.0:
            keep = (
                torch.ones(len(logits), dtype=torch.bool, device=logits.device) if hard_mask is None else hard_mask > 0
            )
            if keep.any():
                share = keep.float().mean()
                loss = loss + (1.0 - self.soft_weight) * share * self.hard_loss(logits[keep], target[keep])
        if projected is not None and teacher_index is not None and self.matches_hidden:
            loss = loss + self.hidden_weight * self.hidden(projected, teacher_index)
        return loss
