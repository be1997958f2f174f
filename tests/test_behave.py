"""Behavioural suites: known answers from classifiers whose behaviour is known exactly, seeding, the command line
on a real (tiny) run, and bad suites refused in one line."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from workbench import behave
from workbench.cli import main
from workbench.errors import ConfigError
from workbench.models import TextClassificationModel
from workbench.runs import RunDir, leaderboard

LABELS = ["negative", "positive"]


def keyword_rule(texts):
    """Exactly a keyword rule: positive when the word "good" is in the text, else negative."""
    return np.array([[0.1, 0.9] if "good" in text.lower().split() else [0.9, 0.1] for text in texts])


def write_suite(folder: Path, tests: list, **extra) -> Path:
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump({"name": "mine", "labels": LABELS, "tests": tests, **extra}, sort_keys=False))
    return path


def test_a_model_that_ignores_its_input_fails_every_minimum_functionality_test(tiny_run, tmp_path):
    model = TextClassificationModel.from_pretrained(RunDir(tiny_run).best)
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]  # the last layer: logits
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([0.0, 3.0] if model.label_names[1] == "pos" else [3.0, 0.0]))
    always = [model.label_names.index("pos")]
    assert len(set(model.predict(["a good film", "an awful mess", "zzz"]))) == 1  # it ignores its input
    mft = [
        {"name": f"mft {i}", "type": "mft", "cases": [{"template": t, "label": "neg"}, {"template": p, "label": "pos"}]}
        for i, (t, p) in enumerate([("a {neg_adj} {thing}", "a {pos_adj} {thing}"), ("I {neg_verb} it", "I loved it")])
    ]
    suite = write_suite(tmp_path, mft, labels=["neg", "pos"], examples=1000)  # keep every failing example
    result = behave.check_behavior(suite, model.predict_proba, model.label_names)
    for record in result["tests"]:
        expected_failures = sum(1 for example in record["examples"] if example["expected"] == "neg")
        assert record["failures"] == expected_failures > 0  # every "neg" case fails, no "pos" case does
        assert all(example["prediction"] == model.label_names[always[0]] for example in record["examples"])
    assert result["tests"][1]["n"] == 8 + 1 and result["tests"][1]["failures"] == 8  # 8 negative verbs, 1 template


def test_a_keyword_rule_passes_the_invariance_tests_that_leave_its_keyword_alone(tmp_path):
    texts = ["sam is so good", "amy is so good", "it is a good one", "ben was bad", "it was not for me"]
    labels = ["positive", "positive", "positive", "negative", "negative"]
    tests = [
        {"name": "names", "type": "inv", "perturb": "names"},
        {"name": "clause", "type": "inv", "perturb": {"append": "{clause}"}},
        {"name": "typos", "type": "inv", "perturb": "typos"},  # "good" is the only word of 4+ letters
        {"name": "negative phrase", "type": "dir", "perturb": {"append": "{neg_phrase}"},
         "expect": {"label": "positive", "must_not": "rise"}},
    ]  # fmt: skip
    result = behave.check_behavior(write_suite(tmp_path, tests), keyword_rule, LABELS, texts, labels)
    rates = {t["name"]: (t["n"], t["failure_rate"]) for t in result["tests"]}
    assert rates["names"] == (3, 0.0) and rates["clause"] == (5, 0.0) and rates["negative phrase"] == (5, 0.0)
    assert rates["typos"] == (3, 1.0)  # the typo always lands in the keyword: every positive text flips
    assert [t["label_changes"] for t in result["tests"]] == [0, 0, 3, None]
    typos = next(t for t in result["tests"] if t["name"] == "typos")["examples"]
    assert all("good" not in e["perturbed"].split() and e["prediction"] == "negative" for e in typos)


def test_directional_tests_catch_a_probability_that_moves_the_wrong_way(tmp_path):
    texts = ["it was bad", "a dull one", "john is so good"]
    tests = [
        {"name": "add good", "type": "dir", "perturb": {"append": "so good"},
         "expect": {"label": "negative", "must_not": "fall", "tolerance": 0.1}},
    ]  # fmt: skip
    result = behave.check_behavior(write_suite(tmp_path, tests), keyword_rule, LABELS, texts, ["negative"] * 3)
    record = result["tests"][0]
    assert (record["n"], record["failures"]) == (3, 2)  # the two negatives flip; the positive was already positive
    assert all(abs(e["change"] + 0.8) < 1e-9 for e in record["examples"])


def test_the_same_seed_gives_the_same_texts_and_another_seed_other_ones(tmp_path):
    texts = [f"the remarkable performance number {i} was wonderfully staged by john in paris" for i in range(40)]
    labels = ["positive"] * 40
    tests = [{"name": n, "type": "inv", "perturb": n} for n in ("typos", "keyboard", "names", "places", "synonym")]
    tests.append(
        {"name": "adjectives", "type": "mft", "cases": [{"template": "a {pos_adj} {thing}", "label": "positive"}]}
    )
    suite = behave.load_suite(write_suite(tmp_path, tests, n=30))
    first = [behave.make_cases(suite, t, texts, labels) for t in suite.tests]
    assert first == [behave.make_cases(suite, t, texts, labels) for t in suite.tests]
    suite.seed = 1
    other = [behave.make_cases(suite, t, texts, labels) for t in suite.tests]
    for a, b in zip(first, other, strict=True):
        assert len(a) == len(b) == 30 and a != b


def test_templates_fill_every_combination_or_a_sample_of_distinct_ones():
    words = {"a": ["x", "y", "z"], "b": ["1", "2"]}
    assert behave.fill("{a}{b}{a}", words, 10, np.random.default_rng(0)) == ["x1x", "x2x", "y1y", "y2y", "z1z", "z2z"]
    sample = behave.fill("{a}-{b}", words, 4, np.random.default_rng(0))
    assert len(sample) == len(set(sample)) == 4 and set(sample) <= {f"{a}-{b}" for a in "xyz" for b in "12"}


def test_swapped_words_are_whole_words_in_their_case_and_one_form_one_replacement():
    rng = np.random.default_rng(0)
    assert behave.swap_words("Johnny met john", [["John", "Mary"]], rng) == "Johnny met mary"
    names = [["John", "Mary", "Lisa", "Gary", "Anna", "Paul"]]
    for seed in range(5):  # "John ... john" becomes one other name, in each occurrence's case
        first, _, second = behave.swap_words("John met john", names, np.random.default_rng(seed)).split()
        assert first != "John" and second == first.lower()
    assert behave.swap_words("Is not it ?", [["is not", "isn't"]], rng) == "Isn't it ?"
    text = behave.swap_words("it 's fine , is n't it ?", [["it 's", "it is"], ["is n't", "is not"]], rng)
    assert text == "it is fine , is not it ?"


def test_behave_writes_into_the_run_and_the_leaderboard_shows_it(tiny_run, tmp_path, capsys):
    run = shutil.copytree(tiny_run, tmp_path / "runs" / "tiny" / "version_0")
    tests = [
        {"name": "words", "type": "mft", "cases": [{"template": "a {pos_adj} film", "label": "pos"},
                                                   {"template": "a {neg_adj} film", "label": "neg"}]},
        {"name": "typos", "type": "inv", "perturb": "typos"},
        {"name": "hated", "type": "dir", "perturb": {"append": "hated it"},
         "expect": {"label": "pos", "must_not": "rise"}},
    ]  # fmt: skip
    suite = write_suite(tmp_path, tests, labels=["neg", "pos"], n=40)
    assert main(["behave", str(run), "--suite", str(suite)]) == 0
    out = capsys.readouterr().out
    written = json.loads((run / "behavior" / "mine.json").read_text())
    assert "mean failure rate" in out and written["split"] == "validation" and written["run"] == str(run)
    assert written["tests"][0]["n"] == 40 and written["tests"][1]["n"] > 0  # 20 + 20 templated texts
    board = leaderboard(tmp_path / "runs")
    assert board.loc[0, "behavior_mine"] == pytest.approx(written["failure_rate"])
    assert main(["behave", str(run), "--suite", str(suite)]) == 0  # seeded: the same numbers again
    assert json.loads((run / "behavior" / "mine.json").read_text()) == written


@pytest.mark.parametrize(
    ("suite", "message"),
    [
        ({"name": "x", "tests": [{"name": "t", "type": "fuzz", "perturb": "typos"}]}, "unknown test type 'fuzz'"),
        ({"name": "x", "tests": [{"name": "t", "type": "mft", "cases": [{"template": "a {gadget}", "label": "pos"}]}]},
         "placeholder {gadget} has no word list"),
        ({"name": "x", "tests": []}, "has no tests"),
        ({"name": "x", "tests": [{"name": "t", "type": "mft", "cases": [{"template": "a {} film", "label": "pos"}]}]},
         "has the field {}: use plain {word_list} names"),
        ({"name": "x", "tests": [{"name": "t", "type": "mft", "cases": [{"template": "a {pos_adj", "label": "pos"}]}]},
         "template 'a {pos_adj' is not valid"),
        ({"name": "x", "words": {"answer": ["maybe", True]}, "tests": [{"name": "t", "type": "mft", "cases": []}]},
         "words.answer holds True, which YAML read as no word: quote it"),
        ({"name": "x", "tests": [{"name": "t", "type": "inv", "perturb": "shout"}]}, "unknown perturbation 'shout'"),
        ({"name": "x", "tests": [{"name": "t", "type": "dir", "perturb": "typos"}]}, "a dir test needs expect"),
        ({"name": "x", "n": "all", "tests": [{"name": "t", "type": "inv", "perturb": "typos"}]},
         "n must be a positive whole number; got 'all'"),
        ("sentiment", "label 'negative' is not one of the run's labels (neg, pos)"),
        ("nowhere.yaml", "Suite file nowhere.yaml does not exist"),
    ],
)  # fmt: skip
def test_bad_suites_are_refused_in_one_line(tiny_run, tmp_path, capsys, suite, message):
    if isinstance(suite, dict):
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(suite))
        suite = str(path)
    before = sorted(p.name for p in Path(tiny_run).iterdir())
    assert main(["behave", str(tiny_run), "--suite", suite]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in Path(tiny_run).iterdir()) == before  # nothing written into the run


def test_shipped_suites_load_and_their_templates_fill():
    assert behave.shipped_suites() == ["questions", "sentiment"]
    for name in behave.shipped_suites():
        suite = behave.load_suite(name)
        for test in suite.tests:
            if test.type == "mft":
                assert len(behave.make_cases(suite, test, [], [])) >= 20, test.name
    with pytest.raises(ConfigError, match="No suite 'sentimental'"):
        behave.load_suite("sentimental")
