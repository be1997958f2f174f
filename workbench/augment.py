"""Text augmentation: variants of training texts, for the training split only.

Word operations (EDA's synonym replacement, random insertion, random swap and random deletion, Wei & Zou
2019; AEDA's punctuation insertion, Karimi et al. 2021) are cheap: :class:`Augmenter` draws a fresh variant
of every training example each epoch, from a generator seeded by ``(train.seed, epoch, example, copy)``, so
the same seed gives the same augmented stream in any order, in any process, and after a resume. Model
operations (back-translation through a MarianMT pair, contextual substitution by a masked language model)
cost a forward pass per text: their variants are made once per training set and cached on disk, keyed by
the texts, the operation and its settings. ``workbench augment --config ... --out FILE`` writes what
training would see::

    augmenter = Augmenter(AugmentConfig(ops=["eda"], alpha=0.1), seed=42)
    augmenter.variant("a gripping , well-acted story", op="synonym", rng=example_rng(42, 0, 0, 0))

WordNet (for synonyms) comes from the operating system's package (Debian's ``wordnet-base``, which
``make install`` installs) or from an NLTK data folder, never from a download at run time.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import random
import re
import shutil
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS
from tqdm.auto import tqdm

from workbench.backbones import refuse_pickle_weights
from workbench.config import MODEL_AUGMENT_OPS, AugmentConfig
from workbench.errors import ModelLoadError

log = logging.getLogger(__name__)

WORDNET_ENV = "WORKBENCH_WORDNET"  # a WordNet 3.0 database folder (index.noun, data.noun, ...)
DEBIAN_WORDNET = Path("/usr/share/wordnet")  # apt-get install wordnet-base wordnet-sense-index
AEDA_PUNCTUATION = (".", ";", "?", ":", "!", ",")  # the six marks of AEDA
_AFFIXES = re.compile(r"^(\W*)(.*?)(\W*)$")  # a whitespace token: leading punctuation, word, trailing punctuation
_URL = re.compile(r"(https?://|www\.)\S+|\S+@\S+\.\w+", re.IGNORECASE)
_MASKS = ("[URL]", "[EMAIL]")  # what data.mask_urls / data.mask_emails put in place of URLs and addresses
_WORD = re.compile(r"[a-zA-Z][a-zA-Z'-]*")


def cache_root() -> Path:
    """``$WORKBENCH_CACHE``, else ``~/.cache/workbench``: where WordNet's NLTK layout and model variants are kept."""
    return Path(os.environ.get("WORKBENCH_CACHE") or Path.home() / ".cache" / "workbench")


def example_rng(seed: int, epoch: int, index: int, copy: int) -> np.random.Generator:
    """The generator of one variant: copy ``copy`` of example ``index`` in ``epoch`` of a run seeded ``seed``."""
    return np.random.default_rng([seed, epoch, index, copy])


# --------------------------------------------------------------------------------------------------
# WordNet


@functools.lru_cache(maxsize=1)
def wordnet():
    """NLTK's WordNet reader on the installed WordNet 3.0 database.

    Looked for in NLTK's data path (``corpora/wordnet``), then in ``$WORKBENCH_WORDNET`` or Debian's
    ``/usr/share/wordnet``. Debian's package lacks the ``lexnames`` file NLTK reads, so that folder is seen
    through a copy in an NLTK data folder under :func:`cache_root` plus the ``lexnames`` table (lexnames(5WN))
    shipped with workbench; that folder goes on ``nltk.data.path``, after which ``nltk.corpus.wordnet`` works too.

    Raises:
        ModelLoadError: WordNet is not installed, with the ways to install it.
    """
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    try:
        found = nltk.data.find("corpora/wordnet")
    except LookupError:
        found = None
    if found is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return WordNetCorpusReader(found, None)
    database = Path(os.environ.get(WORDNET_ENV) or DEBIAN_WORDNET)
    if not (database / "data.noun").is_file():
        raise ModelLoadError(
            f"WordNet (for augment.ops synonym/insert/eda) is not installed: no WordNet database in {database} or "
            "in NLTK's data path. Install it with `make install` (or `sudo apt-get install wordnet-base "
            f"wordnet-sense-index`), set ${WORDNET_ENV} to a WordNet 3.0 dict folder, or, online, "
            "`python -m nltk.downloader wordnet`."
        )
    try:
        folder = database if (database / "lexnames").is_file() else _with_lexnames(database)
    except OSError as exc:
        raise ModelLoadError(
            f"WordNet: cannot set up NLTK's copy of {database} under {cache_root()} ({exc}). "
            "Set $WORKBENCH_CACHE to a writable folder."
        ) from None
    if str(folder.parent.parent) not in nltk.data.path:  # NLTK reads only below its data path (nltk.pathsec)
        nltk.data.path.append(str(folder.parent.parent))
    with warnings.catch_warnings():  # "multilingual functions are not available": English is all we use
        warnings.simplefilter("ignore", UserWarning)
        return WordNetCorpusReader(str(folder), None)


