"""Why a model predicts what it does: attention (bertviz), token attributions (captum) and pooling weights.

- :func:`attention` returns the tokens and every layer's attention for one text; :func:`attention_view`
  shows them with bertviz's ``head_view`` / ``model_view`` in a notebook, or writes the same view to a
  standalone HTML page when given a ``path``. Either way the JavaScript libraries bertviz fetches from a CDN
  (require.js, d3, jQuery) are inlined from the npm packages ``make install`` puts in ``.js/``
  (:func:`self_contained`), so the views and the reports holding them work offline;
  :func:`attention_figure` draws one layer's heads as a static heatmap.
- :func:`token_attributions` runs captum's Layer Integrated Gradients on the word embeddings, from a
  baseline of padding between the special tokens, for a chosen target class (default: the predicted
  one; required for multi-label models). ``internal_batch_size`` bounds memory on long texts. Each
  result carries the convergence delta (how far the attributions' sum is from the logit difference).
- :func:`attributions_html` renders results as coloured tokens; :func:`pooling_weights` returns the
  attention-pooling weights of a model trained with ``pooling="attention"``.

Example::

    results = token_attributions(model, ["a gripping, funny film"], n_steps=50)
    HTML(attributions_html(results))
    attention_view(model, "a gripping, funny film")                                   # shown in the notebook
    attention_view(model, "a gripping, funny film", path="attention_head_view.html")  # a standalone page
"""

from __future__ import annotations

import html
import logging
import os
import re
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from workbench.errors import DataError, WorkbenchError
from workbench.metrics import deciding_window, pool_windows

log = logging.getLogger(__name__)


@dataclass
class Attribution:
    text: str
    tokens: list[str]
    scores: np.ndarray  # (tokens,), L2-normalised sum over the embedding dimension
    target: str
    target_proba: float
    delta: float  # |convergence delta| of integrated gradients


def _encode(model, text: str, target: str | int | None = None) -> tuple[dict[str, torch.Tensor], int | None]:
    """One text's model inputs, and the class explained when the text decided it: for a windowed model
    (``data.truncation=windows``), the window that decided ``target`` (default: the text's predicted class, from
    the pooled logits: :func:`workbench.metrics.deciding_window`); None for a model that truncates."""
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"Cannot explain an empty text ({text!r}); give it at least one word.")
    features = model.processor().encode([text])[0]
    decided = None
    if "windows" in features:
        logits, scores = model.window_outputs([features])[0]  # (windows, K), (windows,) or None
        pooled = pool_windows(logits, [len(logits)], model.processing.window_pooling, scores)[0]
        decided = _target_index(model, target, torch.from_numpy(pooled))
        best, _ = deciding_window(logits, decided, scores, multi_label=model.multi_label)
        features = {"input_ids": features["windows"][best]}
    inputs = {
        k: torch.tensor([v], device=model.device) for k, v in features.items() if k in ("input_ids", "token_type_ids")
    }
    return inputs, decided


def _target_index(model, target: str | int | None, logits: torch.Tensor) -> int:
    if target is None:
        if model.multi_label:
            raise WorkbenchError(
                f"This multi-label model needs a target class to explain; choose one of {model.label_names[:20]}."
            )
        return int(logits.argmax())
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        if not 0 <= target < model.num_labels:
            raise WorkbenchError(f"target={target} is out of range: the model has {model.num_labels} classes.")
        return int(target)
    if str(target) not in model.label_names:
        raise WorkbenchError(f"target='{target}' is not a class of this model; choose one of {model.label_names[:20]}.")
    return model.label_names.index(str(target))


@contextmanager
def _eager_attention(model):
    """SDPA kernels return no attention weights; switch the backbone to eager attention for a while."""
    backbone = model.backbone
    previous = getattr(backbone.config, "_attn_implementation", None)
    changed = previous not in (None, "eager")
    if changed:
        backbone.set_attn_implementation("eager")
    try:
        yield
    finally:
        if changed:
            backbone.set_attn_implementation(previous)


