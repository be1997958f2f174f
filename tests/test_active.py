"""Active learning's query strategies (workbench.active) on the tiny trained model and a pool whose informative
texts are known: sentences that mix the positive and negative words the model learnt."""

import itertools
import json

import numpy as np
import pytest
from conftest import NEGATIVE, POSITIVE

from workbench.active import ModelClassifier, Pool, contrastive_scores, query
from workbench.config import QUERY_STRATEGIES
from workbench.data import TextDataModule
from workbench.errors import ConfigError
from workbench.models import TextClassificationModel
from workbench.runs import load_run

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


def study_config(files, backbone, tmp_path, **overrides):
    from workbench import load_config

    return load_config(
        None,
        {
            "data.train_file": files["train"],
            "data.val_file": files["val"],
            "data.max_length": 16,
            "model.backbone": backbone,
            "model.freeze_embeddings": False,
            "train.epochs": 2,
            "train.lr": 3e-3,
            "active.initial": 6,
            "active.batch": 6,
            "active.max_labels": 18,
            "run.root": str(tmp_path / "runs"),
            "run.name": "study",
            **overrides,
        },
    )


@pytest.fixture
def topic_files(tmp_path):
    from test_fewshot import topic_rows

    topic_rows(20, 0).to_csv(tmp_path / "train.csv", index=False)
    topic_rows(10, 1).to_csv(tmp_path / "val.csv", index=False)
    return {"train": str(tmp_path / "train.csv"), "val": str(tmp_path / "val.csv")}


def test_simulated_rounds_grow_the_labels_and_resume_after_a_kill(topic_files, tiny_bert, tmp_path, monkeypatch):
    import workbench.active as active

    config = study_config(topic_files, tiny_bert, tmp_path)
    calls = {"n": 0}
    real_train = active.train

    def train_then_die(*args, **kwargs):  # the second round's training is killed
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_train(*args, **kwargs)

    monkeypatch.setattr(active, "train", train_then_die)
    with pytest.raises(KeyboardInterrupt):
        active.simulate(config, echo=None)
    folder = tmp_path / "runs" / "study" / "active" / "breaking_ties" / "seed42"
    assert [r["labels"] for r in json.loads((folder / "curve.json").read_text())["rounds"]] == [6]
    monkeypatch.setattr(active, "train", real_train)
    curve = active.simulate(config, echo=None)
    rounds = curve["rounds"]
    assert [r["labels"] for r in rounds] == [6, 12, 18] and rounds[0]["agreement"] is None
    for before, after in itertools.pairwise(rounds):  # each round keeps every label before it
        assert after["positions"][: before["labels"]] == before["positions"]
        assert len(set(after["positions"])) == after["labels"] and 0.0 <= after["agreement"] <= 1.0
    assert len(list((folder / "round_000").glob("version_*"))) == 1  # the finished round was read back, not retrained
    again = active.simulate(study_config(topic_files, tiny_bert, tmp_path, **{"run.name": "again"}), echo=None)
    assert [r["positions"] for r in again["rounds"]] == [r["positions"] for r in rounds]  # a seed repeats the study


def test_kmeans_cold_start_spreads_the_first_labels(topic_files, tiny_bert, tmp_path):
    from workbench.active import cold_start

    config = study_config(topic_files, tiny_bert, tmp_path, **{"active.cold_start": "kmeans"})
    dm = TextDataModule(config=config.data, model_name=tiny_bert).setup()
    picked = cold_start(config, dm.train_dataset.features, 6, 0)
    assert len(set(picked)) == 6 and list(picked) == list(cold_start(config, dm.train_dataset.features, 6, 0))


