"""Behavioural tests of a trained model, CheckList's three kinds (Ribeiro et al., ACL 2020), on maintained parts.

A *suite* is a YAML file of tests. A minimum-functionality test (``mft``) fills templates from word lists and
expects a label ("This movie is not good." is negative); an invariance test (``inv``) perturbs real texts of the
run's split (typos, names, places, contractions, punctuation, an added URL or clause) and expects the same
prediction; a directional test (``dir``) perturbs them (an added "I hated it.") and expects a label's probability
not to move the wrong way by more than a tolerance. Typos come from nlpaug's character augmenters, name, place and
contraction swaps from word lists (:func:`swap_words`), synonyms from :mod:`workbench.augment`; the word lists ship in
``workbench/suites/words.yaml`` and a suite adds its own. Everything is seeded by (suite seed, test, text)::

    suite = load_suite("sentiment")                     # a shipped suite (sentiment, questions) or a YAML path
    result = run_suite(suite, "runs/sst2/version_0")   # writes runs/sst2/version_0/behavior/sentiment.json
    failure_table(result)                               # failure rate per test, by type and capability
    worst_examples(result, "Typos")                     # original, perturbed, both predictions

``workbench behave RUN_DIR --suite sentiment`` does the same from the command line; notebook ``15_behavior``
shows it, and ``09_compare_runs``' leaderboard gains a column per suite a run was tested with.
"""

from __future__ import annotations

import itertools
import json
import re
import string
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from workbench.augment import seeded_globals, synonym_replacement
from workbench.config import BEHAVIOR_DIRECTIONS, BEHAVIOR_TEST_TYPES, PERTURBATIONS
from workbench.errors import ConfigError, WorkbenchError
from workbench.evaluation import run_split
from workbench.metrics import labels_from_proba
from workbench.models import TextClassificationModel
from workbench.runs import Run, RunDir, load_run, write_atomic

SUITES_FOLDER = Path(__file__).parent / "suites"
WORDS_FILE = SUITES_FOLDER / "words.yaml"  # the word lists every suite can name as {placeholders}
PHRASE_PERTURBATIONS = ("append", "prepend")  # the perturbations that add a templated phrase
SWAP_LISTS = {"names": ("first_names",), "places": ("cities", "countries")}  # word lists, each one group to swap in
_SUITE_KEYS = {"name", "description", "labels", "split", "seed", "n", "examples", "words", "tests"}
_TEST_KEYS = {"name", "type", "capability", "description", "cases", "perturb", "labels", "expect", "n"}
_END_PUNCTUATION = re.compile(r"\s*[.!?]+$")
_NUMBER = re.compile(r"\b\d+\b")


@dataclass(frozen=True)
class Case:
    """One template of a minimum-functionality test and the label its texts must get."""

    template: str
    label: str


@dataclass
class BehaviorTest:
    """One test of a suite: ``mft`` (``cases``), or ``inv`` / ``dir`` (``perturb`` on texts of ``labels``)."""

    name: str
    type: str
    capability: str = "other"
    description: str = ""
    cases: list[Case] = field(default_factory=list)  # mft: templates and their labels
    perturb: str = ""  # inv / dir: one of config.PERTURBATIONS
    phrase: str = ""  # append / prepend: the template of the added phrase
    labels: list[str] = field(default_factory=list)  # inv / dir: only texts with these true labels (default: all)
    expect_label: str = ""  # dir: the label whose probability is watched
    must_not: str = ""  # dir: "rise" or "fall"
    # dir: how far the watched probability may move the wrong way; inv: a changed prediction fails only when the
    # original label's probability moved more than this (both CheckList's defaults, 0.1)
    tolerance: float = 0.1
    n: int | None = None  # texts in the test (default: the suite's n)


