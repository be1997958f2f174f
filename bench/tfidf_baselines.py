"""TF-IDF + logistic regression baselines: the floor every transformer run should clear.

Trains scikit-learn's TF-IDF (word 1-2 grams, sublinear tf) with logistic regression on three catalog
datasets and writes one JSON file with the scores, sizes, fit times and the sklearn version:

- sst2: train -> validation (the GLUE test split has no labels), accuracy and macro-F1;
- trec: train -> test, 6 coarse classes, accuracy and macro-F1;
- reuters: ModApte R90 train -> test, one-vs-rest over the 90 train categories, subset accuracy,
  micro-F1 and macro-F1.

Run from the repository root (about a minute on 2 CPU cores)::

    python bench/tfidf_baselines.py --out bench/results/tfidf_baselines.json

C is fixed at 10 for all three; nothing was tuned on a test split. A one-off 3-fold cross-validation
on each *train* split over C in {1, 4, 10, 30} showed C=1 underfitting everywhere and 10 vs 30 within
0.005 accuracy on sst2 and trec. On reuters C=30 scored about 0.02 micro-F1 higher in that CV; C=10 is
kept because it is the classic setting for one-vs-rest logistic regression on Reuters. With a 0.5
threshold the Reuters model is precise but misses rare topics (micro precision ~0.95, recall ~0.69),
which is why its macro-F1 is low.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import sklearn
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import MultiLabelBinarizer

# Lets the script run from a plain checkout, without installing workbench first.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workbench.catalog import list_datasets, load_split

C = 10.0
VECTORIZER = {"ngram_range": (1, 2), "sublinear_tf": True}
# (dataset, train split, evaluation split)
RUNS = [("sst2", "train", "validation"), ("trec", "train", "test"), ("reuters", "train", "test")]


def single_label_baseline(name: str, train_split: str, eval_split: str) -> dict:
    """Fit TF-IDF + multinomial logistic regression and score it on the evaluation split.

    Args:
        name: Catalog dataset name with str labels, e.g. ``"trec"``.
        train_split: Split to fit on.
        eval_split: Split to score on.

    Returns:
        Accuracy, macro-F1, sizes and fit seconds, e.g. ``{"accuracy": 0.9, "macro_f1": 0.89, ...}``.
    """
    train, test = load_split(name, train_split), load_split(name, eval_split)
    start = time.perf_counter()
    vectorizer = TfidfVectorizer(**VECTORIZER)
    model = LogisticRegression(C=C, max_iter=2000)
    model.fit(vectorizer.fit_transform(train["text"]), train["label"])
    fit_seconds = time.perf_counter() - start
    predicted = model.predict(vectorizer.transform(test["text"]))
    return {
        "train_split": train_split,
        "eval_split": eval_split,
        "train_size": len(train),
        "eval_size": len(test),
        "num_classes": len(model.classes_),
        "accuracy": accuracy_score(test["label"], predicted),
        "macro_f1": f1_score(test["label"], predicted, average="macro"),
        "fit_seconds": fit_seconds,
    }


def multi_label_baseline(name: str, train_split: str, eval_split: str) -> dict:
    """Fit TF-IDF + one-vs-rest logistic regression over the train label set and score it.

    Args:
        name: Catalog dataset name with list[str] labels, e.g. ``"reuters"``.
        train_split: Split to fit on; its labels define the classes.
        eval_split: Split to score on.

    Returns:
        Subset accuracy, micro-F1, macro-F1, sizes and fit seconds.
    """
    train, test = load_split(name, train_split), load_split(name, eval_split)
    binarizer = MultiLabelBinarizer()
    y_train = binarizer.fit_transform(train["label"])  # (n_train, n_classes)
    y_test = binarizer.transform(test["label"])  # labels unseen in train would be dropped; R90 has none
    start = time.perf_counter()
    vectorizer = TfidfVectorizer(**VECTORIZER)
    # liblinear: each of the 90 binary problems is small, and it is the classic solver for this setup.
    model = OneVsRestClassifier(LogisticRegression(C=C, solver="liblinear"))
    model.fit(vectorizer.fit_transform(train["text"]), y_train)
    fit_seconds = time.perf_counter() - start
    predicted = model.predict(vectorizer.transform(test["text"]))
    return {
        "train_split": train_split,
        "eval_split": eval_split,
        "train_size": len(train),
        "eval_size": len(test),
        "num_classes": len(binarizer.classes_),
        "subset_accuracy": accuracy_score(y_test, predicted),
        "micro_f1": f1_score(y_test, predicted, average="micro", zero_division=0),
        "macro_f1": f1_score(y_test, predicted, average="macro", zero_division=0),
        "fit_seconds": fit_seconds,
    }


def main(argv: list[str] | None = None) -> dict:
    """Run every baseline, print a table and write the JSON results.

    Args:
        argv: Command-line arguments; None reads ``sys.argv``.

    Returns:
        The results that were written.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out", type=Path, default=Path("bench/results/tfidf_baselines.json"), help="JSON file to write"
    )
    args = parser.parse_args(argv)

    multi_label = {entry.name: entry.multi_label for entry in list_datasets()}
    results = {}
    for name, train_split, eval_split in RUNS:
        run = multi_label_baseline if multi_label[name] else single_label_baseline
        results[name] = run(name, train_split, eval_split)

    print(f"{'dataset':<8} {'train':>6} {'eval':>6} {'acc':>6} {'macroF1':>7} {'microF1':>7} {'fit s':>6}")
    for name, row in results.items():
        accuracy = row.get("accuracy", row.get("subset_accuracy"))
        micro = f"{row['micro_f1']:.4f}" if "micro_f1" in row else "-"
        print(
            f"{name:<8} {row['train_size']:>6} {row['eval_size']:>6} {accuracy:>6.4f} {row['macro_f1']:>7.4f} "
            f"{micro:>7} {row['fit_seconds']:>6.1f}"
        )
    print("(reuters: acc is subset accuracy)")

    report = {
        "command": shlex.join(["python", *sys.argv]) if argv is None else shlex.join(["python", __file__, *argv]),
        "sklearn_version": sklearn.__version__,
        "python_version": platform.python_version(),
        "model": {"vectorizer": "TfidfVectorizer", **VECTORIZER, "classifier": "LogisticRegression", "C": C},
        "datasets": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