def test_al_simulate_on_the_command_line(topic_files, tiny_bert, tmp_path, capsys):
    from workbench.cli import main

    argv = [
        f"data.train_file={topic_files['train']}",
        f"data.val_file={topic_files['val']}",
        "data.max_length=16",
        f"model.backbone={tiny_bert}",
        "train.epochs=1",
        "active.initial=6",
        "active.max_labels=9",
        "active.batch=3",
        f"run.root={tmp_path / 'runs'}",
    ]
    assert main(["al", "simulate", *argv, "--strategies", "random", "entropy"]) == 0
    out = capsys.readouterr().out
    assert "random (seed 42)" in out and "entropy (seed 42)" in out and out.count("(validation)") == 4
    assert main(["al", "simulate", *argv, "run.name=bad", "--strategies", "entropy", "nearest"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("workbench al: error:") and "active.strategy" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "runs" / "bad").exists()


def test_label_rounds_on_the_command_line(topic_files, tiny_bert, tmp_path, capsys):
    """The cold start writes texts to label; labelling them and running again trains a round and asks for more."""
    import pandas as pd

    from workbench.cli import main

    pool = pd.read_csv(topic_files["train"])
    pool[["text"]].to_csv(tmp_path / "pool.csv", index=False)
    truth = dict(zip(pool["text"], pool["label"], strict=False))
    argv = [
        "label",
        "--pool",
        str(tmp_path / "pool.csv"),
        "--labels",
        str(tmp_path / "labels.jsonl"),
        "--out",
        str(tmp_path / "next.csv"),
        f"model.backbone={tiny_bert}",
        "data.max_length=16",
        "train.epochs=1",
        "active.labels=[sport,money,food]",
        "active.initial=9",
        "active.batch=4",
        f"run.root={tmp_path / 'runs'}",
    ]
    assert main(argv) == 0 and "cold start" in capsys.readouterr().out
    first = pd.read_csv(tmp_path / "next.csv")
    assert len(first) == 9
    with open(tmp_path / "labels.jsonl", "a") as labels:  # what the labeller writes, one line a click
        for text in first["text"]:
            labels.write(json.dumps({"text": text, "label": truth[text]}) + "\n")
    assert main(argv) == 0 and "trained on 9 labels" in capsys.readouterr().out
    asked = pd.read_csv(tmp_path / "next.csv")
    assert len(asked) == 4 and not set(asked["text"]) & set(first["text"])
    assert set(asked["guess"]) <= {"sport", "money", "food"} and asked["confidence"].is_monotonic_increasing


@pytest.mark.parametrize("case", ["unknown_label", "unknown_text", "empty_pool", "batch_too_big", "strategy"])
def test_bad_label_input_is_one_line_and_exit_2(case, topic_files, tiny_bert, tmp_path, capsys):
    import pandas as pd

    from workbench.cli import main

    pool = pd.read_csv(topic_files["train"])[["text"]]
    pool.to_csv(tmp_path / "pool.csv", index=False)
    (tmp_path / "empty.csv").write_text("")
    labels = tmp_path / "labels.jsonl"
    line = {"text": pool["text"][0], "label": "sport"}
    if case == "unknown_label":
        line["label"] = "weather"
    if case == "unknown_text":
        line["text"] = "a text nobody put in the pool"
    labels.write_text(json.dumps(line) + "\n")
    argv = {
        "unknown_label": ([], "label 'weather' is not one of active.labels"),
        "unknown_text": ([], "is not in the pool"),
        "empty_pool": (["--pool", str(tmp_path / "empty.csv")], "empty.csv"),
        "batch_too_big": (["active.batch=500"], "active.batch=500 is more than the 59 unlabelled texts"),
        "strategy": (["active.strategy=nearest"], "active.strategy"),
    }
    extra, expected = argv[case]
    command = ["label", "--pool", str(tmp_path / "pool.csv"), "--labels", str(labels), *extra]
    command += [f"model.backbone={tiny_bert}", "active.labels=[sport,money,food]", "run.name=bad"]
    assert main(command) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("workbench label: error:") and expected in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "runs" / "bad").exists()


def test_warm_started_rounds_begin_from_the_round_before(topic_files, tiny_bert, tmp_path):
    """model.init_from loads a finished run's weights: trained with a vanishing learning rate, the new run predicts
    as the run it started from; active.warm_start chains the rounds that way."""
    from workbench import train
    from workbench.active import simulate

    first = train(study_config(topic_files, tiny_bert, tmp_path, **{"run.name": "first"}))
    texts = [*MIXED, "the football match today"]
    again = train(
        study_config(
            topic_files,
            tiny_bert,
            tmp_path,
            **{"run.name": "again", "model.init_from": str(first.run_dir), "train.lr": 1e-12, "train.epochs": 1},
        )
    )
    np.testing.assert_allclose(again.model.predict_proba(texts), first.model.predict_proba(texts), atol=1e-4)
    curve = simulate(study_config(topic_files, tiny_bert, tmp_path, **{"active.warm_start": True}), echo=None)
    rounds = curve["rounds"]
    assert [r["labels"] for r in rounds] == [6, 12, 18]
    for before, after in itertools.pairwise(rounds):
        assert load_run(after["run_dir"]).config.model.init_from == before["run_dir"]
    assert load_run(rounds[0]["run_dir"]).config.model.init_from is None


def test_init_from_a_model_with_other_labels_is_refused(topic_files, tiny_bert, tiny_run, tmp_path):
    from workbench import train

    config = study_config(topic_files, tiny_bert, tmp_path, **{"model.init_from": str(tiny_run)})
    with pytest.raises(ConfigError, match="predicts \\['neg', 'pos'\\], the data \\['food', 'money', 'sport'\\]"):
        train(config)