@dataclass
class Suite:
    """A suite of behavioural tests, as read from YAML by :func:`load_suite`."""

    name: str
    tests: list[BehaviorTest]
    labels: list[str] = field(default_factory=list)  # labels a run must have to take the suite
    words: dict[str, list[str]] = field(default_factory=dict)  # shipped lists updated by the suite's own
    description: str = ""
    split: str = "validation"  # where inv / dir tests take their texts
    seed: int = 0
    n: int = 300  # texts per test
    examples: int = 10  # failing examples kept per test
    path: str = ""


# --------------------------------------------------------------------------------------------------
# Reading and checking a suite


def shipped_suites() -> list[str]:
    """The suites that ship with the package (``workbench behave --suite NAME``)."""
    return sorted(p.stem for p in SUITES_FOLDER.glob("*.yaml") if p != WORDS_FILE)


def _suite_file(suite: str | Path) -> Path:
    path = Path(suite)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.exists():
            raise ConfigError(
                f"Suite file {path} does not exist. Give a YAML file or one of: {', '.join(shipped_suites())}."
            )
        return path
    if str(suite) in shipped_suites():
        return SUITES_FOLDER / f"{suite}.yaml"
    raise ConfigError(
        f"No suite '{suite}': give a YAML file or one of the shipped suites: {', '.join(shipped_suites())}."
    )


def _unknown(keys, allowed: set, where: str) -> None:
    extra = sorted(set(keys) - allowed)
    if extra:
        raise ConfigError(f"{where}: unknown key '{extra[0]}'. Valid keys: {', '.join(sorted(allowed))}.")


def _labels(value, where: str) -> list[str]:
    if not isinstance(value, list):
        raise ConfigError(f"{where}: labels must be a list, e.g. labels: [negative, positive]; got {value!r}.")
    return [str(label) for label in value]


