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

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from workbench.config import QUERY_STRATEGIES, Config
from workbench.data import TextDataModule
from workbench.datafiles import read_table
from workbench.errors import ConfigError, DataError
from workbench.labels import LabelMap
from workbench.models import TextClassificationModel
from workbench.runs import write_atomic
from workbench.trainer import train

CURVE_FILE = "curve.json"  # a simulated study's rounds: labels, scores, run folders, the labelled positions
HISTORY_FILE = "history.json"  # workbench label's rounds: labels given, validation scores, run folders
AGREEMENT_TEXTS = 2000  # pool texts (a seeded sample) whose predictions are compared round to round


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


def _strategy(name: str):
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
            chosen = _strategy(strategy).query(
                classifier, pool, unlabelled, labelled, np.asarray(labels, dtype=int), n=n
            )
            return np.asarray(chosen, dtype=int)
    finally:
        np.random.set_state(state)


def cold_start(config: Config, pool_features: Sequence[dict], n: int, seed: int) -> np.ndarray:
    """The first ``n`` texts to label, before any model: a seeded random draw, or (``active.cold_start=kmeans``)
    the text nearest each of ``n`` k-means clusters of the untrained encoder's pooled vectors."""
    if n > len(pool_features):
        raise ConfigError(f"active.initial={n} is more than the {len(pool_features)} texts of the pool.")
    rng = np.random.default_rng(seed)
    if config.active.cold_start == "random":
        return np.sort(rng.choice(len(pool_features), n, replace=False))
    from sklearn.cluster import KMeans

    encoder = TextClassificationModel(config.model, num_classes=2, seed=seed)
    vectors = encoder.vectors_of(pool_features)[0].numpy()
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    centres = KMeans(n_clusters=n, n_init=1, random_state=seed).fit(unit).cluster_centers_
    chosen: list[int] = []
    for similarity in centres @ unit.T:  # nearest text to each centre, each text once
        order = [i for i in np.argsort(-similarity) if i not in chosen]
        chosen.append(int(order[0]))
    return np.sort(np.asarray(chosen))


def _round_config(
    config: Config, folder: Path, train_rows: pd.DataFrame, name: str, val_file: str | None, test_file: str | None
) -> Config:
    """The round's config: trained on its labelled texts (written to ``folder``), validated on ``val_file`` (None:
    10% of them held out) and tested on ``test_file``, the run in ``folder/name``."""
    train_file = folder / f"{name}.train.parquet"
    train_rows.to_parquet(train_file)
    data = replace(
        config.data,
        dataset=None,
        train_file=str(train_file),
        val_file=val_file,
        test_file=test_file,
        text_column="text",
        label_column="label",
        train_subset=None,
        val_subset=None,
        shots=None,
    )
    return replace(config, data=data, run=replace(config.run, root=str(folder), name=name))


def _write_split(dataset, label_names: Sequence[str], path: Path) -> None:
    pd.DataFrame({"text": dataset.texts, "label": [label_names[i] for i in dataset.labels]}).to_parquet(path)


def _candidates(unlabelled: np.ndarray, pool_size: int | None, seed: int) -> np.ndarray:
    if pool_size is None or pool_size >= len(unlabelled):
        return unlabelled
    return np.sort(np.random.default_rng(seed).choice(unlabelled, pool_size, replace=False))


def _next_texts(
    config: Config,
    model: TextClassificationModel | None,
    features: Sequence[dict],
    truth: np.ndarray,
    labelled: np.ndarray,
    strategy: str,
    round_number: int,
) -> np.ndarray:
    """The pool positions a round adds: the cold start without a model, else ``strategy``'s query among
    ``active.pool_size`` sampled unlabelled texts (and the labelled ones, which some strategies compare with)."""
    settings, seed = config.active, config.train.seed
    if model is None:
        return cold_start(config, features, settings.initial, seed)
    round_seed = seed * 1009 + round_number
    unlabelled = np.setdiff1d(np.arange(len(features)), labelled)
    n = min(settings.batch, settings.max_labels - len(labelled), len(unlabelled))
    candidates = np.concatenate([_candidates(unlabelled, settings.pool_size, round_seed), labelled])
    chosen = query(
        model,
        [features[i] for i in candidates],
        np.arange(len(candidates) - len(labelled), len(candidates)),
        truth[labelled],
        strategy,
        n,
        round_seed,
    )
    return candidates[chosen]


