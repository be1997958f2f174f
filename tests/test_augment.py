"""Augmentation: the word operations on real WordNet, reproducible streams, training with fresh variants each
epoch (and an exact resume), the model operations on tiny MarianMT and masked-LM models built here, the cache,
the command line and its errors."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import Interrupt
from transformers import BertConfig, BertForMaskedLM, MarianConfig, MarianMTModel

from workbench import TextClassificationModel, TextDataModule, Trainer, plots
from workbench.augment import (
    Augmenter,
    Protection,
    punctuation_insertion,
    random_deletion,
    random_insertion,
    random_swap,
    synonym_replacement,
    synonyms,
    wordnet,
)
from workbench.config import AugmentConfig, load_config
from workbench.errors import ConfigError, ModelLoadError
from workbench.explore import augmentation_summary, augmented_examples, augmented_examples_html, changes_html

SENTENCE = "The director shot a wonderful film in 1999 , see http://films.example/123 for the happy ending"


def test_wordnet_loads_from_the_installed_package():
    reader = wordnet()
    assert "car" in [lemma.name() for lemma in reader.synsets("automobile")[0].lemmas()]
    assert "automobile" in synonyms("car") and "car" not in synonyms("car")
    assert synonyms("car") == tuple(sorted(synonyms("car")))  # sorted: a seeded pick is the same in every process


def test_synonym_replacement_uses_wordnet_and_keeps_protected_words():
    words = SENTENCE.split()
    protected = Protection(numbers=True, urls=True, words=["happy"])
    for seed in range(30):
        out = synonym_replacement(words, 3, np.random.default_rng(seed), protected)
        assert len(out) == len(words)
        changed = [(a, b) for a, b in zip(words, out, strict=True) if a != b]
        assert 1 <= len(changed) <= 3
        for before, after in changed:
            assert after.lower() in synonyms(before.lower()), (before, after)
        assert {"1999", "http://films.example/123", "happy", "The"} <= set(out)  # "The" is a stop word


def test_insertion_swap_deletion_and_aeda():
    words = SENTENCE.split()
    protected = Protection(words=["happy"])
    kept = {"1999", "http://films.example/123", "happy"}
    for seed in range(30):
        rng = np.random.default_rng(seed)
        inserted = random_insertion(words, 2, rng, protected)
        assert len(inserted) > len(words) and kept <= set(inserted)
        new = list(inserted)
        for w in words:
            new.remove(w)
        # each insertion is a synonym of a word of the text (EDA may pick an inserted word, too)
        assert all(any(n in synonyms(w.lower()) for w in inserted) for n in new)
        swapped = random_swap(words, 1, rng, protected)  # two swaps may undo each other
        assert sorted(swapped) == sorted(words) and swapped != words
        assert all(swapped[i] == words[i] for i, w in enumerate(words) if w in kept)  # protected words stay put
        deleted = random_deletion(words, 0.5, rng, protected)
        assert kept <= set(deleted) and len(deleted) < len(words)
        punctuated = punctuation_insertion(words, rng)
        extra = len(punctuated) - len(words)
        assert 1 <= extra <= len(words) // 3
        assert [w for w in punctuated if w not in ".;?:!,"] == [w for w in words if w not in ".;?:!,"]
    assert random_deletion(["alone"], 1.0, np.random.default_rng(0)) == ["alone"]
    assert len(random_deletion(["two", "words"], 1.0, np.random.default_rng(0))) == 1  # never empty


def test_variants_are_reproducible_per_example_epoch_and_copy():
    config = AugmentConfig(ops=["eda", "aeda"], alpha=0.2, variants=2)
    texts = [
        "a gripping and wonderful story about a brave young girl",
        "the worst film i have seen this year",
        "an honest , funny and moving portrait of a family",
    ]
    a, b = Augmenter(config, seed=7), Augmenter(config, seed=7)
    epoch0 = a.epoch_variants(texts, 0)
    assert len(epoch0) == 2 * len(texts) and epoch0 == b.epoch_variants(texts, 0)
    assert epoch0 != a.epoch_variants(texts, 1) and epoch0 != Augmenter(config, seed=8).epoch_variants(texts, 0)
    # each variant depends only on its own example: the same in another order or another batch of texts
    assert a.variant(texts[2], 2, 1, 0) == epoch0[len(texts) + 2]
    assert a.variant(texts[2], 2, 1, 0) == Augmenter(config, seed=7).variant(texts[2], 2, 1, 0)
    ops = {op for op, _ in a.epoch_variants(texts * 20, 0)}
    assert ops == {"synonym", "insert", "swap", "delete", "aeda"}


def test_bad_settings_are_one_line_config_errors():
    with pytest.raises(ConfigError, match="augment.ops='mixup' is not one of eda"):
        load_config(overrides=["augment.ops=[mixup]"])
    with pytest.raises(ConfigError, match=r"augment.alpha=-0.1 must be in \[0, 1\]"):
        load_config(overrides=["augment.ops=[eda]", "augment.alpha=-0.1"])
    with pytest.raises(ConfigError, match="augment.variants=0 must be at least 1"):
        load_config(overrides=["augment.ops=[eda]", "augment.variants=0"])
    # a study may search augmentation's numbers, not lists (Optuna stores choices as they are)
    space = {"augment.alpha": {"uniform": [0.05, 0.3]}, "augment.variants": {"choice": [1, 2]}}
    assert load_config(overrides={"tune.space": space}).tune.space == space
    with pytest.raises(ConfigError, match="choice values must be numbers, strings"):
        load_config(overrides={"tune.space": {"augment.ops": {"choice": [[], ["eda"]]}}})


def _module(tiny_bert, files, **augment):
    config = AugmentConfig(**{"ops": ["eda", "aeda"], "alpha": 0.2, **augment})
    return TextDataModule(
        train_file=str(files["train"]), val_file=str(files["val"]), model_name=tiny_bert, batch_size=8, augment=config
    )


def test_only_the_training_split_is_augmented_with_fresh_variants_each_epoch(tiny_bert, sentiment_files):
    dm = _module(tiny_bert, sentiment_files, variants=2).setup()
    train, n = dm.train_dataset, len(dm.train_dataset.base)
    assert len(train) == 3 * n and len(dm.val_dataset) == 16  # validation is never augmented
    assert train.texts[:n] == train.base.texts
    labels = [f["labels"] for f in train.features]
    assert labels == labels[:n] * 3  # each copy keeps its example's label
    epoch0 = list(train.texts)
    sampler = dm.train_batch_sampler()
    sampler.set_epoch(1)
    batches = sampler.batches()  # the sampler makes the dataset move to epoch 1
    assert train.epoch == 1 and train.texts[:n] == epoch0[:n] and train.texts[n:] != epoch0[n:]
    assert sorted(i for b in batches for i in b) == list(range(3 * n))
    # batches are sorted by the epoch's own lengths: a batch's members have (nearly) one length
    assert sampler.padding_ratio() < 1.1
    train.set_epoch(3)  # a sampler built at another epoch (a notebook looked at epoch 3, a resume...) plans the same
    assert len(batches) == len(dm.train_batch_sampler()) == len(sampler)


def test_sentence_pairs_keep_their_second_text(tiny_bert, tmp_path):
    rows = [
        ("a man is playing a guitar", "someone plays music", "yes"),
        ("a dog runs in the park", "a cat sleeps", "no"),
    ] * 8
    path = tmp_path / "pairs.csv"
    pd.DataFrame(rows, columns=["text", "hypothesis", "label"]).to_csv(path, index=False)
    dm = TextDataModule(
        train_file=str(path),
        val_file=str(path),
        model_name=tiny_bert,
        text_pair_column="hypothesis",
        augment=AugmentConfig(ops=["swap"], alpha=0.5),
    ).setup()
    train, n = dm.train_dataset, len(dm.train_dataset.base)
    sep = dm.tokenizer.sep_token_id
    for i in range(n):
        original, variant = train.features[i]["input_ids"], train.features[n + i]["input_ids"]
        first = original.index(sep)
        assert original[first:] == variant[first:]  # the second text, after the first [SEP], is untouched
        assert sorted(original[:first]) == sorted(variant[:first])  # the first is swapped


def test_masks_of_urls_and_emails_are_protected():
    augmenter = Augmenter(AugmentConfig(ops=["synonym"], alpha=1.0), seed=0)
    for copy in range(10):
        _, text = augmenter.variant("see [URL] or write to [EMAIL] now", 0, copy, 0)
        assert "[URL]" in text and "[EMAIL]" in text


def test_multi_label_variants_keep_all_their_labels(tiny_bert, tmp_path):
    rows = [
        ("stocks rise as the bank buys a rival", "earn|acq"),
        ("the bank reports quarterly profit", "earn"),
        ("a company agrees to acquire its supplier", "acq"),
        ("grain exports fall after a dry season", "grain"),
    ] * 4
    path = tmp_path / "ml.csv"
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(path, index=False)
    dm = TextDataModule(
        train_file=str(path),
        val_file=str(path),
        model_name=tiny_bert,
        multi_label=True,
        augment=AugmentConfig(ops=["eda"], alpha=0.3),
    ).setup()
    train, n = dm.train_dataset, len(dm.train_dataset.base)
    for i in range(n):
        assert train.features[n + i]["labels"] == train.features[i]["labels"]
        assert sum(train.features[i]["labels"]) >= 1


def test_training_with_augmentation_resumes_the_same_stream(tiny_bert, sentiment_files):
    """Interrupted in its second epoch, a run with on-the-fly augmentation resumes to the same weights and losses
    as a straight run: the resumed epoch rebuilds the same variants from the seed."""
    from safetensors.torch import load_file

    options = {"max_epochs": 2, "lr": 1e-3, "eval_every": 5, "keep_top_k": 10, "log_every": 1}

    def fit(name, callbacks=(), resume=False):
        model = TextClassificationModel(tiny_bert, num_classes=2, freeze_embeddings=False)
        return Trainer(run_name=name, callbacks=list(callbacks), **options).fit(
            model, _module(tiny_bert, sentiment_files), resume=resume
        )

    straight = fit("aug_straight")
    assert straight.metrics["train"]["examples"] == 2 * straight.metrics["train"]["original_examples"] == 128
    with pytest.raises(KeyboardInterrupt):
        fit("aug_cut", [Interrupt(21)])  # 16 batches of 8 per epoch: in the second epoch
    resumed = fit("aug_cut", resume=True)
    a = load_file(str(straight.run_dir / "last" / "model.safetensors"))
    b = load_file(str(resumed.run_dir / "last" / "model.safetensors"))
    for name, tensor in a.items():
        assert torch.allclose(tensor, b[name], atol=1e-6), name

    def losses(run):
        logs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        return {r["step"]: r["loss"] for r in logs if "loss" in r and r["step"] > 21}

    assert losses(straight.run_dir) == pytest.approx(losses(resumed.run_dir), abs=1e-6)
    assert "ops:\n  - eda\n  - aeda" in (straight.run_dir / "config.yaml").read_text()


def test_augmented_examples_table_and_highlighting(tiny_bert, sentiment_files):
    dm = _module(tiny_bert, sentiment_files).setup()
    table = augmented_examples(dm, epoch=0)
    assert list(table.columns) == ["row", "copy", "op", "label", "original", "text", "words_changed", "length_change"]
    summary = augmentation_summary(table)
    assert set(summary.index) == {"synonym", "insert", "swap", "delete", "aeda"} and summary["variants"].sum() == 64
    assert summary.loc["insert", "length_change"] > 0 > summary.loc["delete", "length_change"]
    assert summary.loc["swap", "length_change"] == 0 and summary.loc["aeda", "length_change"] >= 1
    assert plots.augmentation_figure(table).axes[0].get_title() == "How much a variant changes"
    assert len(table) == 64 and set(table["label"]) == {"pos", "neg"}
    assert (table["original"] != table["text"]).mean() > 0.5
    assert augmented_examples(dm, epoch=0).equals(table)  # the same epoch again is the same table
    few = augmented_examples(dm, per_op=2)
    assert few.groupby("op").size().max() <= 2
    before, after = changes_html("a good and great film", "a good , and fine film")
    assert before == "a good and <del>great</del> film" and after == "a good <mark>,</mark> and <mark>fine</mark> film"
    html = augmented_examples_html(few)
    assert html.count("<tr>") == len(few) + 1 and "<mark>" in html
    with pytest.raises(ValueError, match="augment.ops"):
        augmented_examples(TextDataModule(train_file=str(sentiment_files["train"]), model_name=tiny_bert).setup())


# --------------------------------------------------------------------------------------------------
# Model operations, on tiny random models built here (the hub is unreachable in CI)


@pytest.fixture(scope="module")
def tiny_marian(tmp_path_factory, tokenizer):
    """A tiny random MarianMT model with the MiniLM WordPiece tokenizer: a real seq2seq checkpoint on disk."""
    folder = tmp_path_factory.mktemp("marian") / "opus-mt-tiny"
    torch.manual_seed(0)
    config = MarianConfig(
        vocab_size=tokenizer.vocab_size,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.sep_token_id,
        decoder_start_token_id=tokenizer.cls_token_id,
        forced_eos_token_id=None,
    )
    MarianMTModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def tiny_mlm(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("mlm") / "tiny-masked-lm"  # nlpaug alone would guess the type from this name
    torch.manual_seed(0)
    BertForMaskedLM(
        BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
        )
    ).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


TEXTS = [
    "the film is a wonderful ride from start to finish",
    "it cost 12 dollars and two hours of my life",
    "a dull , lifeless remake",
    "see www.example.com for the trailer of this great movie",
]


def test_back_translation_generates_cached_variants(tiny_marian, tmp_path, monkeypatch):
    config = AugmentConfig(
        ops=["back_translation"],
        translation_models=[tiny_marian, tiny_marian],
        variants=2,
        translation_temperature=1.0,
        model_batch_size=3,
        cache_dir=str(tmp_path),
    )
    augmenter = Augmenter(config, seed=3)
    made = augmenter.model_variants(TEXTS)["back_translation"]
    assert len(made) == len(TEXTS) and all(len(copies) == 2 for copies in made)
    assert all(isinstance(v, str) and v.strip() for copies in made for v in copies)
    # the random model loses "12" and the URL: those variants fall back to their original
    assert made[1] == [TEXTS[1]] * 2 and made[3] == [TEXTS[3]] * 2
    assert any(v != t for t, copies in zip(TEXTS, made, strict=True) for v in copies)
    [_cache] = tmp_path.glob("back_translation-*.json")
    monkeypatch.setattr(Augmenter, "_model", lambda self, op: pytest.fail("the cache should have been used"))
    assert Augmenter(config, seed=3).model_variants(TEXTS)["back_translation"] == made
    op, text = augmenter.variant(TEXTS[0], 0, 1, epoch=5, model_variants={"back_translation": made})
    assert (op, text) == ("back_translation", made[0][1])  # model variants are fixed across epochs


def test_beam_search_back_translation_without_sampling(tiny_marian, tmp_path):
    config = AugmentConfig(
        ops=["back_translation"],
        translation_models=[tiny_marian, tiny_marian],
        translation_temperature=0.0,
        cache_dir=str(tmp_path),
    )
    first = Augmenter(config, seed=0).model_variants(TEXTS[:1])["back_translation"]
    assert Augmenter(config, seed=1).model_variants(TEXTS[:1])["back_translation"] == first  # no sampling, no seed
    assert len(list(tmp_path.glob("*.json"))) == 2  # the seed is part of the key all the same


def test_back_translation_leaves_texts_longer_than_the_model_alone(tiny_marian, tmp_path):
    long = " ".join(["word"] * 300)  # 300 tokens; the tiny model has 128 positions
    config = AugmentConfig(
        ops=["back_translation"], translation_models=[tiny_marian, tiny_marian], cache_dir=str(tmp_path)
    )
    made = Augmenter(config, seed=0).model_variants([TEXTS[0], long])["back_translation"]
    assert made[1] == [long] and made[0][0] != TEXTS[0]


def test_the_cache_key_follows_the_settings(tiny_marian, tmp_path):
    base = {"ops": ["back_translation"], "translation_models": [tiny_marian, tiny_marian], "cache_dir": str(tmp_path)}
    Augmenter(AugmentConfig(**base), seed=0).model_variants(TEXTS[:2])
    Augmenter(AugmentConfig(**base, protect_words=["film"]), seed=0).model_variants(TEXTS[:2])
    Augmenter(AugmentConfig(**base, model_batch_size=1), seed=0).model_variants(TEXTS[:2])
    Augmenter(AugmentConfig(**base), seed=0).model_variants(TEXTS[:2])  # the first again: from its cache entry
    assert len(list(tmp_path.glob("back_translation-*.json"))) == 3


def test_contextual_substitution_with_a_masked_language_model(tiny_mlm, tmp_path):
    config = AugmentConfig(ops=["contextual"], fill_mask_model=tiny_mlm, alpha=0.3, cache_dir=str(tmp_path))
    made = Augmenter(config, seed=0).model_variants(TEXTS)["contextual"]
    assert len(made) == len(TEXTS) and any(copies[0] != text for text, copies in zip(TEXTS, made, strict=True))
    assert "12" in made[1][0] and "www.example.com" in made[3][0]  # protected tokens are never masked
    assert Augmenter(config, seed=0).model_variants(TEXTS)["contextual"] == made


@pytest.mark.parametrize("key", ["translation_models", "fill_mask_model"])
def test_a_model_that_does_not_load_is_a_one_line_error(tmp_path, key):
    missing = str(tmp_path / "no-such-model")
    options = (
        {"ops": ["back_translation"], "translation_models": [missing, missing]}
        if key == "translation_models"
        else {"ops": ["contextual"], "fill_mask_model": missing}
    )
    with pytest.raises(ModelLoadError) as caught:
        Augmenter(AugmentConfig(cache_dir=str(tmp_path), **options)).model_variants(["a text"])
    message = str(caught.value)
    assert f"augment.{key}: cannot load '{missing}'" in message and "hf download" in message and "\n" not in message


def test_missing_wordnet_says_how_to_install_it(tmp_path, monkeypatch):
    import nltk

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "nltk_data")])
    monkeypatch.setenv("WORKBENCH_WORDNET", str(tmp_path / "empty"))
    with pytest.raises(ModelLoadError, match="WordNet .* is not installed.*make install.*wordnet-base"):
        wordnet.__wrapped__()


# --------------------------------------------------------------------------------------------------
# The command line


def _cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "workbench.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_cli_writes_the_augmented_training_set(tiny_bert, sentiment_files, tmp_path):
    out = tmp_path / "aug.jsonl"
    done = _cli(
        "augment",
        f"data.train_file={sentiment_files['train']}",
        f"data.val_file={sentiment_files['val']}",
        f"model.backbone={tiny_bert}",
        "augment.ops=[swap,aeda]",
        "augment.variants=3",
        "--out",
        str(out),
        "--epoch",
        "2",
    )
    assert done.returncode == 0, done.stderr
    table = pd.read_json(out, lines=True)
    assert len(table) == 3 * 64 and set(table["op"]) == {"swap", "aeda"} and set(table["copy"]) == {0, 1, 2}
    assert "192 variants of 64 training examples (epoch 2" in done.stdout
    for args, message in [
        (["augment.ops=[blur]"], "augment.ops='blur' is not one of"),
        (["augment.ops=[eda]", "augment.alpha=2"], "augment.alpha=2.0 must be in [0, 1]"),
        (["augment.ops=[eda]", "augment.variants=0"], "augment.variants=0 must be at least 1"),
        ([], "Nothing to augment: augment.ops is empty"),
        (["augment.ops=[eda]", "--epoch", "-1"], "--epoch -1: epochs count from 0"),
        (
            [
                "augment.ops=[contextual]",
                f"augment.fill_mask_model={tmp_path / 'nope'}",
                f"augment.cache_dir={tmp_path}",
            ],
            "augment.fill_mask_model: cannot load",
        ),
    ]:
        failed = _cli(
            "augment",
            f"data.train_file={sentiment_files['train']}",
            f"model.backbone={tiny_bert}",
            *args,
            "--out",
            str(tmp_path / "x.csv"),
        )
        assert failed.returncode == 2, (args, failed.stderr)
        assert message in failed.stderr and "Traceback" not in failed.stderr


def test_contextual_substitution_needs_a_masked_lm_nlpaug_supports(tiny_marian, tmp_path):
    config = AugmentConfig(ops=["contextual"], fill_mask_model=tiny_marian, cache_dir=str(tmp_path))
    with pytest.raises(ModelLoadError, match="is a marian model; contextual substitution .* supports bert"):
        Augmenter(config).model_variants(["a text"])