def _number(value, key: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: {key} must be a number; got {value!r}.")
    return float(value)


def _seed(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{where}: seed must be a whole number, 0 or more; got {value!r}.")
    return value


def _count(value, key: str, where: str, optional: bool = False) -> int | None:
    """A positive whole number from a suite (``n``, ``examples``), or None where it may be left out."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{where}: {key} must be a positive whole number; got {value!r}.")
    return value


def placeholders(template: str) -> list[str]:
    """The ``{placeholder}`` names of a template, each once, in order.

    Example:
        >>> placeholders("The {thing} was {pos_adj}, the {thing} was long.")
        ['thing', 'pos_adj']
    """
    names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    return list(dict.fromkeys(names))


def _parse_test(raw, where: str) -> BehaviorTest:
    if not isinstance(raw, dict) or not raw.get("name"):
        raise ConfigError(f"{where}: each test is a mapping with at least name and type.")
    where = f"{where.rsplit(',', 1)[0]}, test '{raw['name']}'"
    _unknown(raw, _TEST_KEYS, where)
    kind = raw.get("type")
    if kind not in BEHAVIOR_TEST_TYPES:
        raise ConfigError(f"{where}: unknown test type {kind!r}. Choose one of: {', '.join(BEHAVIOR_TEST_TYPES)}.")
    test = BehaviorTest(
        name=str(raw["name"]),
        type=kind,
        capability=str(raw.get("capability", "other")),
        description=str(raw.get("description", "")),
        labels=_labels(raw.get("labels", []), where),
        n=_count(raw.get("n"), "n", where, optional=True),
    )
    if kind == "mft":
        cases = raw.get("cases") or []
        if not cases or not all(isinstance(c, dict) and {"template", "label"} <= set(c) for c in cases):
            raise ConfigError(f"{where}: an mft test needs cases: [{{template: ..., label: ...}}, ...].")
        test.cases = [Case(str(c["template"]), str(c["label"])) for c in cases]
        return test
    _parse_perturbation(test, raw.get("perturb"), where)
    expect = raw.get("expect") or {}
    if not isinstance(expect, dict):
        raise ConfigError(f"{where}: expect must be a mapping, e.g. expect: {{tolerance: 0.1}}.")
    if kind == "inv":
        test.tolerance = _number(expect.get("tolerance", test.tolerance), "expect.tolerance", where)
    else:
        if "label" not in expect or expect.get("must_not") not in BEHAVIOR_DIRECTIONS:
            raise ConfigError(
                f"{where}: a dir test needs expect: {{label: LABEL, must_not: rise|fall, tolerance: 0.1}}."
            )
        test.expect_label, test.must_not = str(expect["label"]), expect["must_not"]
        test.tolerance = _number(expect.get("tolerance", test.tolerance), "expect.tolerance", where)
    return test


def _parse_perturbation(test: BehaviorTest, perturb, where: str) -> None:
    """``perturb: NAME`` or ``perturb: {append: "template"}`` / ``{prepend: ...}``."""
    if isinstance(perturb, dict) and len(perturb) == 1:
        ((name, phrase),) = perturb.items()
        test.perturb, test.phrase = str(name), str(phrase)
    elif isinstance(perturb, str):
        test.perturb = perturb
    else:
        raise ConfigError(f'{where}: an {test.type} test needs perturb: NAME, or perturb: {{append: "phrase"}}.')
    if test.perturb not in PERTURBATIONS:
        raise ConfigError(f"{where}: unknown perturbation {test.perturb!r}. Choose one of: {', '.join(PERTURBATIONS)}.")
    if (test.perturb in PHRASE_PERTURBATIONS) != bool(test.phrase):
        raise ConfigError(f'{where}: give a phrase with append and prepend only, as perturb: {{append: "..."}}.')


def load_suite(suite: str | Path) -> Suite:
    """Read and check a suite: a YAML file, or the name of a shipped one (:func:`shipped_suites`).

    Every error is one line naming the file, the test and the fix: an unknown key or test type, a perturbation
    that does not exist, a ``{placeholder}`` without a word list, a suite without tests.

    Example:
        >>> [t.type for t in load_suite("sentiment").tests][:3]
        ['mft', 'mft', 'mft']
    """
    path = _suite_file(suite)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"Suite {path}: not valid YAML{line} ({getattr(exc, 'problem', None) or exc}).") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"Suite {path}: expected a mapping with name and tests.")
    _unknown(raw, _SUITE_KEYS, f"Suite {path}")
    if not raw.get("tests"):
        raise ConfigError(f"Suite {path} has no tests: add a tests: list (see workbench/suites/sentiment.yaml).")
    words = yaml.safe_load(WORDS_FILE.read_text())
    own = raw.get("words") or {}
    if not isinstance(own, dict):
        raise ConfigError(f"Suite {path}: words must be a mapping of lists, e.g. words: {{gadget: [phone, laptop]}}.")
    for key, values in own.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"Suite {path}: words.{key} must be a list of words, e.g. {key}: [one, two].")
        odd = [word for word in values if word is None or isinstance(word, (bool, dict, list))]
        if odd:
            raise ConfigError(f"Suite {path}: words.{key} holds {odd[0]!r}, which YAML read as no word: quote it.")
        words[str(key)] = [str(word) for word in values]
    tests = [_parse_test(t, f"Suite {path}, test {i + 1}") for i, t in enumerate(raw["tests"])]
    names = [t.name for t in tests]
    if len(set(names)) < len(names):
        raise ConfigError(f"Suite {path}: test '{next(n for n in names if names.count(n) > 1)}' is named twice.")
    name = str(raw.get("name") or path.stem)
    if not re.fullmatch(r"[\w.-]+", name):
        raise ConfigError(f"Suite {path}: name {name!r} names its results file: use letters, digits, '.', '_', '-'.")
    result = Suite(
        name=name,
        tests=tests,
        labels=_labels(raw.get("labels", []), f"Suite {path}"),
        words=words,
        description=str(raw.get("description", "")),
        split=str(raw.get("split", "validation")),
        seed=_seed(raw.get("seed", 0), f"Suite {path}"),
        n=_count(raw.get("n", 300), "n", f"Suite {path}"),
        examples=_count(raw.get("examples", 10), "examples", f"Suite {path}"),
        path=str(path),
    )
    _check_placeholders(result)
    return result


def _templates(test: BehaviorTest) -> list[str]:
    return [case.template for case in test.cases] + ([test.phrase] if test.phrase else [])


def _check_template(template: str, where: str) -> None:
    """A template's fields must be plain ``{name}`` placeholders: no ``{}``, format spec or conversion."""
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)]
    except ValueError as exc:
        raise ConfigError(
            f"{where}: template {template!r} is not valid ({exc}); write a brace as {{{{ or }}}}."
        ) from None
    for name, spec, conversion in fields:
        if name is not None and (not name.isidentifier() or spec or conversion):
            raise ConfigError(
                f"{where}: template {template!r} has the field {{{name}}}: use plain {{word_list}} names."
            )


