"""Explanations: attention for bertviz, integrated-gradient attributions with captum, pooling weights."""

import numpy as np
import pytest

from workbench import TextClassificationModel
from workbench.errors import DataError, WorkbenchError
from workbench.explain import (
    attention,
    attention_figure,
    attention_view,
    attributions_html,
    pooling_weights,
    token_attributions,
)


@pytest.fixture
def model(tiny_bert):
    return TextClassificationModel(tiny_bert, labels=["neg", "pos"])


def test_attention_for_bertviz(model):
    before = model.backbone.config._attn_implementation
    tokens, layers = attention(model, "a good film")
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and len(layers) == 2
    assert layers[0].shape == (1, 2, len(tokens), len(tokens))
    assert np.allclose(layers[0].sum(-1).numpy(), 1.0, atol=1e-5)  # each row is a distribution
    page = attention_view(model, "a good film", html_action="return").data
    assert "bertviz" in page and "good" in page
    assert len(attention_figure(model, "a good film").axes) == 2
    assert model.backbone.config._attn_implementation == before  # eager attention only while explaining


def test_attributions_sum_to_the_logit_difference(model):
    results = token_attributions(model, ["a good film", "bad"], n_steps=64, internal_batch_size=8)
    assert [r.tokens[1] for r in results] == ["a", "bad"]
    for r in results:
        assert r.scores.shape == (len(r.tokens),) and np.isclose(np.linalg.norm(r.scores), 1.0)
        assert r.delta < 0.05 and r.target in ("neg", "pos")
    chosen = token_attributions(model, "a good film", target="neg")[0]
    assert chosen.target == "neg"
    assert "convergence delta" in attributions_html(chosen) and "good" in attributions_html(chosen)


def test_bad_explanation_requests(model, tiny_bert):
    with pytest.raises(DataError, match="empty text"):
        token_attributions(model, "   ")
    with pytest.raises(DataError, match="empty text"):
        attention(model, "")
    with pytest.raises(WorkbenchError, match="'maybe' is not a class"):
        token_attributions(model, "fine", target="maybe")
    with pytest.raises(WorkbenchError, match="out of range"):
        token_attributions(model, "fine", target=5)
    multi = TextClassificationModel(tiny_bert, labels=["a", "b", "c"], multi_label=True)
    with pytest.raises(WorkbenchError, match="multi-label model needs a target"):
        token_attributions(multi, "fine")
    assert token_attributions(multi, "fine", target="b")[0].target == "b"
    with pytest.raises(WorkbenchError, match="no pooling weights"):
        pooling_weights(model, "fine")
    pooled = TextClassificationModel(tiny_bert, labels=["neg", "pos"], pooling="attention")
    tokens, weights = pooling_weights(pooled, "a good film")
    assert len(tokens) == len(weights) and np.isclose(weights.sum(), 1.0)
