"""Shared fixtures: tiny randomly initialised encoders and few-row datasets, so most tests run in seconds.

The tiny encoders are real transformers architectures (BERT, RoBERTa, DistilBERT, DeBERTa-v2, MPNet) built
from small configs, with the packaged MiniLM WordPiece tokenizer saved beside them, so every code path that
loads a backbone from a local folder is exercised for real.

A test whose prerequisite is missing (the benchmark data folder, Chromium, PostgreSQL) skips on a developer's
machine and fails in CI (`CI=1`, set by `.ci/run`): `missing_prerequisite` is that rule, `data_folder` the fixture
of every test that reads the real datasets.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # fail fast instead of retrying the (unreachable) hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path
from typing import NoReturn

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import (
    AutoModel,
    BertConfig,
    DebertaV2Config,
    DistilBertConfig,
    MPNetConfig,
    RobertaConfig,
    TrainerCallback,
)

from workbench.backbones import load_tokenizer
from workbench.catalog import data_root
from workbench.errors import DataError

TINY = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 130,
}


def _tiny_config(kind: str, vocab_size: int):
    if kind == "bert":
        return BertConfig(vocab_size=vocab_size, **TINY)
    if kind == "roberta":
        # RoBERTa offsets positions by padding_idx + 1, so it needs two extra position slots
        return RobertaConfig(vocab_size=vocab_size, pad_token_id=0, **{**TINY, "max_position_embeddings": 132})
    if kind == "distilbert":
        return DistilBertConfig(
            vocab_size=vocab_size, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=130
        )
    if kind == "deberta":
        return DebertaV2Config(vocab_size=vocab_size, **TINY)
    if kind == "mpnet":
        return MPNetConfig(vocab_size=vocab_size, pad_token_id=0, **{**TINY, "max_position_embeddings": 132})
    raise ValueError(kind)


def missing_prerequisite(message: str) -> NoReturn:
    """Skip the calling test because something it needs is not installed; under CI (`CI=1`) fail it instead.

    CI installs every prerequisite (`.ci/run`), so there a missing one is a broken setup, never a silent skip.
    ``message`` says what is missing and how to install it, e.g. "Chromium is not installed: apt-get install chromium".
    """
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI=1: a missing prerequisite fails instead of skipping)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def data_folder() -> Path:
    """The benchmark data folder (`catalog.data_root`), for the tests that read the real datasets."""
    try:
        return data_root()
    except DataError as error:
        problem = str(error)  # reported outside this block, so the failure shows no chained traceback
    missing_prerequisite(f"the benchmark data folder is missing: {problem} (data/README.md says where it lives)")


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer("minilm")


@pytest.fixture(scope="session")
def tiny_backbones(tmp_path_factory, tokenizer) -> dict[str, str]:
    """Folders of tiny random encoders of several architectures, each with a tokenizer."""
    root = tmp_path_factory.mktemp("tiny")
    paths = {}
    for kind in ("bert", "roberta", "distilbert", "deberta", "mpnet"):
        torch.manual_seed(0)
        model = AutoModel.from_config(_tiny_config(kind, tokenizer.vocab_size))
        model.save_pretrained(root / kind)
        tokenizer.save_pretrained(root / kind)
        paths[kind] = str(root / kind)
    return paths


@pytest.fixture(scope="session")
def tiny_bert(tiny_backbones) -> str:
    return tiny_backbones["bert"]


POSITIVE = [
    "a good and great film",
    "wonderful acting, loved it",
    "great fun, a fine movie",
    "good story and great cast",
]
NEGATIVE = ["a bad and awful film", "terrible acting, hated it", "awful mess, a poor movie", "bad story and dull cast"]


def write_sentiment_files(folder: Path) -> dict[str, Path]:
    rows = [(t, "pos") for t in POSITIVE] * 8 + [(t, "neg") for t in NEGATIVE] * 8
    train = folder / "train.csv"
    val = folder / "val.csv"
    pd.DataFrame(rows, columns=["text", "label"]).sample(frac=1, random_state=0).to_csv(train, index=False)
    pd.DataFrame(rows[::4], columns=["text", "label"]).to_csv(val, index=False)
    return {"train": train, "val": val, "dir": folder}


def long_text_files(folder: Path) -> dict[str, Path]:
    """Texts of 30 filler words, then the word that decides the label: past a 16-token head, inside the last
    window. Filler differs per text, so no window but the last says anything about the label."""
    rng = np.random.default_rng(0)
    filler = ["the", "a", "film", "story", "of", "and", "it", "was", "then", "there"]
    rows = []
    for i in range(64):
        label = ("pos", "neg")[i % 2]
        words = [*list(rng.choice(filler, 30)), ("great", "awful")[i % 2], ("fine", "poor")[i % 2]]
        rows.append((" ".join(words), label))
    pd.DataFrame(rows[:48], columns=["text", "label"]).to_csv(folder / "train.csv", index=False)
    pd.DataFrame(rows[48:], columns=["text", "label"]).to_csv(folder / "val.csv", index=False)
    return {"train": folder / "train.csv", "val": folder / "val.csv"}


@pytest.fixture
def sentiment_files(tmp_path) -> dict[str, Path]:
    """Tiny but learnable train/val CSVs (the words decide the label)."""
    return write_sentiment_files(tmp_path)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_bert) -> Path:
    """A finished run of the tiny BERT on the sentiment rows, shared by the export and serving tests."""
    from workbench import load_config, train

    folder = tmp_path_factory.mktemp("tiny_run")
    files = write_sentiment_files(folder)
    config = load_config(
        None,
        {
            "data.train_file": str(files["train"]),
            "data.val_file": str(files["val"]),
            "model.backbone": tiny_bert,
            "model.freeze_embeddings": False,
            "train.epochs": 4,
            "train.lr": 3e-3,
            "run.name": "tiny",
            "run.root": str(folder / "runs"),
        },
    )
    return train(config).run_dir


@pytest.fixture
def multilabel_file(tmp_path) -> Path:
    rows = []
    for i in range(40):
        labels = []
        text = []
        if i % 2 == 0:
            labels.append("sports")
            text.append("the team won the match")
        if i % 3 == 0:
            labels.append("money")
            text.append("stocks and profit rose")
        if not labels:
            labels.append("other")
            text.append("the weather was mild")
        rows.append((" and ".join(text), "|".join(labels)))
    path = tmp_path / "ml.csv"
    pd.DataFrame(rows, columns=["text", "labels"]).to_csv(path, index=False)
    return path


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    """Run every test in its own folder so runs/ and checkpoints/ never land in the repository."""
    monkeypatch.chdir(tmp_path)


REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_reports(tmp_path_factory, tiny_bert, data_folder) -> Path:
    """experiments/tiny.yaml (TREC from the data folder) run once by the batch runner with a tiny random encoder.

    Shared by the notebook and browser tests. Returns the working folder (reports/ and runs/ inside it).
    """
    from workbench.reports import run_experiments

    folder = tmp_path_factory.mktemp("tiny_reports")
    here = Path.cwd()
    os.chdir(folder)
    try:
        state = run_experiments(REPO / "experiments" / "tiny.yaml", progress=False, overrides={"model": tiny_bert})
    finally:
        os.chdir(here)
    (folder / "state.json").write_text(__import__("json").dumps(state, default=str))
    return folder


class Payload:
    """Unpickling this creates the file ``marker``: the proof that loading a pickle ran code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class Interrupt(TrainerCallback):
    """Stops training with a KeyboardInterrupt (as Ctrl-C would) after optimizer step ``at_step``."""

    def __init__(self, at_step):
        self.at_step = at_step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at_step:
            raise KeyboardInterrupt
