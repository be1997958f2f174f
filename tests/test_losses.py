"""Losses: cross-entropy variants, focal losses, class weights."""

import pytest
import torch
import torch.nn.functional as F

from workbench.errors import ConfigError
from workbench.losses import FocalLoss, SigmoidFocalLoss, build_loss, class_weights_from_labels

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
