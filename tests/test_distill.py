"""Distillation: a tiny teacher (48 wide) taught to a tiny student (32 wide) through soft targets, the teacher-output
cache, ensembles, resume, and bad input."""

import json
import random

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import Interrupt
from transformers import AutoModel, BertConfig

from workbench import load_config, train
from workbench.cli import main
from workbench.distill import distill, load_teacher, soft_targets, teacher_logits, teacher_states
from workbench.losses import DistillationLoss
from workbench.metrics import proba_from_logits
from workbench.models import TextClassificationModel

POSITIVE = ["good", "great", "fine", "wonderful", "nice", "superb"]
NEGATIVE = ["bad", "awful", "poor", "terrible", "dull", "horrid"]
FILLER = ["the", "film", "story", "cast", "was", "a", "plot", "movie", "acting", "quite", "really", "scenes"]


def sentences(words: list[str], label: str, n: int, rng: random.Random) -> list[tuple[str, str]]:
    """``n`` texts of filler words around one of ``words`` (which decides ``label``)."""
    rows = []
    for _ in range(n):
        text = rng.sample(FILLER, 4)
        text.insert(rng.randrange(5), rng.choice(words))
        rows.append((" ".join(text), label))
    return rows


@pytest.fixture(scope="module")
def task(tmp_path_factory, tokenizer):
    """Files of the synthetic task and a tiny teacher run trained on all of it.

    The teacher learns every sentiment word; the student's labelled split holds only "good" and "bad", and the
    unlabelled file the other words, so only the teacher's soft targets on it teach the student those words, which
    the validation split is full of.
    """
    root = tmp_path_factory.mktemp("distill")
    rng = random.Random(0)
    write = lambda name, rows: (
        pd.DataFrame(rows, columns=["text", "label"]).to_csv(root / name, index=False) or str(root / name)
    )
    every = sentences(POSITIVE, "pos", 60, rng) + sentences(NEGATIVE, "neg", 60, rng)
    files = {
        "all": write("all.csv", every),
        "val": write("val.csv", sentences(POSITIVE[2:], "pos", 24, rng) + sentences(NEGATIVE[2:], "neg", 24, rng)),
        "labelled": write("labelled.csv", sentences(["good"], "pos", 24, rng) + sentences(["bad"], "neg", 24, rng)),
        "unlabelled": write(
            "unlabelled.csv", sentences(POSITIVE[1:], "?", 48, rng) + sentences(NEGATIVE[1:], "?", 48, rng)
        ),
        "topics": write("topics.csv", sentences(["sport"], "sport", 8, rng) + sentences(["art"], "art", 8, rng)),
    }
    torch.manual_seed(0)  # a backbone wider than the student's (48 against 32)
    wide = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=96,
        max_position_embeddings=130,
    )
    AutoModel.from_config(wide).save_pretrained(root / "wide")
    tokenizer.save_pretrained(root / "wide")
    teachers = []
    for seed in (0, 1):
        config = load_config(
            None,
            {
                "data.train_file": files["all"],
                "data.val_file": files["val"],
                "model.backbone": str(root / "wide"),
                "model.freeze_embeddings": False,
                "train.epochs": 6,
                "train.lr": 3e-3,
                "train.seed": seed,
                "run.name": f"teacher{seed}",
                "run.root": str(root / "runs"),
            },
        )
        result = train(config)
        assert result.metrics["validation"]["accuracy"] >= 0.95  # the teacher knows every word
        teachers.append(str(result.run_dir))
    return files | {"teachers": teachers, "root": root}


def student_config(task, tiny_bert, tmp_path, **overrides):
    values = {
        "data.train_file": task["labelled"],
        "data.val_file": task["val"],
        "model.backbone": tiny_bert,
        "model.freeze_embeddings": False,
        "train.epochs": 6,
        "train.lr": 3e-3,
        "train.log_every": 1,
        "run.root": str(tmp_path / "runs"),
        "distill.teacher": task["teachers"][:1],
        "distill.unlabelled_file": task["unlabelled"],
    }
    return load_config(None, values | overrides)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))


