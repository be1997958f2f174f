"""Active learning: which unlabelled texts to label next (issue 24; this module holds the query strategies).

A trained :class:`~workbench.models.TextClassificationModel` (fine-tuned or SetFit) scores an encoded pool, and a
query strategy picks the ``n`` texts most worth labelling. The strategies come from ``small-text`` (installed
without its ``transformers`` extra, whose torchtext pin needs an old torch) through :class:`ModelClassifier`, which
gives small-text's classifier protocol (``predict_proba``, with Monte-Carlo dropout draws for BALD, and ``embed``)
on our model. Two are written here, and why:

- ``cal`` (contrastive active learning, Margatina et al. 2021): small-text's version looks for neighbours among all
  texts, labelled or not, where the method compares a candidate with its *labelled* neighbours.
- small-text's BADGE is not offered: its k-means++ seeding draws from an unseeded ``RandomState()``, so a seed
  could not repeat a query, and its gradient embedding scales whole rows where the method scales the predicted
  class's entry by ``1 - p``.

Every query is repeatable: numpy's and torch's random state are seeded for it (and restored after).

Example:
    >>> picked = query(model, pool_features, labelled=[0, 5], labels=[1, 0], strategy="breaking_ties", n=20)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from workbench.config import QUERY_STRATEGIES
from workbench.errors import ConfigError
from workbench.models import TextClassificationModel


class Pool:
    """An encoded pool as small-text's strategies index it: ``pool[positions]`` is a view, ``len(pool)`` its size."""

    def __init__(self, features: Sequence[dict], positions: np.ndarray | None = None):
        self.features = features
        self.positions = np.arange(len(features)) if positions is None else np.asarray(positions, dtype=int)

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, positions) -> Pool:
        return Pool(self.features, self.positions[np.asarray(positions, dtype=int)])

    @property
    def items(self) -> list[dict]:
        return [self.features[i] for i in self.positions]


class ModelClassifier:
    """small-text's classifier protocol on a trained model (no ``fit``: the workbench trains it)."""

    def __init__(self, model: TextClassificationModel, batch_size: int = 64):
        self.model, self.batch_size = model, batch_size

    def predict_proba(self, pool: Pool, dropout_sampling: int = 1) -> np.ndarray:
        """``(N, K)`` probabilities; with ``dropout_sampling`` > 1, ``(N, draws, K)``, dropout on in every draw."""
        if dropout_sampling <= 1:
            return self.model.proba_from_logits(self.model.logits_of(pool.items, self.batch_size))
        draws = [
            self.model.proba_from_logits(self.model.vectors_of(pool.items, self.batch_size, dropout=True)[1])
            for _ in range(dropout_sampling)
        ]
        return np.stack(draws, axis=1)

    def embed(self, pool: Pool, return_proba: bool = False, pbar=None, **_) -> np.ndarray | tuple:
        """The pooled vectors the head reads ``(N, hidden)``, and the probabilities with ``return_proba``."""
        vectors, logits = self.model.vectors_of(pool.items, self.batch_size)
        if return_proba:
            return vectors.numpy(), self.model.proba_from_logits(logits)
        return vectors.numpy()


def contrastive_scores(
    vectors: np.ndarray, proba: np.ndarray, unlabelled: np.ndarray, labelled: np.ndarray, k: int = 10
) -> np.ndarray:
    """CAL's score of each unlabelled text: the mean KL divergence from the predictions of its ``k`` nearest
    labelled texts (cosine, on the pooled vectors) to its own. High: it sits among labelled texts the model
    predicts differently, a contrastive example."""
    from scipy.special import rel_entr

    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    similarity = unit[unlabelled] @ unit[labelled].T  # (unlabelled, labelled)
    k = min(k, len(labelled))
    neighbours = np.argsort(-similarity, axis=1)[:, :k]
    eps = 1e-12
    own = proba[unlabelled][:, None, :] + eps  # (unlabelled, 1, K)
    theirs = proba[labelled][neighbours] + eps  # (unlabelled, k, K)
    return rel_entr(theirs, own).sum(-1).mean(-1)


def _strategy(name: str, num_classes: int):
    import small_text

    return {
        "random": small_text.RandomSampling,
        "least_confidence": small_text.LeastConfidence,
        "entropy": small_text.PredictionEntropy,
        "breaking_ties": small_text.BreakingTies,
        "bald": lambda: small_text.BALD(dropout_samples=10),
        "kmeans": small_text.EmbeddingKMeans,
        "coreset": small_text.GreedyCoreset,
    }[name]()


def query(
    model: TextClassificationModel,
    pool_features: Sequence[dict],
    labelled: Sequence[int],
    labels: Sequence[int],
    strategy: str,
    n: int,
    seed: int = 0,
) -> np.ndarray:
    """The positions in the pool of the ``n`` texts to label next, by ``strategy`` (``config.QUERY_STRATEGIES``).

    Args:
        model: the model trained on the labels so far.
        pool_features: every pool text, encoded with the model's processor (labelled ones included).
        labelled: positions already labelled; ``labels`` their label ids, in the same order.
        seed: the query's randomness (random sampling, k-means, dropout draws): the same seed, the same answer.
    """
    if strategy not in QUERY_STRATEGIES:
        raise ConfigError(f"Unknown query strategy '{strategy}'. Choose one of: {', '.join(QUERY_STRATEGIES)}.")
    labelled = np.asarray(labelled, dtype=int)
    unlabelled = np.setdiff1d(np.arange(len(pool_features)), labelled)
    if n < 1 or n > len(unlabelled):
        raise ConfigError(
            f"Cannot query {n} texts: the pool has {len(unlabelled)} unlabelled. Ask for 1 to {len(unlabelled)}."
        )
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            pool, classifier = Pool(pool_features), ModelClassifier(model)
            if strategy == "cal":
                if not len(labelled):
                    raise ConfigError("The cal strategy compares texts with labelled neighbours: label a first batch.")
                vectors, proba = classifier.embed(pool, return_proba=True)
                scores = contrastive_scores(vectors, proba, unlabelled, labelled)
                return unlabelled[np.argsort(-scores, kind="stable")[:n]]
            chosen = _strategy(strategy, model.num_labels).query(
                classifier, pool, unlabelled, labelled, np.asarray(labels, dtype=int), n=n
            )
            return np.asarray(chosen, dtype=int)
    finally:
        np.random.set_state(state)