def _check_placeholders(suite: Suite) -> None:
    for test in suite.tests:
        for template in _templates(test):
            _check_template(template, f"Suite {suite.path}, test '{test.name}'")
            for name in placeholders(template):
                if not suite.words.get(name):
                    raise ConfigError(
                        f"Suite {suite.path}, test '{test.name}': placeholder {{{name}}} has no word list. Add "
                        f"words: {{{name}: [...]}} to the suite, or use one of: {', '.join(sorted(suite.words))}."
                    )


def check_labels(suite: Suite, label_names) -> None:
    """Refuse a suite that names labels the model does not have (one line: which test, which label, the model's)."""
    have = set(label_names)
    named = [("suite labels", label) for label in suite.labels]
    for test in suite.tests:
        named += [(f"test '{test.name}'", label) for label in [c.label for c in test.cases] + test.labels]
        named += [(f"test '{test.name}'", test.expect_label)] if test.expect_label else []
    for where, label in named:
        if label not in have:
            raise ConfigError(
                f"Suite {suite.path}, {where}: label '{label}' is not one of the run's labels "
                f"({', '.join(map(str, label_names))}). This suite is for another task, or its labels are named "
                "differently: edit the suite's labels."
            )


# --------------------------------------------------------------------------------------------------
# Making the texts: templates filled, real texts perturbed


def _rng(suite: Suite, test: BehaviorTest, index: int = 0) -> np.random.Generator:
    """The generator of one test (and one text of it): seeded by the suite's seed, the test's name and the index."""
    return np.random.default_rng([suite.seed, zlib.crc32(test.name.encode()), index])


def fill(template: str, words: dict[str, list[str]], count: int, rng: np.random.Generator) -> list[str]:
    """Up to ``count`` distinct texts from a template, each ``{placeholder}`` filled from its word list: every
    combination when there are no more than ``count``, else a seeded sample of them.

    Example:
        >>> fill("a {x} {y}", {"x": ["red", "blue"], "y": ["car"]}, 5, np.random.default_rng(0))
        ['a red car', 'a blue car']
    """
    names = placeholders(template)
    lists = [words[name] for name in names]
    total = int(np.prod([len(values) for values in lists])) if names else 1
    if total <= count:
        choices = list(itertools.product(*lists))
    else:
        picks = rng.choice(total, size=count, replace=False)
        choices = []
        for pick in picks:  # a mixed-radix number: one digit per placeholder
            digits = []
            for values in reversed(lists):
                pick, digit = divmod(int(pick), len(values))
                digits.append(values[digit])
            choices.append(tuple(reversed(digits)))
    return list(dict.fromkeys(template.format(**dict(zip(names, choice, strict=True))) for choice in choices))