def test_student_learns_the_teachers_words_that_hard_labels_never_show(task, tiny_bert, tmp_path):
    """Distilled through the unlabelled texts, the student agrees with the teacher on words its labelled split
    lacks; the same student on the hard labels alone does not. The loss falls; metrics.json records the teacher."""
    config = student_config(task, tiny_bert, tmp_path, **{"run.name": "student"})
    student = distill(config)
    figures = student.metrics["distill"]
    assert figures["transfer_set"] == {"train": 48, "augmented": 0, "unlabelled": 96}
    assert figures["teachers"] == task["teachers"][:1] and figures["teacher_cache_hits"] == 0
    assert figures["validation"]["teacher_accuracy"] >= 0.95
    saved = json.loads((student.run_dir / "metrics.json").read_text())
    assert saved["distill"]["validation"] == figures["validation"]
    assert figures["validation"]["student_accuracy"] == saved["validation"]["accuracy"]

    hard = train(student_config(task, tiny_bert, tmp_path, **{"run.name": "hard", "distill.teacher": []}))
    teacher = load_teacher(task["teachers"][0]).model
    val = pd.read_csv(task["val"]).text.tolist()
    agreement = lambda model: np.mean(np.array(model.predict(val)) == np.array(teacher.predict(val)))
    assert figures["validation"]["agreement"] == pytest.approx(agreement(student.model))
    assert agreement(student.model) >= 0.9
    assert agreement(student.model) > agreement(hard.model) + 0.2  # hard labels alone: near chance on new words

    losses = [
        r["loss"] for r in map(json.loads, (student.run_dir / "log.jsonl").read_text().splitlines()) if "loss" in r
    ]
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])


def test_a_second_student_costs_no_teacher_time(task, tiny_bert, tmp_path):
    first = distill(student_config(task, tiny_bert, tmp_path, **{"train.epochs": 1}))
    cached = sorted((tmp_path / "cache" / "teacher").glob("*.npy"))
    assert len(cached) == 2  # the transfer set, and the validation split the figures are measured on
    second = distill(student_config(task, tiny_bert, tmp_path, **{"train.epochs": 1, "model.pooling": "cls"}))
    assert first.metrics["distill"]["teacher_cache_hits"] == 0 and second.metrics["distill"]["teacher_cache_hits"] == 1
    assert sorted((tmp_path / "cache" / "teacher").glob("*.npy")) == cached
    texts = pd.read_csv(task["labelled"]).text.tolist()
    logits, hit = teacher_logits(load_teacher(task["teachers"][0]), texts)
    assert not hit and logits.shape == (48, 2)  # other texts, another key


def test_an_ensemble_teacher_averages_its_members(task, tiny_bert, tmp_path):
    texts = pd.read_csv(task["unlabelled"]).text.tolist()
    members = [load_teacher(path) for path in task["teachers"]]
    logits = [teacher_logits(member, texts)[0] for member in members]
    assert not np.allclose(logits[0], logits[1])  # two seeds, two teachers
    expected = (proba_from_logits(logits[0], 2.0) + proba_from_logits(logits[1], 2.0)) / 2
    assert soft_targets(logits, 2.0, multi_label=False) == pytest.approx(expected)
    result = distill(
        student_config(task, tiny_bert, tmp_path, **{"train.epochs": 1, "distill.teacher": task["teachers"]})
    )
    assert result.metrics["distill"]["teachers"] == task["teachers"]
    transfer = [f["soft_targets"] for f in _transfer_features(task, tiny_bert, tmp_path)]
    assert np.array(transfer[48:]) == pytest.approx(expected, abs=1e-6)  # the unlabelled texts follow the 48 labelled


def _transfer_features(task, tiny_bert, tmp_path):
    from workbench.data import TextDataModule
    from workbench.distill import transfer_set

    config = student_config(task, tiny_bert, tmp_path, **{"distill.teacher": task["teachers"]})
    dm = TextDataModule(config=config.data, model_name=tiny_bert).setup()
    transfer, _ = transfer_set(dm, config, [load_teacher(path) for path in task["teachers"]])
    return transfer.features