def _with_lexnames(database: Path) -> Path:
    """An NLTK data folder (``.../nltk_data/corpora/wordnet``) holding a copy of ``database``'s files plus
    workbench's ``lexnames``, which NLTK's reader needs."""
    folder = cache_root() / "nltk_data" / "corpora" / "wordnet"
    if not (folder / "lexnames").is_file():
        staging = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for path in database.iterdir():  # copies (35 MB): NLTK refuses symbolic and hard links (nltk.pathsec)
            if path.is_file():
                shutil.copy(path, staging / path.name)
        shutil.copy(Path(__file__).with_name("wordnet") / "lexnames", staging / "lexnames")
        try:
            staging.rename(folder)  # atomic: another process building the same folder at once loses quietly
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
    return folder


@functools.lru_cache(maxsize=200_000)
def synonyms(word: str) -> tuple[str, ...]:
    """WordNet synonyms of ``word`` (lowercase) over all its senses, as EDA takes them: letters and spaces only,
    sorted so that a seeded choice among them is the same in every process."""
    names = set()
    for synset in wordnet().synsets(word):
        for lemma in synset.lemmas():
            name = lemma.name().replace("_", " ").replace("-", " ").lower()
            if name != word and re.fullmatch(r"[a-z ]+", name):
                names.add(name)
    return tuple(sorted(names))


# --------------------------------------------------------------------------------------------------
# Word operations: a list of whitespace tokens and a generator in, a new list out
#
# Written here rather than taken from nlpaug: nlpaug's RandomWordAug draws from the global `random` and
# `numpy.random` state (a variant per (seed, epoch, example, copy) would mean reseeding global state inside the
# data loader), swaps only neighbouring words where EDA swaps any two, deletes a count where EDA deletes each
# word with probability alpha, and its default tokenizer splits URLs, prices and contractions apart; its
# SynonymAug needs NLTK's POS tagger data, which no package here ships. AEDA is not in nlpaug.


class Protection:
    """Which tokens an operation must leave unchanged: numbers, URLs and e-mail addresses, and given words."""

    def __init__(self, numbers: bool = True, urls: bool = True, words: Sequence[str] = ()):
        self.numbers, self.urls, self.words = numbers, urls, {w.lower() for w in words}

    @classmethod
    def from_config(cls, config: AugmentConfig) -> Protection:
        return cls(config.protect_numbers, config.protect_urls, config.protect_words)

    def __call__(self, token: str) -> bool:
        return (
            (self.numbers and any(c.isdigit() for c in token))
            or (self.urls and bool(_URL.search(token)))
            or any(mask in token for mask in _MASKS)
            or _AFFIXES.match(token).group(2).lower() in self.words
        )

    def keeps(self, original: str, variant: str) -> bool:
        """Whether ``variant`` still holds every protected word of ``original`` (as a word, punctuation and case
        aside: an uncased model lowercases what it writes)."""
        words = {_AFFIXES.match(t).group(2).lower() for t in variant.split()}
        return all(_AFFIXES.match(t).group(2).lower() in words for t in original.split() if self(t))

    def settings(self) -> list:
        return [self.numbers, self.urls, sorted(self.words)]


DEFAULT_PROTECTION = Protection()  # numbers, URLs and e-mail addresses; never changed, so one object serves every call