class Perturber:
    """Applies one test's perturbation to a text, seeded per text; returns None where it does not apply (a text
    with no name to change, no number, nothing to strip)."""

    def __init__(self, test: BehaviorTest, words: dict[str, list[str]]):
        self.test, self.words = test, words
        self._augmenter = self._nlpaug(test.perturb)

    @staticmethod
    def _nlpaug(kind: str):
        if kind == "typos":  # two adjacent characters swapped in one word, as CheckList's add_typos
            from nlpaug.augmenter.char import RandomCharAug

            return RandomCharAug(action="swap", aug_char_min=1, aug_char_max=1, aug_word_min=1, aug_word_max=1)
        if kind == "keyboard":  # one character replaced by a neighbour on the keyboard
            from nlpaug.augmenter.char import KeyboardAug

            return KeyboardAug(
                aug_char_min=1, aug_char_max=1, aug_word_min=1, aug_word_max=1, include_special_char=False,
                include_numeric=False, include_upper_case=False,
            )  # fmt: skip
        return None

    def __call__(self, text: str, rng: np.random.Generator) -> str | None:
        kind = self.test.perturb
        text = text.rstrip()
        if self._augmenter is not None:
            changed = _typo_in_one_word(text, self._augmenter, rng)
        elif kind in SWAP_LISTS:
            changed = swap_words(text, [self.words[name] for name in SWAP_LISTS[kind]], rng)
        elif kind == "contractions":
            changed = swap_words(text, [entry.split("|") for entry in self.words["contractions"]], rng)
        elif kind in PHRASE_PERTURBATIONS:
            phrase = fill(self.test.phrase, self.words, 1, rng)[0]
            changed = f"{text} {phrase}" if kind == "append" else f"{phrase} {text}"
        elif kind == "punctuation":  # strip the final punctuation, or add a full stop where there is none
            changed = _END_PUNCTUATION.sub("", text) if _END_PUNCTUATION.search(text) else f"{text}."
        elif kind == "lowercase":
            changed = text.lower()
        elif kind == "numbers":
            changed = _NUMBER.sub(lambda m: _other_number(int(m.group()), rng), text)
        else:  # synonym: one word for a WordNet synonym, EDA's operation (workbench.augment)
            changed = " ".join(synonym_replacement(text.split(), 1, rng))
        return changed if changed and changed.strip() != text.strip() else None


def _typo_in_one_word(text: str, augmenter, rng: np.random.Generator) -> str | None:
    """nlpaug's character augmenter on one word of four or more letters, drawn by ``rng``; the rest of the text is
    left as it was (given the whole text, nlpaug re-spaces punctuation: "is n't" became "is n ' t")."""
    words = text.split(" ")
    candidates = [i for i, word in enumerate(words) if len(word) >= 4 and word.isalpha()]
    if not candidates:
        return None
    i = candidates[int(rng.integers(len(candidates)))]
    with seeded_globals(int(rng.integers(2**31))):
        changed = augmenter.augment(words[i])
    words[i] = changed[0] if isinstance(changed, list) else changed
    return " ".join(words)


def swap_words(text: str, groups: list[list[str]], rng: np.random.Generator) -> str:
    """Each occurrence (whole words, any case) of a group's member replaced by another member of its group, drawn
    by ``rng`` once per form, in the case of what it replaces; a name list is one group, contractions one group per
    form (``"is not|isn't|is n't"``).

    nlpaug's ``ReservedAug`` does the same for plain words, but it garbles apostrophes ("I'm" became
    "innnnn ' nnnnnm") and re-spaces punctuation, which would test the tokenizer, not the model.

    Example:
        >>> swap_words("Anna met Tom in Rome.", [["Anna", "Maria"], ["Rome", "Oslo"]], np.random.default_rng(0))
        'Maria met Tom in Oslo.'
    """
    members = {form.lower(): group for group in groups for form in group}
    if not members:
        return text
    alternation = "|".join(re.escape(form) for form in sorted(members, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w'])(?:{alternation})(?![\w'])", re.IGNORECASE)

    chosen: dict[str, str] = {}  # one replacement per form: "John ... John" becomes "Lisa ... Lisa"

    def other(match: re.Match) -> str:
        found = match.group()
        if found.lower() not in chosen:
            options = [form for form in members[found.lower()] if form.lower() != found.lower()]
            chosen[found.lower()] = options[int(rng.integers(len(options)))]
        choice = chosen[found.lower()]
        if found.islower():
            return choice.lower()
        return choice[:1].upper() + choice[1:] if found[:1].isupper() else choice

    return pattern.sub(other, text)


