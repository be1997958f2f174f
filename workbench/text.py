"""Turning raw text into token ids: cleaning, then head, tail or head+tail truncation, or overlapping windows.

:class:`TextProcessor` is what both training and prediction use, so a saved model encodes new text exactly
as its training data was encoded: the settings that matter (:class:`TextProcessing`) are saved with the
model. Enormous inputs are cut before tokenizing, so a 100 MB "review" costs no more than a long one::

    processor = TextProcessor(model_name="minilm", max_length=256, truncation="head+tail")
    processor.encode(["Great<br />film!"])       # [{"input_ids": [101, 2307, 2143, 999, 102], ...}]

With ``truncation="windows"`` nothing is thrown away: a text becomes ``{"windows": [ids, ids, ...]}``, windows of
``max_length`` tokens (special tokens included) that overlap by ``stride`` tokens, and the model pools the
windows' logits into the text's (:func:`workbench.metrics.pool_windows`). A text that fits one window gets
exactly the ids head truncation gives it, as its only window.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

from workbench.config import DataConfig, ModelConfig
from workbench.errors import DataError

if TYPE_CHECKING:
    import torch

_URL = re.compile(r"(https?://|www\.)\S+", re.IGNORECASE)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b")
_BREAK = re.compile(r"<\s*br\s*/?\s*>|<\s*/?\s*p\s*>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]{1,200}>")
_SPACE = re.compile(r"\s+")
# Characters of text kept per token of max_length before tokenizing: enormous inputs are cut first so a
# 100 MB "review" costs no more than a long one. 20 chars/token is far above any real tokenizer's ratio.
_CHARS_PER_TOKEN = 20
# A windowed text is cut to this many windows' worth of characters first (about 250,000 tokens at 512 a window).
_MOST_WINDOWS = 512
_ENCODE_BLOCK = 10_000  # texts per tokenizer call: keeps its per-text working memory to one block (bench/README.md)
_DEFAULT = DataConfig()  # the keyword defaults below are DataConfig's, defined there once


@dataclass(frozen=True)
class TextProcessing:
    """How a text becomes token ids: the :class:`~workbench.config.DataConfig` fields a model keeps from its
    training data (``model.processing``, saved with it), so that prediction encodes text as training did.
    Each field means what the DataConfig field of that name means, with its default.

    Example:
        >>> TextProcessing.from_config(DataConfig(max_length=256, truncation="head+tail")).max_length
        256
    """

    text_pair_column: str | None = _DEFAULT.text_pair_column  # set: the model reads text pairs
    max_length: int = _DEFAULT.max_length
    truncation: str = _DEFAULT.truncation
    head_fraction: float = _DEFAULT.head_fraction
    stride: int | None = _DEFAULT.stride
    window_pooling: str = _DEFAULT.window_pooling
    clean_html: bool = _DEFAULT.clean_html
    mask_urls: bool = _DEFAULT.mask_urls
    mask_emails: bool = _DEFAULT.mask_emails
    lowercase: bool = _DEFAULT.lowercase

    @property
    def pools_windows_by_attention(self) -> bool:
        """Whether windows are pooled by a learned attention (the model then scores each window)."""
        return self.truncation == "windows" and self.window_pooling == "attention"

    @classmethod
    def from_config(cls, config: DataConfig) -> TextProcessing:
        """The processing a data config encodes its texts with."""
        return cls(**{field.name: getattr(config, field.name) for field in fields(cls)})

    def data_config(self, **options) -> DataConfig:
        """A :class:`DataConfig` that encodes text this way; ``options`` set its other fields (``multi_label=True``)."""
        return DataConfig(**asdict(self), **options)


def check_model_inputs(texts: Sequence, pairs: Sequence | None = None, *, pair_model: bool = False) -> None:
    """Raise a :class:`DataError` naming the first text a model cannot take: not a string, blank, or not valid
    Unicode (a lone surrogate, which JSON can carry); and pairs given to a single-text model or missing for a
    sentence-pair one.
    """
    if pair_model and pairs is None:
        raise DataError("This model reads text pairs: give a second text for each text ('pairs').")
    if not pair_model and pairs is not None:
        raise DataError("This model reads single texts: leave the second texts ('pairs') out.")
    if pairs is not None and len(pairs) != len(texts):
        raise DataError(f"{len(texts)} texts but {len(pairs)} second texts: give one second text per text.")
    for kind, values in (("Text", texts), ("Second text", pairs or [])):
        for i, text in enumerate(values):
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"{kind} #{i} is empty or not a string ({text!r:.80}); give it at least one word.")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise DataError(
                    f"{kind} #{i} is not valid Unicode (it holds a lone surrogate); send UTF-8 text."
                ) from None


def window_items(features: Sequence[dict]) -> tuple[list[dict], list[int]] | None:
    """Windowed texts (``{"windows": [ids, ...]}``) as one item per window and each text's window count, for the
    engines to run and :func:`workbench.metrics.pool_windows` to pool back; None when the texts are not windowed."""
    if not len(features) or "windows" not in features[0]:
        return None
    items = [{"input_ids": window} for feature in features for window in feature["windows"]]
    return items, [len(feature["windows"]) for feature in features]


class TextProcessor:
    """Cleans raw text and tokenizes it with a head, tail or head+tail truncation strategy.

    Args:
        model_name: backbone name, local path or alias whose tokenizer to use (``"minilm"``).
        tokenizer: an already loaded tokenizer (takes precedence over ``model_name``).
        max_length: longest encoded input, special tokens included.
        truncation: ``"head"`` keeps the start, ``"tail"`` the end and ``"head+tail"`` both
            (Sun et al. 2019 found head+tail best for long reviews); ``"windows"`` keeps everything, as
            overlapping windows.
        head_fraction: with head+tail, the share of the budget taken from the start.
        stride, window_pooling: with windows, the tokens a window shares with the one before it, and how the
            windows' logits are pooled (the model does that).
        clean_html, mask_urls, mask_emails, lowercase: cleaning steps applied before tokenizing.

    Example:
        >>> processor = TextProcessor(model_name="minilm")
        >>> processor.clean("Great<br /><br />film!  Visit www.x.com")
        'Great film! Visit www.x.com'
    """

    def __init__(
        self,
        model_name: str | None = ModelConfig.backbone,
        *,
        tokenizer=None,
        max_length: int = _DEFAULT.max_length,
        truncation: str = _DEFAULT.truncation,
        head_fraction: float = _DEFAULT.head_fraction,
        stride: int | None = _DEFAULT.stride,
        window_pooling: str = _DEFAULT.window_pooling,
        clean_html: bool = _DEFAULT.clean_html,
        mask_urls: bool = _DEFAULT.mask_urls,
        mask_emails: bool = _DEFAULT.mask_emails,
        lowercase: bool = _DEFAULT.lowercase,
    ):
        if tokenizer is None and model_name is not None:
            # deferred: an exported model encodes with a tokenizers.Tokenizer and no transformers or torch
            from workbench.backbones import load_tokenizer

            tokenizer = load_tokenizer(model_name)
        self.tokenizer = tokenizer
        self.config = DataConfig(
            max_length=max_length,
            max_tokens=max(8192, max_length),
            truncation=truncation,
            head_fraction=head_fraction,
            stride=stride,
            window_pooling=window_pooling,
            clean_html=clean_html,
            mask_urls=mask_urls,
            mask_emails=mask_emails,
            lowercase=lowercase,
        )

    @classmethod
    def from_config(cls, config: DataConfig, tokenizer) -> TextProcessor:
        processor = cls(None, tokenizer=tokenizer)
        processor.config = config
        return processor

    def settings(self) -> dict:
        """The :class:`TextProcessing` fields of this processor's config, in the config's order (a cache key)."""
        names = {field.name for field in fields(TextProcessing)}
        return {name: value for name, value in asdict(self.config).items() if name in names}

    def clean(self, text: str) -> str:
        """Normalize unicode (NFKC), strip HTML, mask URLs/e-mails if asked, and collapse whitespace."""
        cfg = self.config
        text = unicodedata.normalize("NFKC", str(text))
        if cfg.clean_html:
            text = _TAG.sub(" ", _BREAK.sub(" ", text))
            text = html.unescape(text)
        if cfg.mask_emails:
            text = _EMAIL.sub("[EMAIL]", text)
        if cfg.mask_urls:
            text = _URL.sub("[URL]", text)
        if cfg.lowercase:
            text = text.lower()
        return _SPACE.sub(" ", text).strip()

    @property
    def windowed(self) -> bool:
        """Whether texts become overlapping windows (``truncation="windows"``)."""
        return self.config.truncation == "windows"

    def _cut(self, text: str) -> str:
        keep = self.config.max_length * _CHARS_PER_TOKEN * (_MOST_WINDOWS if self.windowed else 1)
        if len(text) <= keep:
            return text
        if self.config.truncation in ("head", "windows"):
            return text[:keep]
        if self.config.truncation == "tail":
            return text[-keep:]
        return text[:keep] + " " + text[-keep:]

    def _truncate(self, ids: list[int], budget: int) -> list[int]:
        if len(ids) <= budget:
            return ids
        if self.config.truncation == "head":
            return ids[:budget]
        if self.config.truncation == "tail":
            return ids[-budget:]
        head = min(budget - 1, max(1, round(budget * self.config.head_fraction)))
        return ids[:head] + ids[-(budget - head) :]

    def _special_tokens(self) -> tuple[list[int], list[int]]:
        """The ids a tokenizer puts before and after one sequence ([CLS] ... [SEP], <s> ... </s>)."""
        if not hasattr(self, "_specials"):
            plain = self.tokenizer("a", add_special_tokens=False)["input_ids"]
            full = self.tokenizer("a")["input_ids"]
            start = next(i for i in range(len(full)) if full[i : i + len(plain)] == plain)
            self._specials = (full[:start], full[start + len(plain) :])
        return self._specials

    def encode(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> list[dict]:
        """Clean and tokenize texts (and optional second texts) into lists of token ids.

        Returns:
            One dict per text with ``input_ids`` (and ``token_type_ids`` where the model uses them).
        """
        tok = self.tokenizer
        texts = [self._cut(self.clean(t)) for t in texts]
        if pairs is not None and self.windowed:
            raise DataError(
                "data.truncation=windows reads single texts, and text pairs were given: use head, tail or "
                "head+tail truncation for sentence pairs."
            )
        if pairs is not None:
            pairs = [self._cut(self.clean(t)) for t in pairs]
            enc = tok(texts, pairs, truncation="longest_first", max_length=self.config.max_length)
            keys = [k for k in ("input_ids", "token_type_ids") if k in enc]
            return [{k: enc[k][i] for k in keys} for i in range(len(texts))]
        prefix, suffix = self._special_tokens()
        budget = self.config.max_length - len(prefix) - len(suffix)
        types = "token_type_ids" in tok.model_input_names and not self.windowed  # windows: zeros, made when padded
        encoded = []
        for start in range(0, len(texts), _ENCODE_BLOCK):  # the tokenizer's batch output (offsets, tokens, ...) is
            block = tok(  # verbose=False: no warning that a text is longer than the model, which is cut after
                texts[start : start + _ENCODE_BLOCK], add_special_tokens=False, truncation=False, verbose=False
            )  # ~3 KB a text
            for ids in block["input_ids"]:
                if self.windowed:
                    encoded.append({"windows": [prefix + part + suffix for part in self._windows(ids, budget)]})
                    continue
                ids = prefix + self._truncate(ids, budget) + suffix
                encoded.append({"input_ids": ids, "token_type_ids": [0] * len(ids)} if types else {"input_ids": ids})
        return encoded

    def _windows(self, ids: list[int], budget: int) -> list[list[int]]:
        """``ids`` as pieces of ``budget`` tokens, each sharing ``stride`` tokens with the one before it; the
        last piece ends at the text's end (so it may share more)."""
        step = budget - self.config.window_stride
        if step < 1:
            raise DataError(
                f"data.stride={self.config.window_stride} leaves no new tokens in a window of {budget} text tokens "
                f"(data.max_length={self.config.max_length} less special tokens). Lower data.stride."
            )
        if len(ids) <= budget:
            return [ids]
        starts = [*list(range(0, len(ids) - budget, step)), len(ids) - budget]
        return [ids[start : start + budget] for start in starts]

    def process_text(self, text: str | Sequence[str]) -> dict[str, torch.Tensor]:
        """Clean and tokenize one text (or a list) into padded tensors ready for ``model.predict``."""
        texts = [text] if isinstance(text, str) else list(text)
        if any(not str(t).strip() for t in texts):
            raise DataError("process_text got an empty text; give it at least one word.")
        if self.windowed:
            raise DataError(
                "process_text makes one padded batch, one row per text, and windowed text (data.truncation="
                "windows) has several rows per text: call model.predict_proba(texts), which pools the windows."
            )
        return self.tokenizer.pad(self.encode(texts), return_tensors="pt")