def _replaceable(words: list[str], protected: Callable[[str], bool]) -> list[int]:
    """Positions of words that have a WordNet entry worth looking up: letters, not a stop word, not protected."""
    return [
        i
        for i, w in enumerate(words)
        if not protected(w)
        and _WORD.fullmatch(core := _AFFIXES.match(w).group(2))
        and core.lower() not in ENGLISH_STOP_WORDS
    ]


def _matching_case(synonym: str, like: str) -> str:
    return synonym.capitalize() if like[:1].isupper() else synonym


def synonym_replacement(words: list[str], n: int, rng: np.random.Generator, protected=DEFAULT_PROTECTION) -> list[str]:
    """Replace up to ``n`` random words (not stop words, not protected) by a random WordNet synonym, keeping
    their punctuation and capitalisation."""
    words = list(words)
    replaced = 0
    for i in rng.permutation(_replaceable(words, protected)):
        lead, core, trail = _AFFIXES.match(words[i]).groups()
        options = synonyms(core.lower())
        if options:
            words[i] = lead + _matching_case(options[rng.integers(len(options))], core) + trail
            replaced += 1
            if replaced >= n:
                break
    return words


def random_insertion(words: list[str], n: int, rng: np.random.Generator, protected=DEFAULT_PROTECTION) -> list[str]:
    """Insert, ``n`` times, a synonym of a random word (not a stop word, not protected) at a random position."""
    words = list(words)
    candidates = [_AFFIXES.match(words[i]).group(2).lower() for i in _replaceable(words, protected)]
    for _ in range(n):
        for _ in range(10):  # EDA's limit on looking for a word that has synonyms
            if not candidates:
                return words
            options = synonyms(candidates[rng.integers(len(candidates))])
            if options:
                synonym = options[rng.integers(len(options))]
                words.insert(int(rng.integers(len(words) + 1)), synonym)
                candidates.append(synonym)  # EDA draws from the grown text, so an inserted word may be picked
                break
    return words


def random_swap(words: list[str], n: int, rng: np.random.Generator, protected=DEFAULT_PROTECTION) -> list[str]:
    """Swap two random unprotected words, ``n`` times (protected words keep their places)."""
    words = list(words)
    free = [i for i, w in enumerate(words) if not protected(w)]
    if len(free) < 2:
        return words
    for _ in range(n):
        a, b = rng.choice(free, size=2, replace=False)
        words[a], words[b] = words[b], words[a]
    return words


def random_deletion(words: list[str], p: float, rng: np.random.Generator, protected=DEFAULT_PROTECTION) -> list[str]:
    """Delete each unprotected word with probability ``p``; a one-word text is kept, and at least one word stays."""
    if len(words) <= 1:
        return list(words)
    drop = rng.random(len(words)) < p
    kept = [w for w, d in zip(words, drop, strict=True) if not d or protected(w)]
    return kept or [words[rng.integers(len(words))]]