def test_augmented_copies_join_the_transfer_set(task, tiny_bert, tmp_path):
    options = {"train.epochs": 1, "distill.transfer_copies": 2}
    result = distill(student_config(task, tiny_bert, tmp_path, **options))
    assert result.metrics["distill"]["transfer_set"] == {"train": 48, "augmented": 96, "unlabelled": 96}
    assert result.metrics["train"]["examples"] == 48 + 96 + 96
    assert result.metrics["distill"]["teacher_cache_hits"] == 0
    other_seed = distill(student_config(task, tiny_bert, tmp_path, **options, **{"train.seed": 7}))
    assert other_seed.metrics["distill"]["teacher_cache_hits"] == 1  # the same copies: the teacher labels them once
    other_copies = distill(student_config(task, tiny_bert, tmp_path, **options, **{"distill.transfer_seed": 7}))
    assert other_copies.metrics["distill"]["teacher_cache_hits"] == 0  # other copies, labelled anew


def test_the_hidden_state_loss_is_the_distance_of_unit_vectors():
    teacher = torch.tensor([[[3.0, 0.0]], [[0.0, 2.0]]])  # two texts, one layer, 2 wide
    loss = DistillationLoss(torch.nn.CrossEntropyLoss(), 1.0, 1.0, hidden_weight=1.0, teacher_hidden=teacher)
    same, across = torch.tensor([[[5.0, 0.0]]]), torch.tensor([[[0.0, 1.0]]])
    assert float(loss.hidden(same, torch.tensor([0]))) == pytest.approx(0.0, abs=1e-6)
    assert float(loss.hidden(across, torch.tensor([0]))) == pytest.approx(2.0)  # at right angles
    assert float(loss.hidden(-same, torch.tensor([0]))) == pytest.approx(4.0)  # opposite
    assert float(loss.hidden(torch.cat([same, across]), torch.tensor([0, 0]))) == pytest.approx(1.0)  # mean


def _hidden_distance(model, projection_state, teacher, texts, layers) -> float:
    """The mean hidden-state loss of a student with these projection weights against the teacher's states."""
    model.match_hidden(layers, teacher.model.backbone.config.hidden_size)
    model.distill_projection.load_state_dict(projection_state)
    padded = model.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        projected = model(padded["input_ids"], padded["attention_mask"], match_hidden=True)["projected"]
    states = torch.from_numpy(teacher_states(teacher, texts, [1, 2])[0])
    loss = DistillationLoss(torch.nn.CrossEntropyLoss(), 1.0, 1.0, hidden_weight=1.0, teacher_hidden=states)
    return float(loss.hidden(projected, torch.arange(len(texts))))


def test_hidden_states_are_matched_through_a_projection_the_saved_student_lacks(task, tiny_bert, tmp_path):
    """distill.match_layers: the student's layer means, projected to the teacher's width, move towards the
    teacher's; checkpoints keep the projection, the saved student does not, and the teacher's states are cached."""
    from safetensors.torch import load_file

    config = student_config(
        task,
        tiny_bert,
        tmp_path,
        **{"run.name": "hidden", "distill.match_layers": [1, 2], "distill.match_weight": 0.1},
    )
    result = distill(config)
    figures = result.metrics["distill"]
    assert figures["match_layers"] == {"teacher": [1, 2], "student": [1, 2]} and figures["match_weight"] == 0.1
    assert figures["validation"]["agreement"] >= 0.9  # the soft targets still teach
    checkpoint = load_file(str(result.run_dir / "last" / "model.safetensors"))
    projection = {k.split(".", 1)[1]: v for k, v in checkpoint.items() if k.startswith("distill_projection.")}
    assert projection["0.weight"].shape == (48, 32)  # student width 32 to teacher width 48
    saved = load_file(str(result.best_dir / "model.safetensors"))
    assert not any(k.startswith("distill_projection") for k in saved)
    assert TextClassificationModel.from_pretrained(result.run_dir / "last").distill_projection is None

    teacher = load_teacher(task["teachers"][0])
    texts = pd.read_csv(task["unlabelled"]).text.tolist()[:32]
    _, hit = teacher_states(teacher, texts, [1, 2])
    assert not hit and teacher_states(teacher, texts, [1, 2])[1]  # computed once, then read back
    untrained = TextClassificationModel(config.model, labels=["neg", "pos"])
    untrained.match_hidden([1, 2], 48, seed=config.train.seed)
    before = _hidden_distance(untrained, untrained.distill_projection.state_dict(), teacher, texts, [1, 2])
    after = _hidden_distance(
        TextClassificationModel.from_pretrained(result.best_dir), projection, teacher, texts, [1, 2]
    )
    assert after < 0.5 * before, (before, after)