@torch.no_grad()
def attention(model, text: str) -> tuple[list[str], tuple[torch.Tensor, ...]]:
    """Tokens and attention of one text: a tuple with one ``(1, heads, tokens, tokens)`` tensor per layer."""
    inputs, _ = _encode(model, text)
    model.eval()
    with _eager_attention(model):
        out = model.backbone(
            input_ids=inputs["input_ids"], attention_mask=torch.ones_like(inputs["input_ids"]), output_attentions=True
        )
    tokens = model.tokenizer.convert_ids_to_tokens(inputs["input_ids"][0].tolist())
    return tokens, tuple(a.detach().cpu() for a in out.attentions)


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>{title}</title></head>
<body>
<h3 style="font-family:sans-serif">{title}</h3>
{view}
</body>
</html>
"""


def attention_view(model, text: str, *, view: str = "head", path: str | Path | None = None) -> Path | None:
    """bertviz's ``head_view`` or ``model_view`` of one text: shown in the notebook, or written to an HTML page.

    Like bertviz's ``html_action``, one call serves both: without ``path`` the view is displayed in the
    notebook (bertviz's ``html_action="view"``); with ``path`` the same view becomes a standalone page that
    opens in a browser. Both carry require.js, d3 and jQuery inline (:func:`self_contained`), so neither needs
    a network.

    Args:
        model: a :class:`workbench.TextClassificationModel`.
        text: the text whose attention is shown.
        view: ``"head"`` (one layer's heads, chosen interactively) or ``"model"`` (every layer and head).
        path: where to write the page (parent folders are created); None shows the view instead.

    Returns:
        The written path, or None when the view was shown.

    Example::

        attention_view(model, "a good film", view="model", path="reports/attention_model_view.html")
    """
    from bertviz import head_view, model_view

    if view not in ("head", "model"):
        raise WorkbenchError(f"view='{view}': choose 'head' or 'model'.")
    tokens, attentions = attention(model, text)
    show = head_view if view == "head" else model_view
    page = self_contained(show(attentions, tokens, html_action="return").data)
    if path is None:
        from IPython.display import HTML, display

        display(HTML(page))
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_PAGE.format(title=html.escape(f"Attention ({view} view): {text}"), view=page), encoding="utf-8")
    return path


# The libraries bertviz's views load from cdnjs, as npm packages (`make install`: npm install --prefix .js ...)
# module name bertviz requires -> (file in node_modules, the global the library sets)
BERTVIZ_SCRIPTS = {"d3": ("d3/dist/d3.min.js", "d3"), "jquery": ("jquery/dist/jquery.min.js", "jQuery")}
REQUIRE_SCRIPT = "requirejs/require.js"
_CDN_SCRIPT = re.compile(r'<script src="https://cdnjs\.cloudflare\.com/[^"]*"></script>')
_CDN_PATHS = re.compile(r"require\.config\(\{\s*paths:\s*\{[^}]*\}\s*,?\s*\}\);", re.S)


def script_folder() -> Path:
    """Where the npm packages of :data:`BERTVIZ_SCRIPTS` are: ``$WORKBENCH_JS``, else ``.js/`` in the repository."""
    root = os.environ.get("WORKBENCH_JS") or Path(__file__).resolve().parent.parent / ".js"
    return Path(root) / "node_modules"


@lru_cache(maxsize=1)
def _inline_libraries() -> str | None:
    folder = script_folder()
    paths = [folder / p for p in (*(file for file, _ in BERTVIZ_SCRIPTS.values()), REQUIRE_SCRIPT)]
    if not all(p.is_file() for p in paths):
        return None
    *libraries, require = (p.read_text(encoding="utf-8") for p in paths)
    # d3 and jQuery run with AMD's define hidden, so they set window.d3 / window.jQuery even where require.js is
    # already on the page (a second view); then they are named for bertviz's requirejs([...]) call.
    hidden = "".join(
        f"<script>(function (define, module, exports) {{\n{code}\n}}).call(window);</script>\n" for code in libraries
    )
    named = (
        "<script>if (!window.workbenchViewLibraries) { window.workbenchViewLibraries = true; "
        + " ".join(
            f'define("{name}", [], function () {{ return window.{symbol}; }});'
            for name, (_, symbol) in BERTVIZ_SCRIPTS.items()
        )
        + " }</script>\n"
    )
    return hidden + f"<script>\n{require}\n</script>\n" + named


def self_contained(view_html: str) -> str:
    """A bertviz view's HTML with its CDN libraries (require.js, d3, jQuery) inlined from the installed npm packages
    instead of fetched, so it renders offline (in a notebook, a report page or a file). Without the packages
    (``make install`` gets them), the view is left to the CDN, with a warning."""
    libraries = _inline_libraries()
    if libraries is None:
        log.warning(
            "bertviz's JavaScript libraries are not in %s (run `make install`); the attention view loads "
            "them from a CDN and needs a network.",
            script_folder(),
        )
        return view_html
    return libraries + _CDN_PATHS.sub("", _CDN_SCRIPT.sub("", view_html))


def attention_figure(model, text: str, layer: int = -1):
    """Every head of one layer as a token-by-token heatmap (a Figure; static, so it works offline)."""
    from matplotlib.figure import Figure

    tokens, attentions = attention(model, text)
    weights = attentions[layer][0].numpy()  # (heads, tokens, tokens)
    heads = weights.shape[0]
    columns = min(heads, 4)
    rows = int(np.ceil(heads / columns))
    size = max(2.5, 0.25 * len(tokens) + 1)
    fig = Figure(figsize=(size * columns, size * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    for h, ax in enumerate(axes):
        if h >= heads:
            ax.axis("off")
            continue
        ax.imshow(weights[h], cmap="viridis", vmin=0, vmax=1)
        ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=7)
        ax.set_yticks(range(len(tokens)), tokens, fontsize=7)
        ax.set_title(f"head {h}", fontsize=9)
    fig.suptitle(f"Attention, layer {layer % len(attentions)}")
    return fig


def token_attributions(
    model, texts: str | Sequence[str], target: str | int | None = None, n_steps: int = 50, internal_batch_size: int = 16
) -> list[Attribution]:
    """Layer Integrated Gradients on the word embeddings, one result per text.

    Args:
        model: a :class:`workbench.TextClassificationModel`.
        texts: one text or a list.
        target: class name or index to explain (default: each text's predicted class; required for
            multi-label models). A windowed model's text is explained on the window that decided that class
            (:meth:`~workbench.models.TextClassificationModel.window_logits`): its tokens and that window's
            probability.
        n_steps: integration steps (50 is captum's default; more lowers the convergence delta).
        internal_batch_size: how many interpolation steps run at once, which bounds memory on long texts.
    """
    from captum.attr import LayerIntegratedGradients

    texts = [texts] if isinstance(texts, str) else list(texts)
    model.eval()
    embeddings = model.backbone.get_input_embeddings()
    tokenizer = model.tokenizer
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    special = set(tokenizer.all_special_ids) - {pad}

    def forward(input_ids, token_type_ids=None):
        mask = torch.ones_like(input_ids)
        return model(input_ids=input_ids, attention_mask=mask, token_type_ids=token_type_ids)["logits"]

    explainer = LayerIntegratedGradients(forward, embeddings)
    results = []
    for text in texts:
        inputs, decided = _encode(model, text, target)
        ids = inputs["input_ids"]
        with torch.no_grad():
            logits = forward(ids, inputs.get("token_type_ids"))[0]
        # a windowed model: the class the text decided (not the window's own top class)
        k = _target_index(model, target, logits) if decided is None else decided
        baseline = torch.where(
            torch.isin(ids, torch.tensor(sorted(special), device=ids.device)), ids, torch.full_like(ids, pad)
        )  # keep [CLS]/[SEP], pad the rest
        extra = (inputs["token_type_ids"],) if "token_type_ids" in inputs else None
        attributions, delta = explainer.attribute(
            ids,
            baselines=baseline,
            target=k,
            additional_forward_args=extra,
            n_steps=n_steps,
            internal_batch_size=internal_batch_size,
            return_convergence_delta=True,
        )
        scores = attributions.sum(-1)[0].detach().cpu().numpy()  # (tokens,)
        norm = np.linalg.norm(scores)
        proba = model.proba_from_logits(logits[None].detach().cpu())[0, k]
        results.append(
            Attribution(
                text,
                tokenizer.convert_ids_to_tokens(ids[0].tolist()),
                scores / norm if norm > 0 else scores,
                model.label_names[k],
                float(proba),
                float(delta.abs().item()),
            )
        )
    return results


def tokens_html(tokens: Sequence[str], scores: Sequence[float]) -> str:
    """Tokens as inline spans, green for positive and red for negative scores (scaled to the largest)."""
    scores = np.asarray(scores, dtype=float)
    top = np.abs(scores).max() or 1.0
    spans = []
    for token, score in zip(tokens, scores, strict=True):
        alpha = min(1.0, abs(score) / top)
        colour = f"rgba(26,127,55,{alpha:.2f})" if score >= 0 else f"rgba(207,34,46,{alpha:.2f})"
        word = token[2:] if token.startswith("##") else f" {token}"
        spans.append(
            f'<span title="{score:+.3f}" style="background:{colour};padding:1px 0;border-radius:3px">'
            f"{html.escape(word)}</span>"
        )
    return "".join(spans).strip()


def attributions_html(
    results: Attribution | Sequence[Attribution],
    *,
    true_labels: Sequence[str] | None = None,
    predicted_labels: Sequence[str] | None = None,
) -> str:
    """Attributions as HTML blocks: the target, its probability, the delta and the coloured tokens of each.

    Args:
        results: one :class:`Attribution` or a list (from :func:`token_attributions`).
        true_labels: the true label of each text, shown above its block (e.g. for misclassified examples).
        predicted_labels: the model's prediction for each text, shown beside its true label.

    Returns:
        One HTML string; ``IPython.display.HTML`` shows it in a notebook.

    Example::

        HTML(attributions_html(wrong, true_labels=mistakes["true"], predicted_labels=mistakes["predicted"]))
    """
    results = [results] if isinstance(results, Attribution) else list(results)
    captions = [[] for _ in results]
    for name, labels in (("true", true_labels), ("predicted", predicted_labels)):
        if labels is None:
            continue
        labels = list(labels)
        if len(labels) != len(results):
            raise WorkbenchError(f"{len(labels)} {name}_labels for {len(results)} attributions: give one per text.")
        for caption, label in zip(captions, labels, strict=True):
            caption.append(f"{name} <b>{html.escape(str(label))}</b>")
    blocks = []
    for result, caption in zip(results, captions, strict=True):
        title = f"<p>{', '.join(caption)}</p>" if caption else ""
        head = (
            f"<div style='font-size:0.8em;color:#57606a'>target <b>{html.escape(result.target)}</b> "
            f"(p={result.target_proba:.3f}) · convergence delta {result.delta:.4f}</div>"
        )
        blocks.append(
            f"{title}<div style='margin:0.4em 0;line-height:1.8'>{head}"
            f"{tokens_html(result.tokens, result.scores)}</div>"
        )
    return "".join(blocks)


@torch.no_grad()
def pooling_weights(model, text: str) -> tuple[list[str], np.ndarray]:
    """The attention-pooling weight of each token (they sum to 1) for a model with ``pooling="attention"``."""
    pooling = model.model_config.pooling
    if pooling != "attention" or model.attention_pool is None:
        raise WorkbenchError(
            f"This model pools with '{pooling}', so it has no pooling weights; train one with model.pooling=attention."
        )
    inputs, _ = _encode(model, text)
    model.eval()
    mask = torch.ones_like(inputs["input_ids"])
    states = model.backbone(input_ids=inputs["input_ids"], attention_mask=mask).last_hidden_state
    weights = model.attention_pool.score(states).squeeze(-1).softmax(-1)[0].cpu().numpy()
    return model.tokenizer.convert_ids_to_tokens(inputs["input_ids"][0].tolist()), weights
