"""Losses: cross-entropy variants, focal losses, class weights, distillation."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from workbench.errors import ConfigError
from workbench.losses import DistillationLoss, FocalLoss, SigmoidFocalLoss, build_loss, class_weights_from_labels

LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0]])
TARGET = torch.tensor([0, 2, 1])


def test_focal_with_gamma_zero_is_cross_entropy():
    assert torch.allclose(FocalLoss(gamma=0)(LOGITS, TARGET), F.cross_entropy(LOGITS, TARGET))


def test_focal_down_weights_easy_examples():
    easy = torch.tensor([[5.0, -5.0]])
    hard = torch.tensor([[0.1, 0.0]])
    y = torch.tensor([0])
    ratio_easy = FocalLoss(2.0)(easy, y) / F.cross_entropy(easy, y)
    ratio_hard = FocalLoss(2.0)(hard, y) / F.cross_entropy(hard, y)
    assert ratio_easy < 1e-3 < ratio_hard


def test_label_smoothing_and_class_weights_reach_cross_entropy():
    loss = build_loss(
        "cross_entropy", multi_label=False, num_labels=3, label_smoothing=0.1, class_weights=[1.0, 2.0, 3.0]
    )
    expected = F.cross_entropy(LOGITS, TARGET, weight=torch.tensor([1.0, 2.0, 3.0]), label_smoothing=0.1)
    assert torch.allclose(loss(LOGITS, TARGET), expected)


def test_balanced_class_weights():
    weights = class_weights_from_labels([0, 0, 0, 1], 3, multi_label=False)
    assert weights[1] == pytest.approx(3 * weights[0]) and weights[2] == 1.0  # an absent class keeps weight 1
    pos = class_weights_from_labels([[1, 0], [1, 0], [1, 1], [0, 0]], 2, multi_label=True)
    assert pos.tolist() == pytest.approx([1 / 3, 3.0])


def test_multi_label_losses():
    target = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    bce = build_loss("bce", multi_label=True, num_labels=3)
    assert torch.allclose(bce(LOGITS, target), F.binary_cross_entropy_with_logits(LOGITS, target))
    focal = build_loss("focal_bce", multi_label=True, num_labels=3, focal_gamma=0.0)
    assert isinstance(focal, SigmoidFocalLoss)
    assert torch.allclose(focal(LOGITS, target), F.binary_cross_entropy_with_logits(LOGITS, target))


def test_mismatched_loss_and_weights_are_errors():
    with pytest.raises(ConfigError, match="does not fit single-label"):
        build_loss("bce", multi_label=False, num_labels=3)
    with pytest.raises(ConfigError, match="2 values but the data has 3 labels"):
        build_loss("cross_entropy", multi_label=False, num_labels=3, class_weights=[1.0, 2.0])


def test_distillation_loss_mixes_soft_and_hard_targets():
    """soft_weight * T^2 * KL(teacher || student at T) + (1 - soft_weight) * hard loss over the labelled share;
    zero soft loss where the student matches the teacher; the hard loss alone without soft targets."""
    torch.manual_seed(0)
    logits, target = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    teacher = torch.randn(6, 3)
    soft = (teacher / 2.0).softmax(-1)
    hard = nn.CrossEntropyLoss()
    loss = DistillationLoss(hard, temperature=2.0, soft_weight=0.7)
    kl = F.kl_div((logits / 2.0).log_softmax(-1), soft, reduction="batchmean")
    assert float(loss(logits, target, soft)) == pytest.approx(float(0.7 * 4 * kl + 0.3 * hard(logits, target)))
    assert float(DistillationLoss(hard, 2.0, 1.0)(teacher, target, soft)) == pytest.approx(0.0, abs=1e-6)
    assert float(loss(logits, target)) == pytest.approx(float(hard(logits, target)))  # validation batches
    mask = torch.tensor([1, 1, 1, 0, 0, 0])  # the last three came unlabelled: the hard loss counts the first half
    expected = 0.7 * 4 * kl + 0.3 * 0.5 * hard(logits[:3], target[:3])
    assert float(loss(logits, target, soft, mask)) == pytest.approx(float(expected))
    multi = DistillationLoss(nn.BCEWithLogitsLoss(), 2.0, 1.0, multi_label=True)
    targets = (teacher / 2.0).sigmoid()
    assert float(multi(logits, target, targets)) == pytest.approx(
        float(4 * F.binary_cross_entropy_with_logits(logits / 2.0, targets))
    )