def punctuation_insertion(words: list[str], rng: np.random.Generator) -> list[str]:
    """AEDA: insert between 1 and a third of the word count of punctuation marks at random positions."""
    words = list(words)
    for _ in range(int(rng.integers(1, max(1, len(words) // 3) + 1))):
        words.insert(int(rng.integers(len(words) + 1)), AEDA_PUNCTUATION[rng.integers(len(AEDA_PUNCTUATION))])
    return words


# --------------------------------------------------------------------------------------------------
# Model operations: batched, seeded, cached


@contextlib.contextmanager
def seeded_globals(seed: int):
    """Seed Python's, NumPy's and torch's global generators inside the block, and restore them after it:
    nlpaug's augmenters draw from the global ``random`` and ``numpy.random``, and generation from torch's."""
    import torch

    python, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(python)
            np.random.set_state(numpy_state)


def _model_error(key: str, name: str, exc: Exception) -> ModelLoadError:
    detail = (str(exc).strip().splitlines() or [""])[0][:160]
    return ModelLoadError(
        f"augment.{key}: cannot load '{name}' ({type(exc).__name__}: {detail}). Online it "
        f"downloads from the Hugging Face Hub; offline, fetch it on a connected machine (`hf download {name} "
        f"--local-dir DIR`) and set augment.{key} to that folder."
    )


class BackTranslator:
    """Back-translation through a MarianMT pair (``Helsinki-NLP/opus-mt-*`` or local folders), with transformers.

    nlpaug's ``BackTranslationAug`` decodes greedily (no sampling temperature) and feeds its batches through a
    worker process, so the pair is driven here with ``generate`` directly. Texts are sorted by length
    before batching, so batches carry little padding.
    """

    def __init__(self, models: Sequence[str], temperature: float = 0.8, batch_size: int = 32, device: str = "cpu"):
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        self.pair = []
        for name in models:
            try:
                refuse_pickle_weights(name, "translation model")
                tokenizer = AutoTokenizer.from_pretrained(name)
                model = AutoModelForSeq2SeqLM.from_pretrained(name, use_safetensors=True).to(device).eval()
            except Exception as exc:  # missing, corrupt, mismatched or unsupported: one line naming the key
                raise _model_error("translation_models", name, exc) from None
            self.pair.append((tokenizer, model))
        self.temperature, self.batch_size, self.device = temperature, batch_size, device

    def max_tokens(self, step: int) -> int:
        """The longest input (and output) model ``step`` of the pair handles: its positions, at most 512."""
        tokenizer, model = self.pair[step]
        return min(512, tokenizer.model_max_length, getattr(model.config, "max_position_embeddings", 512) - 1)

    def too_long(self, texts: Sequence[str]) -> list[bool]:
        """Which texts the first model would have to truncate: their variants would lose the rest."""
        tokenizer = self.pair[0][0]
        limit = self.max_tokens(0)
        return [len(ids) > limit for ids in tokenizer(list(texts), truncation=False)["input_ids"]]

    def translate(self, texts: Sequence[str], step: int, copies: int = 1, desc: str = "") -> list[str]:
        """Each text translated by model ``step`` of the pair, ``copies`` times (copy-major: all texts' first copy,
        then all second copies...)."""
        import torch

        tokenizer, model = self.pair[step]
        limit = self.max_tokens(step)
        order = np.argsort([len(t) for t in texts], kind="stable")
        out: list[list[str]] = [[] for _ in texts]
        sampling = self.temperature > 0
        for start in tqdm(range(0, len(texts), self.batch_size), desc=desc, leave=False, disable=len(texts) < 256):
            batch = [texts[i] for i in order[start : start + self.batch_size]]
            encoded = tokenizer(batch, return_tensors="pt", padding=True, truncation=True, max_length=limit).to(
                self.device
            )
            with torch.inference_mode():
                generated = model.generate(
                    input_ids=encoded["input_ids"],
                    attention_mask=encoded["attention_mask"],
                    do_sample=sampling,
                    temperature=self.temperature if sampling else None,
                    num_beams=1 if sampling else max(4, copies),
                    num_return_sequences=copies,
                    max_new_tokens=min(limit, int(encoded["input_ids"].shape[1] * 1.5) + 10),
                )
            decoded = tokenizer.batch_decode(generated, skip_special_tokens=True)
            for j, i in enumerate(order[start : start + self.batch_size]):
                out[i] = decoded[j * copies : (j + 1) * copies]
        return [out[i][c] for c in range(copies) for i in range(len(texts))]

    def __call__(self, texts: Sequence[str], copies: int, seed: int) -> list[list[str]]:
        """``copies`` back-translations of each text: ``[[text 0's copies], [text 1's copies], ...]``. A text longer
        than the models take keeps itself as its variants (a translation would cover only its beginning)."""
        long = self.too_long(texts)
        if any(long):
            log.warning(
                "back_translation: %d of %d texts are longer than %d tokens and keep their originals",
                sum(long),
                len(texts),
                self.max_tokens(0),
            )
        todo = [t for t, skip in zip(texts, long, strict=True) if not skip]
        with seeded_globals(seed):
            pivot = self.translate(todo, 0, copies, desc="translating") if todo else []
            back = self.translate(pivot, 1, 1, desc="translating back") if todo else []
        made, k = [], 0
        for text, skip in zip(texts, long, strict=True):
            made.append([text] * copies if skip else [back[c * len(todo) + k] for c in range(copies)])
            k += not skip
        return made


class ContextualSubstituter:
    """Contextual word substitution by a masked language model: nlpaug's ``ContextualWordEmbsAug`` on transformers'
    fill-mask pipeline (``use_custom_api=False``: its own BERT wrapper calls tokenizer internals that transformers 5
    removed)."""

    MODEL_TYPES = ("bert", "distilbert", "roberta", "bart")  # what nlpaug's fill-mask path handles

    def __init__(self, model: str, alpha: float, protected: Protection, batch_size: int = 32, device: str = "cpu"):
        import nlpaug.augmenter.word as naw
        from transformers import AutoConfig

        words = sorted(protected.words)
        patterns = [r"\S*\d\S*"] * protected.numbers + [_URL.pattern] * protected.urls + [r"\S*\[(?:URL|EMAIL)\]\S*"]
        try:
            refuse_pickle_weights(model, "masked language model")  # nlpaug loads the weights itself
            kind = AutoConfig.from_pretrained(model).model_type
        except Exception as exc:
            raise _model_error("fill_mask_model", model, exc) from None
        if kind not in self.MODEL_TYPES:
            raise ModelLoadError(
                f"augment.fill_mask_model: '{model}' is a {kind} model; contextual substitution "
                f"(nlpaug) supports {', '.join(self.MODEL_TYPES)} masked language models, e.g. "
                "bert-base-uncased, distilroberta-base."
            )
        try:
            # model_type from the checkpoint's config (nlpaug guesses it from the folder name otherwise);
            # force_reload: nlpaug caches models by folder base name, which two folders can share
            self.augmenter = naw.ContextualWordEmbsAug(
                model_path=model,
                model_type=kind,
                action="substitute",
                aug_p=max(alpha, 1e-6),
                aug_max=None,
                use_custom_api=False,
                device=device,
                batch_size=batch_size,
                force_reload=True,
                stopwords=words or None,
                stopwords_regex="|".join(f"(?:{p})" for p in patterns) or None,
            )
        except Exception as exc:
            raise _model_error("fill_mask_model", model, exc) from None
        self.batch_size = batch_size

    def __call__(self, texts: Sequence[str], copies: int, seed: int) -> list[list[str]]:
        out: list[list[str]] = [[] for _ in texts]
        for copy in range(copies):
            with seeded_globals(seed + copy):
                for start in tqdm(
                    range(0, len(texts), self.batch_size),
                    desc=f"substituting (copy {copy + 1})",
                    leave=False,
                    disable=len(texts) < 256,
                ):
                    batch = list(texts[start : start + self.batch_size])
                    for i, variant in enumerate(self.augmenter.augment(batch)):
                        out[start + i].append(variant)
        return out


# --------------------------------------------------------------------------------------------------
# The augmenter a data module uses


def _fingerprint(model: str) -> str:
    """A model's name, plus the sizes and times of its files when it is a local folder (so replaced weights
    are not served from the cache)."""
    folder = Path(model)
    if not folder.is_dir():
        return model
    files = sorted((p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in folder.iterdir() if p.is_file())
    return f"{model}@{hashlib.sha256(json.dumps(files).encode()).hexdigest()[:12]}"


class Augmenter:
    """Variants of training texts by the operations of an :class:`~workbench.config.AugmentConfig`.

    Args:
        config: the ``augment`` section.
        seed: the run's ``train.seed``; with the epoch, the example and the copy it seeds each variant.
        device: where the model operations run.

    Example:
        >>> augmenter = Augmenter(AugmentConfig(ops=["swap"], alpha=0.2), seed=0)
        >>> op, text = augmenter.variant("the quick brown fox jumps", index=0, copy=0, epoch=0)
    """

    def __init__(self, config: AugmentConfig, seed: int = 42, device: str = "cpu"):
        self.config, self.seed, self.device = config, seed, device
        self.operations = config.operations()
        self.protected = Protection.from_config(config)
        if {"synonym", "insert"} & set(self.operations):
            wordnet()  # a missing WordNet is an error now, not in the middle of the first epoch

    @property
    def model_operations(self) -> list[str]:
        return [op for op in self.operations if op in MODEL_AUGMENT_OPS]

    def word_variant(self, text: str, op: str, rng: np.random.Generator) -> str:
        """One word operation applied to ``text``."""
        words = text.split()
        if not words:
            return text
        n = max(1, int(self.config.alpha * len(words)))  # EDA: n = alpha x words, at least one (even at alpha 0;
        # deletion draws each word with probability alpha, so it alone leaves texts whole at 0)
        if op == "synonym":
            words = synonym_replacement(words, n, rng, self.protected)
        elif op == "insert":
            words = random_insertion(words, n, rng, self.protected)
        elif op == "swap":
            words = random_swap(words, n, rng, self.protected)
        elif op == "delete":
            words = random_deletion(words, self.config.alpha, rng, self.protected)
        elif op == "aeda":
            words = punctuation_insertion(words, rng)
        else:
            raise ValueError(f"{op} is not a word operation")
        return " ".join(words)

    def variant(
        self, text: str, index: int, copy: int, epoch: int, model_variants: dict[str, list[list[str]]] | None = None
    ) -> tuple[str, str]:
        """``(operation, variant)`` for copy ``copy`` of example ``index`` in ``epoch``; a model operation's
        variant is taken from ``model_variants`` (see :meth:`model_variants`)."""
        rng = example_rng(self.seed, epoch, index, copy)
        op = (
            self.operations[int(rng.integers(len(self.operations)))] if len(self.operations) > 1 else self.operations[0]
        )
        if op in MODEL_AUGMENT_OPS:
            return op, model_variants[op][index][copy]
        return op, self.word_variant(text, op, rng)

    def epoch_variants(
        self, texts: Sequence[str], epoch: int, model_variants: dict[str, list[list[str]]] | None = None
    ) -> list[tuple[str, str]]:
        """Every example's ``variants`` copies for one epoch, copy-major: ``[(op, text)]`` of length
        ``variants x len(texts)``, copy 0 of every example first."""
        return [
            self.variant(text, i, copy, epoch, model_variants)
            for copy in range(self.config.variants)
            for i, text in enumerate(texts)
        ]

    def model_variants(self, texts: Sequence[str], progress: bool = True) -> dict[str, list[list[str]]]:
        """The model operations' ``variants`` copies of each text, from the cache or made now (and cached).

        A variant that lost a protected token of its original (a translated number, say) is replaced by the
        original.
        """
        out = {}
        for op in self.model_operations:
            settings = self._settings(op)
            key = hashlib.sha256(
                json.dumps(
                    {
                        "op": op,
                        "settings": settings,
                        "seed": self.seed,
                        "variants": self.config.variants,
                        "texts": list(texts),
                    }
                ).encode()
            )
            path = Path(self.config.cache_dir or cache_root() / "augment") / f"{op}-{key.hexdigest()[:20]}.json"
            if path.is_file():
                log.info("augment: %s variants of %d texts from the cache %s", op, len(texts), path)
                out[op] = json.loads(path.read_text())["variants"]
                continue
            log.info(
                "augment: making %d %s variant(s) of %d texts (cached in %s)",
                self.config.variants,
                op,
                len(texts),
                path,
            )
            made = self._model(op)(list(texts), self.config.variants, self.seed)
            kept = [
                [v if v.strip() and self.protected.keeps(text, v) else text for v in copies]
                for text, copies in zip(texts, made, strict=True)
            ]
            path.parent.mkdir(parents=True, exist_ok=True)
            staging = path.with_name(f"{path.name}.tmp{os.getpid()}")
            try:
                staging.write_text(json.dumps({"op": op, "settings": settings, "variants": kept}))
                os.replace(staging, path)
            finally:
                staging.unlink(missing_ok=True)
            out[op] = kept
        return out

    def _settings(self, op: str) -> dict:
        """Everything that changes a model operation's output: the cache key (with the texts, seed and count).
        The batch size and device are in it because sampling depends on which texts share a batch and where."""
        cfg = self.config
        common = {"protect": self.protected.settings(), "batch_size": cfg.model_batch_size, "device": self.device}
        if op == "back_translation":
            return {
                "models": [_fingerprint(m) for m in cfg.translation_models],
                "temperature": cfg.translation_temperature,
                **common,
            }
        return {"model": _fingerprint(cfg.fill_mask_model), "alpha": cfg.alpha, **common}

    def _model(self, op: str):
        cfg = self.config
        if op == "back_translation":
            return BackTranslator(
                cfg.translation_models, cfg.translation_temperature, cfg.model_batch_size, self.device
            )
        return ContextualSubstituter(cfg.fill_mask_model, cfg.alpha, self.protected, cfg.model_batch_size, self.device)