def simulate(config: Config, strategy: str | None = None, echo: Callable[[str], None] | None = print) -> dict:
    """The active-learning loop with the known labels as the oracle: the cold start, then rounds of training on
    the labels so far (each round an ordinary run) and asking ``strategy`` (default ``active.strategy``) for
    ``active.batch`` more, until ``active.max_labels`` (or ``active.stop_agreement``). The pool is the training
    split (validation held out as training would); every round is scored on the test split (else validation), and
    its predictions on a fixed sample of the pool are compared with the round before's (``agreement``).

    Writes ``<run.root>/<run.name>/active/<strategy>/seed<train.seed>/curve.json`` after every round, and resumes
    from it: a finished round is read back, not trained again.

    Returns:
        The curve: ``{"strategy", "seed", "rounds": [{"labels", "accuracy", "macro_f1", "run_dir", ...}]}``.
    """
    settings, seed = config.active, config.train.seed
    strategy = strategy or settings.strategy
    if settings.warm_start and config.train.method != "finetune":
        raise ConfigError("active.warm_start continues fine-tuning; set train.method=finetune or turn it off.")
    if strategy not in QUERY_STRATEGIES:
        raise ConfigError(f"Unknown query strategy '{strategy}'. Choose one of: {', '.join(QUERY_STRATEGIES)}.")
    echo = echo or (lambda line: None)
    dm = TextDataModule(
        config=replace(config.data, shots=None),
        model_name=config.model.backbone,
        trust_remote_code=config.model.trust_remote_code,
        seed=seed,
    ).setup()
    if dm.multi_label:
        raise ConfigError("Active learning here picks single-label texts; this data is multi-label.")
    pool, names = dm.train_dataset, dm.label_names
    if len(pool) <= settings.initial:
        raise DataError(f"The pool has {len(pool)} texts, not more than active.initial={settings.initial}.")
    folder = Path(config.run.root) / config.run.name / "active" / strategy / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    _write_split(dm.val_dataset, names, folder / "validation.parquet")
    if dm.test_dataset is not None:
        _write_split(dm.test_dataset, names, folder / "test.parquet")
    curve_file = folder / CURVE_FILE
    curve = json.loads(curve_file.read_text()) if curve_file.exists() else {"strategy": strategy, "seed": seed}
    rounds = curve.setdefault("rounds", [])
    truth = np.asarray(pool.labels)
    watched = [pool.features[i] for i in _candidates(np.arange(len(pool)), AGREEMENT_TEXTS, seed)]
    model, previous = None, None
    if rounds:
        model = TextClassificationModel.from_pretrained(rounds[-1]["run_dir"])
        previous = model.logits_of(watched).argmax(1).numpy()
        echo(f"{strategy} seed {seed}: resuming after round {len(rounds) - 1} ({rounds[-1]['labels']} labels)")
    while True:
        labelled = np.asarray(rounds[-1]["positions"], dtype=int) if rounds else np.empty(0, dtype=int)
        if len(labelled) >= settings.max_labels:
            break
        if rounds and settings.stop_agreement and rounds[-1].get("agreement", 0.0) >= settings.stop_agreement:
            echo(f"{strategy} seed {seed}: predictions stable ({rounds[-1]['agreement']:.4f}), stopping")
            break
        started = time.perf_counter()
        picked = _next_texts(config, model, pool.features, truth, labelled, strategy, len(rounds))
        positions = np.concatenate([labelled, picked])
        query_seconds = time.perf_counter() - started
        rows = pd.DataFrame({"text": [pool.texts[i] for i in positions], "label": [names[truth[i]] for i in positions]})
        name = f"round_{len(rounds):03d}"
        test_file = folder / "test.parquet"
        round_config = _round_config(
            config,
            folder,
            rows,
            name,
            str(folder / "validation.parquet"),
            str(test_file) if test_file.exists() else None,
        )
        if settings.warm_start and rounds:
            round_config = replace(round_config, model=replace(config.model, init_from=rounds[-1]["run_dir"]))
        result = train(round_config, label_map=dm.label_map)
        model = result.model
        predicted = model.logits_of(watched).argmax(1).numpy()
        scored = result.metrics.get("test", result.metrics["validation"])
        rounds.append(
            {
                "round": len(rounds),
                "labels": len(positions),
                "accuracy": scored["accuracy"],
                "macro_f1": scored["macro_f1"],
                "scored_on": "test" if "test" in result.metrics else "validation",
                "agreement": None if previous is None else float((predicted == previous).mean()),
                "query_seconds": query_seconds,
                "train_seconds": result.metrics["train"]["runtime_s"],
                "run_dir": str(result.run_dir),
                "positions": [int(i) for i in positions],
            }
        )
        previous = predicted
        write_atomic(curve_file, json.dumps(curve, indent=2))
        echo(f"{strategy} seed {seed}: {len(positions)} labels, accuracy {scored['accuracy']:.4f}")
    return curve


