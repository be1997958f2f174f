"""Active learning's query strategies (workbench.active) on the tiny trained model and a pool whose informative
texts are known: sentences that mix the positive and negative words the model learnt."""

import numpy as np
import pytest
from conftest import NEGATIVE, POSITIVE

from workbench.active import ModelClassifier, Pool, contrastive_scores, query
from workbench.config import QUERY_STRATEGIES
from workbench.errors import ConfigError
from workbench.models import TextClassificationModel

MIXED = [
    "a good and awful film",
    "great acting, hated it",
    "wonderful mess, a poor movie",
    "bad story and great cast",
    "awful fun, a fine movie",
    "terrible story and wonderful cast",
]


@pytest.fixture(scope="module")
def model(tiny_run):
    return TextClassificationModel.from_pretrained(tiny_run)


@pytest.fixture(scope="module")
def pool(model):
    """30 clear texts (the training sentences) and 6 mixed ones: positions 30-35."""
    texts = (POSITIVE + NEGATIVE) * 3 + POSITIVE[:3] + NEGATIVE[:3] + MIXED
    return texts, model.processor().encode(texts)


def mixed_share(picked, texts) -> float:
    return float(np.mean([texts[i] in MIXED for i in picked]))


def test_uncertainty_strategies_pick_the_mixed_texts_before_random_does(model, pool):
    texts, features = pool
    labelled, labels = [0, 4], [1, 0]  # one positive, one negative sentence
    proba = ModelClassifier(model).predict_proba(Pool(features))
    mixed = [i for i, t in enumerate(texts) if t in MIXED]
    clear = [i for i, t in enumerate(texts) if t not in MIXED]
    assert proba[mixed].max(1).mean() < proba[clear].max(1).mean()  # the model is less sure of them
    random_share = np.mean(
        [mixed_share(query(model, features, labelled, labels, "random", 6, s), texts) for s in range(5)]
    )
    for strategy in ("least_confidence", "entropy", "breaking_ties"):
        share = mixed_share(query(model, features, labelled, labels, strategy, 6), texts)
        assert share > 2 * random_share, (strategy, share, random_share)  # 0.5 against 0.13 here


@pytest.mark.parametrize("strategy", QUERY_STRATEGIES)
def test_every_strategy_answers_and_a_seed_repeats_it(model, pool, strategy):
    _, features = pool
    labelled, labels = [0, 4, 9], [1, 0, 0]
    first = query(model, features, labelled, labels, strategy, 5, seed=3)
    assert len(first) == len(set(first)) == 5 and not set(first) & set(labelled)
    assert all(0 <= i < len(features) for i in first)
    assert list(query(model, features, labelled, labels, strategy, 5, seed=3)) == list(first)


def test_bald_draws_differ_under_dropout(model, pool):
    _, features = pool
    draws = ModelClassifier(model).predict_proba(Pool(features), dropout_sampling=4)
    assert draws.shape == (len(features), 4, 2) and not np.allclose(draws[:, 0], draws[:, 1])


def test_contrastive_score_is_high_where_labelled_neighbours_disagree():
    vectors = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.1, 0.9], [0.15, 0.85]])
    scores = contrastive_scores(vectors, proba, unlabelled=np.array([1, 3]), labelled=np.array([0, 2]), k=1)
    assert scores[0] > scores[1]  # text 1 sits by text 0 but is predicted the other way


@pytest.mark.parametrize(
    "strategy, n, message",
    [("nearest", 2, "Unknown query strategy 'nearest'"), ("random", 40, "Cannot query 40 texts: the pool has 34")],
)
def test_bad_queries_name_the_problem(model, pool, strategy, n, message):
    _, features = pool
    with pytest.raises(ConfigError, match=message):
        query(model, features, [0, 4], [1, 0], strategy, n)
