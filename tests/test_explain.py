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
    assert len(attention_figure(model, "a good film").axes) == 2
    assert model.backbone.config._attn_implementation == before  # eager attention only while explaining


@pytest.mark.parametrize("view", ["head", "model"])
def test_attention_view_writes_a_standalone_page(model, tmp_path, view):
    path = attention_view(model, "a good film", view=view, path=tmp_path / "pages" / f"{view}.html")
    assert path == tmp_path / "pages" / f"{view}.html"
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert '"good"' in page  # the tokens are in bertviz's data
    assert "cdnjs" not in page and "requirejs" in page and "d3" in page  # its libraries inline: works offline
    assert "bertviz" in page and f"Attention ({view} view): a good film" in page


def test_attention_view_shows_in_the_notebook_without_a_path(model, monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", shown.append)
    assert attention_view(model, "a good film") is None
    assert len(shown) == 1 and "bertviz" in shown[0].data and '"good"' in shown[0].data  # one self-contained HTML
    assert "cdnjs" not in shown[0].data
    with pytest.raises(WorkbenchError, match="choose 'head' or 'model'"):
        attention_view(model, "a good film", view="neuron")


def test_attributions_sum_to_the_logit_difference(model):
    results = token_attributions(model, ["a good film", "bad"], n_steps=64, internal_batch_size=8)
    assert [r.tokens[1] for r in results] == ["a", "bad"]
    for r in results:
        assert r.scores.shape == (len(r.tokens),) and np.isclose(np.linalg.norm(r.scores), 1.0)
        assert r.delta < 0.05 and r.target in ("neg", "pos")
    chosen = token_attributions(model, "a good film", target="neg")[0]
    assert chosen.target == "neg"
    assert "convergence delta" in attributions_html(chosen) and "good" in attributions_html(chosen)
    page = attributions_html(results, true_labels=["pos", "neg & co"], predicted_labels=["neg", "pos"])
    assert page.count("convergence delta") == 2 and page.index("> a<") < page.index("> bad<")
    assert "<p>true <b>pos</b>, predicted <b>neg</b></p>" in page and "neg &amp; co" in page  # escaped
    with pytest.raises(WorkbenchError, match="1 true_labels for 2 attributions"):
        attributions_html(results, true_labels=["pos"])


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


@pytest.mark.parametrize("pooling", ["max", "attention"])
def test_a_windowed_model_is_explained_on_the_window_that_decided(tiny_bert, tmp_path, pooling):
    from conftest import long_text_files

    from workbench import TextDataModule, Trainer
    from workbench.analysis import deciding_windows

    files = long_text_files(tmp_path)
    data = {"max_length": 16, "truncation": "windows", "stride": 4, "window_pooling": pooling, "max_windows": 0}
    dm = TextDataModule(str(files["train"]), str(files["val"]), model_name=tiny_bert, batch_size=8, **data)
    model = TextClassificationModel(tiny_bert, num_classes=2, freeze_embeddings=False)
    Trainer(max_epochs=6, lr=3e-3, checkpoint_dir=None).fit(model, dm)
    texts = list(dm.val_dataset.texts)
    table = deciding_windows(model, texts)
    assert (table["windows"] > 2).all() and (table["deciding_window"] == table["windows"] - 1).all()  # the last
    assert (
        table["window_text"].str.contains("great|awful").all() and (table["window_share"] > 1 / table["windows"]).all()
    )  # with attention pooling: the learned weights favour the window that holds the label word
    wrong = deciding_windows(model, texts[:2], classes=["neg", "pos"])  # asked about a class the text is not
    assert len(wrong) == 2 and (wrong["window_share"] <= 1).all()
    (result,) = token_attributions(model, texts[0], n_steps=8)
    assert result.target == model.predict(texts[0]) and len(result.tokens) <= 16
    assert {"great", "awful"} & set(result.tokens)  # the deciding window's tokens, not the head's
    top = result.tokens[int(np.argmax(np.abs(result.scores)))]
    assert top in {"great", "awful", "fine", "poor"}  # the label words carry the attribution
    tokens, _ = attention(model, texts[0])
    assert tokens == result.tokens
    with pytest.raises(WorkbenchError, match="'maybe' is not a class"):
        deciding_windows(model, texts[:1], classes=["maybe"])