@pytest.mark.parametrize("hidden", [False, True], ids=["soft", "soft+hidden"])
def test_resumed_distillation_gives_the_same_weights(task, tiny_bert, tmp_path, hidden):
    from safetensors.torch import load_file

    options = {"train.epochs": 2, "train.eval_every": 3, "train.keep_top_k": 10}
    if hidden:  # the projection is in the checkpoint, and a resumed run goes on with it
        options["distill.match_layers"] = [2]
    straight = distill(student_config(task, tiny_bert, tmp_path, **options, **{"run.name": "straight"}))
    cut = student_config(task, tiny_bert, tmp_path, **options, **{"run.name": "cut"})
    with pytest.raises(KeyboardInterrupt, match="resume with"):
        distill(cut, callbacks=[Interrupt(7)])
    resumed = distill(cut, resume=True)
    assert resumed.metrics["train"]["resumed_from_epoch"] > 0
    final_a = load_file(str(straight.run_dir / "last" / "model.safetensors"))
    final_b = load_file(str(resumed.run_dir / "last" / "model.safetensors"))
    assert any(name.startswith("distill_projection") for name in final_a) == hidden
    for name, tensor in final_a.items():
        assert torch.allclose(tensor, final_b[name], atol=1e-6), name


def test_the_cli_distils_and_reports(task, tiny_bert, tmp_path, capsys):
    code = main(
        [
            "distill",
            "--teacher",
            task["teachers"][0],
            f"data.train_file={task['labelled']}",
            f"data.val_file={task['val']}",
            f"model.backbone={tiny_bert}",
            "train.epochs=1",
            "run.name=cli",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "validation: teacher accuracy" in out and "agreement" in out
    assert (tmp_path / "runs" / "cli" / "version_0" / "metrics.json").exists()


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "not_a_run",
        "labels_differ",
        "temperature",
        "weight",
        "backbone_alias",
        "no_teacher",
        "unlabelled",
        "hidden_ensemble",
        "hidden_too_deep",
        "hidden_negative",
    ],
)
def test_bad_input_is_one_line_and_exit_2(task, tiny_bert, tmp_path, capsys, monkeypatch, case):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("WORKBENCH_MODELS", str(tmp_path / "no-models"))
    data = [f"data.train_file={task['labelled']}", f"data.val_file={task['val']}", f"model.backbone={tiny_bert}"]
    teacher = ["--teacher", task["teachers"][0]]
    argv, expected = {
        "missing": (["--teacher", str(tmp_path / "nowhere"), *data], "does not exist"),
        "not_a_run": (["--teacher", str(tmp_path / "empty"), *data], "not a finished run"),
        "labels_differ": (
            [
                *teacher,
                f"data.train_file={task['topics']}",
                f"data.val_file={task['topics']}",
                f"model.backbone={tiny_bert}",
            ],
            "label(s) ['art', 'sport'] that teacher",
        ),
        "temperature": ([*teacher, *data, "distill.temperature=0"], "distill.temperature=0.0 must be positive"),
        "weight": ([*teacher, *data, "distill.soft_weight=1.5"], "distill.soft_weight=1.5 must be in [0, 1]"),
        "backbone_alias": (["--teacher", "mpnet", *data], "`make mpnet`"),
        "no_teacher": (data, "No teacher"),
        "unlabelled": ([*teacher, *data, "distill.unlabelled_file=absent.csv"], "absent.csv does not exist"),
        "hidden_ensemble": (
            ["--teacher", *task["teachers"], *data, "distill.match_layers=[2]"],
            "matches one teacher's states, but 2 teachers",
        ),
        "hidden_too_deep": ([*teacher, *data, "distill.match_layers=[5]"], "has layers 0..2"),
        "hidden_negative": ([*teacher, *data, "distill.match_layers=[-1]"], "must be layer numbers"),
    }[case]
    assert main(["distill", *argv, "run.name=bad"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("workbench distill: error:") and expected in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "runs" / "bad").exists()  # no run folder left half-made