def _other_number(number: int, rng: np.random.Generator) -> str:
    """A different number within 20% of ``number`` (CheckList's change_number)."""
    low, high = max(1, int(number * 0.8)), max(int(number * 1.2), number + 2)
    options = [value for value in range(low, high + 1) if value != number]
    return str(options[int(rng.integers(len(options)))])


def make_cases(suite: Suite, test: BehaviorTest, texts: list[str], labels: list[str]) -> list[dict]:
    """The texts of one test: ``{"text", "expected"}`` for an mft; ``{"original", "perturbed"}`` for inv and dir,
    from ``texts`` (a split, with its true ``labels``) in a seeded order, keeping those the perturbation changes.

    Example:
        >>> suite = load_suite("sentiment")
        >>> len(make_cases(suite, suite.tests[0], [], [])) <= suite.n
        True
    """
    count = test.n or suite.n
    rng = _rng(suite, test)
    if test.type == "mft":
        per_case = max(1, count // len(test.cases))
        return [
            {"text": text, "expected": case.label}
            for case in test.cases
            for text in fill(case.template, suite.words, per_case, rng)
        ]
    perturber = Perturber(test, suite.words)
    rows = []
    for index in rng.permutation(len(texts)):
        if test.labels and labels[index] not in test.labels:
            continue
        changed = perturber(texts[index], _rng(suite, test, int(index) + 1))
        if changed is not None:
            rows.append({"original": texts[index], "perturbed": changed, "index": int(index)})
            if len(rows) == count:
                break
    return rows


# --------------------------------------------------------------------------------------------------
# Running a suite and judging the answers


def judge(test: BehaviorTest, rows: list[dict], proba: dict[str, np.ndarray], predicted: dict, names: list) -> dict:
    """Pass or fail for each of a test's rows, given each text's probabilities ``(K,)`` and predicted label (a list
    of labels for a multi-label model); returns the test's record: counts, failure rate and the failing examples,
    worst first."""
    judged, label_changes = [], 0
    for row in rows:
        if test.type == "mft":
            answer, p = predicted[row["text"]], float(proba[row["text"]][names.index(row["expected"])])
            failed = row["expected"] not in (answer if isinstance(answer, list) else [answer])
            judged.append((failed, p, {**row, "prediction": answer, "probability": p}))
            continue
        before, after = proba[row["original"]], proba[row["perturbed"]]
        answers = {"prediction": predicted[row["perturbed"]], "original_prediction": predicted[row["original"]]}
        if test.type == "inv":
            top = int(np.argmax(before))
            change = float(after[top] - before[top])
            relabelled = answers["prediction"] != answers["original_prediction"]
            label_changes += relabelled
            failed = relabelled and abs(change) > test.tolerance
            judged.append((failed, -abs(change), {**row, **answers, "change": change}))
        else:
            column = names.index(test.expect_label)
            change = float(after[column] - before[column])
            wrong = change if test.must_not == "rise" else -change
            judged.append((wrong > test.tolerance, -wrong, {**row, **answers, "change": change}))
    failing = sorted((item for item in judged if item[0]), key=lambda item: item[1])
    return {
        "name": test.name,
        "type": test.type,
        "capability": test.capability,
        "description": test.description,
        "n": len(judged),
        "failures": len(failing),
        "failure_rate": len(failing) / len(judged) if judged else None,
        # inv: every changed label, however little its probability moved; a model whose probabilities sit near 0.5
        # changes labels that the tolerance forgives (a 16-shot SetFit model: 22% of typos against 2% failures)
        "label_changes": label_changes if test.type == "inv" else None,
        "examples": [item[2] for item in failing],
    }


def check_behavior(
    suite: Suite | str | Path,
    predict_proba: Callable[[list[str]], np.ndarray],
    label_names: Sequence[str],
    texts: Sequence[str] = (),
    labels: Sequence[str] = (),
    *,
    multi_label: bool = False,
    thresholds: np.ndarray | None = None,
) -> dict:
    """Run a suite on any classifier: a function from texts to probabilities ``(N, K)`` over ``label_names``.

    Args:
        suite: a :class:`Suite`, a suite file or a shipped suite's name.
        predict_proba: called once, with every text of every test (deduplicated).
        label_names: the K labels, in the order of the probabilities' columns.
        texts, labels: the real texts invariance and directional tests perturb, and their true labels.
        multi_label, thresholds: a multi-label classifier's decision rule (:func:`workbench.metrics.labels_from_proba`).

    Returns:
        ``{"suite", "seed", "labels", "failure_rate", "tests": [...]}`` (see :func:`run_suite`).

    Example:
        >>> always_positive = lambda texts: np.tile([0.2, 0.8], (len(texts), 1))
        >>> labels = ["negative", "positive"]
        >>> result = check_behavior("sentiment", always_positive, labels, ["a fine film ."], ["positive"])
        >>> rates = failure_table(result).set_index("test")["failure_rate"]
        >>> float(rates["Negated positive"]), float(rates["Negated negative"]), float(rates["Typos"])
        (1.0, 0.0, 0.0)
    """
    suite = suite if isinstance(suite, Suite) else load_suite(suite)
    names = [str(name) for name in label_names]
    check_labels(suite, names)
    if len(labels) != len(texts):
        raise WorkbenchError(f"check_behavior: {len(texts)} texts but {len(labels)} labels; give one label a text.")
    cases = {test.name: make_cases(suite, test, list(texts), list(labels)) for test in suite.tests}
    every = list(dict.fromkeys(t for rows in cases.values() for row in rows for t in _texts_of(row)))
    proba = np.asarray(predict_proba(every)) if every else np.zeros((0, len(names)))
    answers = labels_from_proba(proba, names, multi_label=multi_label, thresholds=thresholds) if every else []
    by_text = dict(zip(every, proba, strict=True))
    predicted = dict(zip(every, answers, strict=True))
    tests = [judge(test, cases[test.name], by_text, predicted, names) for test in suite.tests]
    for record in tests:
        record["examples"] = record["examples"][: suite.examples]
    rates = [t["failure_rate"] for t in tests if t["failure_rate"] is not None]
    return {
        "suite": suite.name,
        "suite_file": suite.path,
        "seed": suite.seed,
        "labels": names,
        "failure_rate": float(np.mean(rates)) if rates else None,
        "tests": tests,
    }


def run_suite(
    suite: Suite | str | Path,
    run: Run | str | Path,
    *,
    split: str | None = None,
    out: str | Path | None = None,
    model: TextClassificationModel | None = None,
) -> dict:
    """Run a suite on a run's best model (:func:`check_behavior`) and write the results as JSON.

    Args:
        suite: a :class:`Suite`, a suite YAML file or a shipped suite's name.
        run: a finished run (its ``best/`` model and its data config, whose ``split`` gives the real texts).
        split: ``validation`` or ``test`` (default: the suite's).
        out: the folder for ``<suite>.json`` (``<suite>.<split>.json`` on another split than the suite's; default:
            the run's ``behavior/`` folder).
        model: the run's model when it is already loaded.

    Returns:
        ``{"suite", "run", "split", "seed", "labels", "failure_rate", "tests": [{name, type, capability, n,
        failures, failure_rate, examples}], "file"}``; the same suite, seed and run give the same texts and numbers.
        Nothing is written when the suite does not fit the run (an error names the label).

    Example:
        >>> result = run_suite("questions", "runs/trec/version_0")  # doctest: +SKIP
        >>> failure_table(result)  # doctest: +SKIP
    """
    suite = suite if isinstance(suite, Suite) else load_suite(suite)
    run = run if isinstance(run, Run) else load_run(run)
    model = model or TextClassificationModel.from_pretrained(run.model_dir)
    check_labels(suite, model.label_names)
    split = split or suite.split
    texts, labels = _split_texts(run, model, split)
    checked = check_behavior(
        suite,
        model.predict_proba,
        model.label_names,
        texts,
        labels,
        multi_label=model.multi_label,
        thresholds=model.thresholds if model.multi_label else None,
    )
    result = {"suite": suite.name, "suite_file": suite.path, "run": str(run.path), "split": split, **checked}
    folder = Path(out) if out else RunDir(run.path) / RunDir.BEHAVIOR
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / (f"{suite.name}.json" if split == suite.split else f"{suite.name}.{split}.json")
    write_atomic(file, json.dumps(result, indent=2))
    return {**result, "file": str(file)}


def _texts_of(row: dict) -> list[str]:
    return [row["text"]] if "text" in row else [row["original"], row["perturbed"]]


def _split_texts(run: Run, model: TextClassificationModel, split: str) -> tuple[list[str], list[str]]:
    """The texts of the run's split and their true labels (names; a multi-label text's first label)."""
    dataset = run_split(run, model, split)
    names = [str(name) for name in model.label_names]
    labels = [names[int(np.argmax(y))] if np.ndim(y) else names[int(y)] for y in dataset.labels]
    return list(dataset.texts), labels


# --------------------------------------------------------------------------------------------------
# Reading results back


def read_results(run_dir: str | Path) -> dict[str, dict]:
    """Every suite's results a run has in its ``behavior/`` folder, by suite name."""
    folder = RunDir(run_dir) / RunDir.BEHAVIOR
    return {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}


def failure_table(result: dict) -> pd.DataFrame:
    """One row per test: type, capability, test, texts, failures, failure rate and (invariance tests) how many
    labels changed at all, in the suite's order."""
    columns = ["type", "capability", "name", "n", "failures", "failure_rate", "label_changes"]
    table = pd.DataFrame([{k: t[k] for k in columns} for t in result["tests"]], columns=columns)
    table["failure_rate"] = table["failure_rate"].astype(float)  # NaN: a test that no text applied to
    table["label_changes"] = table["label_changes"].astype("Int64")  # counts; <NA> where not an invariance test
    return table.rename(columns={"name": "test"})


def summary_by_type(result: dict) -> pd.DataFrame:
    """Mean failure rate by test type and capability (the CheckList matrix), tests counted equally."""
    table = failure_table(result)
    return table.pivot_table(index="capability", columns="type", values="failure_rate", aggfunc="mean")


def compare(results: dict[str, dict]) -> pd.DataFrame:
    """The same suite on several runs side by side: one row per test, one failure-rate column per run name."""
    tables = [failure_table(r).set_index(["type", "capability", "test"])["failure_rate"].rename(name)
              for name, r in results.items()]  # fmt: skip
    return pd.concat(tables, axis=1).reset_index()


def worst_examples(result: dict, test: str | None = None, k: int = 5) -> pd.DataFrame:
    """The failing examples, worst first: of one test, or the first ``k`` of each test."""
    rows = []
    for record in result["tests"]:
        if test is None or record["name"] == test:
            rows += [{"test": record["name"], "type": record["type"], **example} for example in record["examples"][:k]]
    if test is not None and not any(r["name"] == test for r in result["tests"]):
        names = ", ".join(record["name"] for record in result["tests"])
        raise WorkbenchError(f"No test '{test}' in suite {result['suite']}: choose one of {names}.")
    return pd.DataFrame(rows).drop(columns=["index"], errors="ignore")