# -- a person labels: the labels file and one round from the command line (workbench label) ----------------


def read_labels(path: str | Path, pool_texts: Sequence[str], label_names: Sequence[str]) -> dict[str, str]:
    """The labels given so far: text -> label, from a table with ``text`` and ``label`` columns (the labeller
    appends one JSON line per click; a later line for the same text replaces the earlier). A missing or empty file
    is no labels yet. A label outside ``label_names`` or a text not in the pool is a DataError naming the row."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return {}
    table = read_table(path)
    missing = [c for c in ("text", "label") if c not in table.columns]
    if missing:
        raise DataError(f"{path} has no column {missing[0]!r}: a labels file has the columns text and label.")
    known, labels = set(pool_texts), set(label_names)
    given: dict[str, str] = {}
    for text, label, row in zip(table["text"], table["label"], table["_row"], strict=True):
        if str(label) not in labels:
            raise DataError(
                f"{path}, row {row}: label {label!r} is not one of active.labels ({', '.join(label_names)}). "
                "Fix the row, or add the label to active.labels."
            )
        if text not in known:
            raise DataError(f"{path}, row {row}: the text {str(text)[:60]!r} is not in the pool. Remove the row.")
        given[text] = str(label)
    return given


def label_round(config: Config, pool_file: str | Path, labels_file: str | Path, out: str | Path) -> dict:
    """One round of ``workbench label``: train on the labels file (no training before the first labels: the cold
    start), then write the ``active.batch`` pool texts to label next to ``out`` (text, the model's guess and its
    confidence), least confident first.

    Returns:
        ``{"labels": given so far, "asked": texts written, "run_dir": the round's run or None}``.
    """
    settings = config.active
    if len(settings.labels) < 2:
        raise ConfigError(f"active.labels={settings.labels}: name the two or more labels a person chooses from.")
    pool = read_table(pool_file)
    column = config.data.text_column
    if column not in pool.columns:
        raise DataError(
            f"{pool_file} has no column {column!r} (data.text_column). Its columns: {', '.join(pool.columns)}."
        )
    texts = list(dict.fromkeys(str(t) for t in pool[column]))  # each text once, in file order
    given = read_labels(labels_file, texts, settings.labels)
    unlabelled = [t for t in texts if t not in given]
    n = settings.batch if given else settings.initial
    if n > len(unlabelled):
        raise ConfigError(
            f"active.{'batch' if given else 'initial'}={n} is more than the {len(unlabelled)} unlabelled texts of "
            f"{pool_file}. Ask for fewer."
        )
    label_map = LabelMap(settings.labels)
    if not given:
        dm = TextDataModule(config=config.data, model_name=config.model.backbone)
        picked = cold_start(config, dm.processor.encode(texts), n, config.train.seed)
        asked = pd.DataFrame({"text": [texts[i] for i in picked], "guess": None, "confidence": None})
        run_dir = None
    else:
        folder = Path(config.run.root) / config.run.name / "rounds"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"round_{len(list(folder.glob('round_*.train.parquet'))):03d}"
        rows = pd.DataFrame({"text": list(given), "label": list(given.values())})
        round_config = _round_config(config, folder, rows, name, config.data.val_file, config.data.test_file)
        result = train(round_config, label_map=label_map)
        model, run_dir = result.model, str(result.run_dir)
        features = model.processor().encode(texts)
        positions = {t: i for i, t in enumerate(texts)}
        labelled = [positions[t] for t in given]
        chosen = query(
            model,
            features,
            labelled,
            [label_map.index[given[texts[i]]] for i in labelled],
            settings.strategy,
            n,
            config.train.seed + len(given),
        )
        proba = model.predict_proba([texts[i] for i in chosen])
        asked = pd.DataFrame(
            {
                "text": [texts[i] for i in chosen],
                "guess": [model.label_names[k] for k in proba.argmax(1)],
                "confidence": proba.max(1),
            }
        ).sort_values("confidence", kind="stable")
        history = _history(folder)
        history.append(
            {
                "round": len(history),
                "labels": len(given),
                "accuracy": result.metrics["validation"]["accuracy"],
                "macro_f1": result.metrics["validation"]["macro_f1"],
                "run_dir": run_dir,
            }
        )
        write_atomic(folder / HISTORY_FILE, json.dumps(history, indent=2))
    out = Path(out)
    write_atomic(out, asked.to_csv(index=False))
    return {"labels": len(given), "asked": len(asked), "run_dir": run_dir}


def _history(folder: Path) -> list[dict]:
    path = folder / HISTORY_FILE
    return json.loads(path.read_text()) if path.exists() else []


def next_batch(config: Config, pool_file: str | Path, labels_file: str | Path, out: str | Path) -> tuple:
    """:func:`label_round`, then what the labeller shows: the texts to label next (text, guess, confidence) and
    the rounds so far (``strategy``, ``seed``, ``labels``, ``accuracy`` on validation), for
    :func:`workbench.plots.active_curve_figure`."""
    label_round(config, pool_file, labels_file, out)
    history = pd.DataFrame(_history(Path(config.run.root) / config.run.name / "rounds"))
    history = history.assign(strategy=config.active.strategy, seed=config.train.seed) if len(history) else history
    return pd.read_csv(out), history


def curve_points(curves: Sequence[dict]) -> pd.DataFrame:
    """The rounds of :func:`simulate`'s curves as one table: strategy, seed, labels, accuracy, macro_f1."""
    return pd.DataFrame(
        [
            {"strategy": c["strategy"], "seed": c["seed"], **{k: r[k] for k in ("labels", "accuracy", "macro_f1")}}
            for c in curves
            for r in c["rounds"]
        ]
    )


def curve_table(points: pd.DataFrame, target: float | None = None) -> pd.DataFrame:
    """Per strategy, over its seeds: the last round's accuracy, the area under the learning curve (the mean
    accuracy over the labels range, trapezoids), and the labels the mean curve first reaches ``target`` with (None
    when it never does)."""
    rows = []
    for strategy, group in points.groupby("strategy", sort=True):
        mean = group.groupby("labels")["accuracy"].mean()
        labels, accuracy = mean.index.to_numpy(dtype=float), mean.to_numpy()
        span = labels[-1] - labels[0]
        area = float(np.trapezoid(accuracy, labels) / span) if span else float(accuracy[-1])
        reached = labels[accuracy >= target] if target is not None else []
        rows.append(
            {
                "strategy": strategy,
                "seeds": group["seed"].nunique(),
                "final_labels": int(labels[-1]),
                "final_accuracy": float(accuracy[-1]),
                "area_under_curve": area,
                "labels_to_target": int(reached[0]) if len(reached) else None,
            }
        )
    return pd.DataFrame(rows).set_index("strategy")
