"""Training: the run layout, shortcuts, early stopping, exact resume, optimizers, schedules, multi-label."""

import json
import math
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import Interrupt, Payload, long_text_files
from transformers import TrainerCallback

from workbench import TextClassificationModel, TextDataModule, Trainer, load_config
from workbench.errors import ConfigError
from workbench.runs import cpu_bf16_matrix_units
from workbench.text import TextProcessing
from workbench.trainer import choose_precision


def make(tiny_bert, files, **data_options):
    dm = TextDataModule(
        train_file=str(files["train"]), val_file=str(files["val"]), model_name=tiny_bert, batch_size=8, **data_options
    )
    model = TextClassificationModel(tiny_bert, num_classes=2, freeze_embeddings=False)
    return model, dm


def test_fit_learns_and_writes_the_run_directory(tiny_bert, sentiment_files):
    model, dm = make(tiny_bert, sentiment_files)
    result = Trainer(max_epochs=4, lr=2e-3, log_every=2, run_name="sent").fit(model, dm)
    run = result.run_dir
    assert run.as_posix().endswith("runs/sent/version_0")
    for name in ("config.yaml", "env.json", "labels.json", "metrics.json", "summary.md", "log.jsonl", "best", "last"):
        assert (run / name).exists(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["validation"]["accuracy"] == 1.0  # the words decide the label; a working loop learns it
    env = json.loads((run / "env.json").read_text())
    assert env["seed"] == 42 and env["packages"]["torch"]
    logs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert any("loss" in r for r in logs) and any("eval_accuracy" in r for r in logs)
    assert "lr: 0.002" in (run / "config.yaml").read_text()
    loaded = TextClassificationModel.load_from_checkpoint("checkpoints/best-model.ckpt")
    assert loaded.predict(["a good and great film", "a bad and awful film"]) == ["pos", "neg"]
    model, dm = make(tiny_bert, sentiment_files, max_length=64, truncation="tail")
    second = Trainer(max_epochs=1, run_name="sent").fit(model, dm)
    assert second.run_dir.name == "version_1"
    # the data's processing reached the model (use_data), and the run saved the model's own config
    assert model.processing == TextProcessing(max_length=64, truncation="tail")
    assert load_config(second.run_dir / "config.yaml").model == model.model_config
    assert TextClassificationModel.from_pretrained(second.run_dir).processing == model.processing


class CaptureArguments(TrainerCallback):
    """Keeps the TrainingArguments that transformers.Trainer actually trains with."""

    def on_train_begin(self, args, state, control, **kwargs):
        self.args = args


@pytest.mark.parametrize("precision", [16, "bf16"])
def test_gpu_and_precision_requests(tiny_bert, sentiment_files, precision):
    """Without CUDA: a GPU warning, then the CPU: fp16 falls back to 32-bit with a warning, bf16 autocast runs
    (warning where the CPU has no AMX, where it is slower). With CUDA: the GPU at the requested precision,
    silently (fp16 where the GPU lacks bf16, with a warning saying so), and transformers trains that way."""
    capture = CaptureArguments()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = Trainer(max_epochs=1, gpus=1, precision=precision, log_every_n_steps=50, callbacks=[capture])
    messages = [str(w.message) for w in caught if "GPU" in str(w.message) or "AMX" in str(w.message)]
    if not torch.cuda.is_available():
        assert any("A GPU was requested" in m for m in messages)
        if precision == 16:
            assert any("precision=16 needs a GPU" in m and "32-bit" in m for m in messages)
            expected = ("cpu", "32")
        else:
            no_amx = any("without bf16 matrix units (Intel AMX)" in m for m in messages)
            assert no_amx == (not cpu_bf16_matrix_units())
            expected = ("cpu", "bf16")
    elif precision == "bf16" and not torch.cuda.is_bf16_supported():
        assert messages == ["This GPU has no bf16 support: using fp16 mixed precision instead."]
        expected = ("cuda", "16")
    else:
        assert messages == []
        expected = ("cuda", str(precision))
    assert (trainer.device, trainer.precision) == expected

    result = trainer.fit(*make(tiny_bert, sentiment_files))
    args = capture.args
    assert (args.fp16, args.bf16, args.use_cpu) == (expected[1] == "16", expected[1] == "bf16", expected[0] == "cpu")
    env = json.loads((result.run_dir / "env.json").read_text())
    assert (env["device"], env["precision"]) == expected == (result.metrics["device"], result.metrics["precision"])
    assert env["precision_reason"] == "as set in train.precision"


def test_auto_precision_follows_width_and_hardware(tiny_bert, sentiment_files, monkeypatch):
    """train.precision=auto (the default): bf16 only for a backbone 768 or more wide on hardware with bf16 matrix
    units; the choice and its reason land in env.json. The tiny backbone is narrow, so it trains in 32."""
    import workbench.trainer as trainer_module

    for units, width, expected in [(True, 768, "bf16"), (True, 384, "32"), (False, 768, "32"), (True, None, "32")]:
        monkeypatch.setattr(trainer_module, "cpu_bf16_matrix_units", lambda units=units: units)
        precision, reason = choose_precision("auto", "cpu", width)
        assert precision == expected, (units, width)
        assert reason.startswith("auto: this CPU has " + ("bf16 matrix units (AMX)" if units else "no bf16"))
    assert choose_precision("32", "cpu", 768) == ("32", "as set in train.precision")
    monkeypatch.setattr(trainer_module, "cpu_bf16_matrix_units", lambda: True)
    result = Trainer(max_epochs=1).fit(*make(tiny_bert, sentiment_files))
    env = json.loads((result.run_dir / "env.json").read_text())
    assert env["precision"] == "32" and "below 768" in env["precision_reason"]


def test_early_stopping_stops(tiny_bert, sentiment_files):
    model, dm = make(tiny_bert, sentiment_files)
    result = Trainer(max_epochs=20, lr=1e-9, early_stopping_patience=2, eval_every=2).fit(model, dm)
    # lr=1e-9 never improves on the first evaluation (step 2); two more without improvement (4, 6) stop it
    assert result.metrics["train"]["optimizer_steps"] == 6  # of 20 epochs x 8 steps


@pytest.mark.parametrize("interrupt_at", [9, 14])  # 8 steps per epoch: after an epoch boundary and mid-epoch
def test_interrupted_training_resumes_exactly(tiny_bert, sentiment_files, interrupt_at):
    from safetensors.torch import load_file

    options = {"max_epochs": 2, "lr": 1e-3, "eval_every": 3, "keep_top_k": 10, "log_every": 1}
    straight = Trainer(run_name="straight", **options).fit(*make(tiny_bert, sentiment_files))
    with pytest.raises(KeyboardInterrupt, match="resume with"):
        Trainer(run_name="cut", callbacks=[Interrupt(interrupt_at)], **options).fit(*make(tiny_bert, sentiment_files))
    resumed = Trainer(run_name="cut", **options).fit(*make(tiny_bert, sentiment_files), resume=True)
    assert resumed.metrics["train"]["resumed_from_epoch"] > 0
    # The last checkpoint (step 16) holds the final weights, whichever checkpoint was best.
    final_a = load_file(str(straight.run_dir / "last" / "model.safetensors"))
    final_b = load_file(str(resumed.run_dir / "last" / "model.safetensors"))
    assert (straight.run_dir / "last").resolve().name == "checkpoint-16" == (resumed.run_dir / "last").resolve().name
    for name, tensor in final_a.items():
        assert torch.allclose(tensor, final_b[name], atol=1e-6), name

    def losses(run):
        logs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        return {r["step"]: r["loss"] for r in logs if "loss" in r and r["step"] > interrupt_at}

    assert losses(straight.run_dir) == pytest.approx(losses(resumed.run_dir), abs=1e-6)  # same batches, same order


def test_resume_without_checkpoint_is_an_error(tiny_bert, sentiment_files):
    from workbench.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="Nothing to resume"):
        Trainer(run_name="never").fit(*make(tiny_bert, sentiment_files), resume=True)


def test_save_only_model_drops_optimizer_state_but_not_the_best_model(tiny_bert, sentiment_files):
    """train.save_only_model: whole checkpoints without optimizer, scheduler or RNG state, training and the best
    model unchanged; resuming such a run is refused in one line rather than resumed with a fresh optimizer."""
    from safetensors.torch import load_file

    from workbench.errors import ModelLoadError
    from workbench.runs import RunDir, checkpoint_problem

    options = {"max_epochs": 2, "lr": 2e-3, "eval_every": 4, "keep_top_k": 10}
    full = Trainer(run_name="full", **options).fit(*make(tiny_bert, sentiment_files))
    only = Trainer(run_name="only", save_only_model=True, **options).fit(*make(tiny_bert, sentiment_files))
    state = {"optimizer.pt", "scheduler.pt", "rng_state.pth"}
    for result, kept in ((full, state), (only, set())):
        folders = RunDir(result.run_dir).checkpoint_folders()
        assert [f.name for f in folders] == ["checkpoint-16", "checkpoint-12", "checkpoint-8", "checkpoint-4"]
        for folder in folders:
            names = {p.name for p in folder.iterdir()}
            assert names & state == kept and "model.safetensors" in names and checkpoint_problem(folder) is None
    assert only.metrics["validation"] == full.metrics["validation"]  # the same training, fewer bytes
    assert Path(only.metrics["best_checkpoint"]).name == Path(full.metrics["best_checkpoint"]).name
    best_only, best_full = (load_file(str(r.run_dir / "best" / "model.safetensors")) for r in (only, full))
    assert all(torch.equal(best_only[name], best_full[name]) for name in best_full)
    with pytest.raises(ModelLoadError, match=r"checkpoint-16: it holds the model only \(train.save_only_model") as err:
        Trainer(run_name="only", **options).fit(*make(tiny_bert, sentiment_files), resume=True)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("optimizer, schedule", [("adafactor", "cosine"), ("lamb", "one_cycle"), ("adamw", "constant")])
def test_optimizers_and_schedules(tiny_bert, sentiment_files, optimizer, schedule):
    model, dm = make(tiny_bert, sentiment_files)
    result = Trainer(
        max_epochs=1, lr=1e-3, optimizer=optimizer, schedule=schedule, warmup=0.25, log_every=1, grad_accum=2
    ).fit(model, dm)
    logs = [json.loads(line) for line in (result.run_dir / "log.jsonl").read_text().splitlines()]
    lrs = [r["learning_rate"] for r in logs if "learning_rate" in r]
    losses = [r["loss"] for r in logs if "loss" in r]
    assert result.metrics["train"]["optimizer_steps"] == 4  # 8 batches, 2 accumulated per step
    assert all(math.isfinite(x) for x in losses)
    assert max(lrs) <= 1e-3 + 1e-12 and lrs[0] < max(lrs)  # warmup ramps up
    if schedule == "constant":
        assert lrs[-1] == pytest.approx(1e-3)
    else:
        assert lrs[-1] < max(lrs)


def test_focal_loss_with_balanced_class_weights_is_the_loss_trained_on(tiny_bert, tmp_path):
    """The first step's logged loss equals focal loss with label smoothing and inverse-frequency weights
    computed by hand from the data. One text for every row, dropout off and the whole set in one batch
    make that step's logits known before training: the untrained model's, the same for every row."""
    text, n_pos, n_neg = "a fine film", 48, 16
    frame = pd.DataFrame({"text": [text] * (n_pos + n_neg), "label": ["pos"] * n_pos + ["neg"] * n_neg})
    frame.to_csv(tmp_path / "imbalanced.csv", index=False)
    dm = TextDataModule(
        train_file=str(tmp_path / "imbalanced.csv"),
        val_file=str(tmp_path / "imbalanced.csv"),
        model_name=tiny_bert,
        batch_size=64,
    ).setup()
    assert dm.label_names == ["neg", "pos"]
    model = TextClassificationModel(tiny_bert, labels=["neg", "pos"], dropout=0.0)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    with torch.no_grad():
        model.head[-1].bias.copy_(torch.tensor([1.0, -1.0]))  # start far from 50/50, so the weights matter
    logits = torch.log(torch.as_tensor(model.predict_proba([text])[0])).repeat(n_pos + n_neg, 1)  # (64, 2)
    target = torch.tensor([1] * n_pos + [0] * n_neg)

    def focal(weight):
        ce = F.cross_entropy(logits, target, weight=weight, label_smoothing=0.1, reduction="none")
        p_true = logits.softmax(-1)[torch.arange(len(target)), target]
        return float(((1 - p_true) ** 2 * ce).mean())

    balanced = torch.tensor([64 / (2 * n_neg), 64 / (2 * n_pos)])  # n / (classes * count), order neg, pos
    expected = focal(balanced)
    # the known answer tells the alternatives apart: unweighted focal, and plain cross-entropy
    assert abs(expected - focal(None)) > 0.05 and abs(expected - F.cross_entropy(logits, target).item()) > 0.05

    result = Trainer(
        max_epochs=1, lr=1e-3, loss="focal", focal_gamma=2.0, class_weights="balanced", label_smoothing=0.1, log_every=1
    ).fit(model, dm)
    assert result.metrics["train"]["optimizer_steps"] == 1
    logs = [json.loads(line) for line in (result.run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in logs if "loss" in r and r["step"] == 1] == [pytest.approx(expected, abs=1e-4)]
    assert result.metrics["train"]["final_train_loss"] == pytest.approx(expected, abs=1e-4)


def test_monitor_must_fit_the_data(tiny_bert, sentiment_files):
    with pytest.raises(ConfigError, match="train.monitor='micro_f1x' is not a validation metric"):
        Trainer(max_epochs=1, monitor="micro_f1x").fit(*make(tiny_bert, sentiment_files))
    with pytest.raises(ConfigError, match="'subset_accuracy' is not a validation metric of single-label"):
        Trainer(max_epochs=1, monitor="subset_accuracy").fit(*make(tiny_bert, sentiment_files))


def test_resume_from_an_incomplete_checkpoint_is_an_error(tiny_bert, sentiment_files, tmp_path):
    from workbench.errors import ModelLoadError

    broken = tmp_path / "runs" / "x" / "version_0" / "checkpoints" / "checkpoint-3"
    broken.mkdir(parents=True)
    with pytest.raises(ModelLoadError, match=r"checkpoint-3: it is incomplete \(no complete.json"):
        Trainer(max_epochs=1).fit(*make(tiny_bert, sentiment_files), resume=broken)


def test_multi_label_training_tunes_thresholds(tiny_bert, multilabel_file):
    dm = TextDataModule(
        train_file=str(multilabel_file),
        model_name=tiny_bert,
        multi_label=True,
        label_column="labels",
        batch_size=8,
        val_fraction=0.25,
    )
    model = TextClassificationModel(tiny_bert, num_classes=3, multi_label=True, freeze_embeddings=False)
    result = Trainer(max_epochs=6, lr=3e-3).fit(model, dm)  # monitor defaults to micro_f1 for multi-label
    assert result.metrics["monitor"] == "micro_f1"
    val = result.metrics["validation"]
    assert val["micro_f1"] > 0.8 and "hamming_loss" in val
    saved = json.loads((result.run_dir / "best" / "workbench_model.json").read_text())
    assert saved["multi_label"] and len(saved["thresholds"]) == 3


def test_label_count_mismatch_is_explained(tiny_bert, sentiment_files):
    dm = TextDataModule(train_file=str(sentiment_files["train"]), model_name=tiny_bert)
    with pytest.raises(ConfigError, match="3 classes but the training data has 2 labels"):
        Trainer(max_epochs=1).fit(TextClassificationModel(tiny_bert, num_classes=3), dm)


def test_unknown_trainer_option():
    with pytest.raises(ConfigError, match="unknown option.*max_epoch"):
        Trainer(max_epoch=3)


def test_the_seed_reaches_transformers_trainer(tiny_bert, sentiment_files):
    # transformers.Trainer re-seeds torch at train() from its own args: they must carry train.seed
    capture = CaptureArguments()
    result = Trainer(max_epochs=1, seed=7, callbacks=[capture]).fit(*make(tiny_bert, sentiment_files))
    assert (capture.args.seed, capture.args.data_seed) == (7, 7)
    assert json.loads((result.run_dir / "env.json").read_text())["seed"] == 7


@pytest.mark.parametrize("kind, layers", [("bert", 2), ("roberta", 2), ("distilbert", 2), ("mpnet", 2), ("deberta", 2)])
def test_layer_depths_count_down_from_the_head(tiny_backbones, kind, layers):
    from workbench.trainer import layer_depths

    model = TextClassificationModel(tiny_backbones[kind], num_classes=2, freeze_embeddings=False)
    depths = layer_depths(model)
    assert {d for name, d in depths.items() if name.startswith("head.")} == {0}
    assert {d for name, d in depths.items() if "embeddings" in name} == {layers + 1}
    assert set(depths.values()) == set(range(layers + 2))  # head, every layer, embeddings
    assert sorted(depths) == sorted(n for n, p in model.named_parameters() if p.requires_grad)


@pytest.mark.parametrize("optimizer", ["adamw", "lamb"])
def test_layer_lr_decay_gives_lower_layers_lower_rates(tiny_bert, sentiment_files, optimizer):
    seen = {}

    class Capture(TrainerCallback):
        def on_train_begin(self, args, state, control, optimizer=None, model=None, **kwargs):
            names = {id(p): n for n, p in model.named_parameters()}
            seen.update({names[id(p)]: g["lr"] for g in optimizer.param_groups for p in g["params"]})

    model, dm = make(tiny_bert, sentiment_files)
    result = Trainer(
        max_epochs=1, lr=1e-3, warmup=0, layer_lr_decay=0.5, optimizer=optimizer, callbacks=[Capture()]
    ).fit(model, dm)
    assert seen["head.1.weight"] == pytest.approx(1e-3)
    assert seen["backbone.encoder.layer.1.attention.self.query.weight"] == pytest.approx(5e-4)  # top of 2 layers
    assert seen["backbone.encoder.layer.0.output.dense.bias"] == pytest.approx(2.5e-4)
    assert seen["backbone.embeddings.word_embeddings.weight"] == pytest.approx(1.25e-4)
    assert math.isfinite(result.metrics["train"]["final_train_loss"])


def test_layer_lr_decay_must_be_a_fraction():
    from workbench.config import TrainConfig

    with pytest.raises(ConfigError, match=r"train.layer_lr_decay=1.5 must be in \(0, 1\]"):
        TrainConfig(layer_lr_decay=1.5)


DISTRIBUTED_SCRIPT = """
import hashlib, json, sys
import torch.distributed as dist
from transformers import TrainerCallback
from workbench import load_config, train


def digest(model):
    return hashlib.sha256(b"".join(v.detach().cpu().numpy().tobytes() for v in model.state_dict().values())).hexdigest()


class EpochWeights(TrainerCallback):  # each process's own weights after each epoch, before any best model is loaded
    trained = []

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        self.trained.append(digest(model))


result = train(load_config(sys.argv[1]), callbacks=[EpochWeights()])
rank = dist.get_rank() if dist.is_initialized() else 0
json.dump({"world": dist.get_world_size() if dist.is_initialized() else 1, "weights": digest(result.model),
           "trained": EpochWeights.trained, "metrics": result.metrics, "run_dir": str(result.run_dir)},
          open(f"rank_{rank}.json", "w"))
"""


def test_two_processes_train_one_run_like_one_process_with_the_global_batch(tiny_bert, sentiment_files, tmp_path):
    """torchrun with 2 CPU processes (gloo): one run directory, the batches dealt between the ranks, equal weights
    on both after every epoch (each process's own, not the best model read back from disk), and the metrics of a
    single process whose batch is the two ranks' together."""
    import socket
    import subprocess
    import sys

    from workbench import load_config

    def config(name: str, batch_size: int):
        path = tmp_path / f"{name}.json"
        path.write_text(
            json.dumps(
                {
                    "data": {
                        "train_file": str(sentiment_files["train"]),
                        "val_file": str(sentiment_files["val"]),
                        "batch_size": batch_size,
                    },
                    "model": {"backbone": tiny_bert, "freeze_embeddings": False},
                    "train": {"epochs": 2, "lr": 3e-3},
                    "run": {"name": name, "root": str(tmp_path / "runs")},
                }
            )
        )
        return path

    (tmp_path / "script.py").write_text(DISTRIBUTED_SCRIPT)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(port),
            "script.py",
            str(config("pair", 8)),
        ],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=600,
    )
    ranks = [json.loads((tmp_path / f"rank_{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2] and ranks[0]["weights"] == ranks[1]["weights"]
    # the weights each process trained agree after every epoch (gradients were averaged), and they changed
    assert ranks[0]["trained"] == ranks[1]["trained"] and len(set(ranks[0]["trained"])) == 2
    assert sorted(p.name for p in (tmp_path / "runs" / "pair").iterdir()) == ["version_0"]  # rank 1 wrote no run
    metrics = ranks[0]["metrics"]
    assert metrics["processes"] == 2 and metrics["validation"]["n"] == 16  # each validation example once
    dm = TextDataModule(config=load_config(config("pair", 8)).data, model_name=tiny_bert).setup()
    batches = len(dm.train_batch_sampler(shards=2))
    assert batches % 2 == 0 and metrics["train"]["optimizer_steps"] == 2 * batches // 2  # 2 epochs, 2 ranks
    log = [
        json.loads(line) for line in (tmp_path / "runs" / "pair" / "version_0" / "log.jsonl").read_text().splitlines()
    ]
    assert len({(r["step"], tuple(sorted(r))) for r in log}) == len(log)  # one writer: no line twice
    assert [r["eval_n"] for r in log if "eval_n" in r] == [16, 16]  # each epoch's validation: every example once
    subprocess.run(
        [sys.executable, "script.py", str(config("single", 16))],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=600,
    )
    single = json.loads((tmp_path / "rank_0.json").read_text())["metrics"]
    assert single["train"]["optimizer_steps"] == metrics["train"]["optimizer_steps"]
    assert abs(single["validation"]["accuracy"] - metrics["validation"]["accuracy"]) <= 0.07

    def final_eval_loss(name):
        records = (tmp_path / "runs" / name / "version_0" / "log.jsonl").read_text().splitlines()
        return [json.loads(line)["eval_loss"] for line in records if "eval_loss" in line][-1]

    assert final_eval_loss("single") == pytest.approx(final_eval_loss("pair"), abs=0.03)


def test_a_file_read_in_pieces_trains_like_the_file_read_whole(tiny_bert, sentiment_files, monkeypatch, tmp_path):
    """data.stream_from_mb=0 trains from the memory-mapped store: the same steps, weights and metrics."""
    from safetensors.torch import load_file

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    runs = {}
    for name, threshold in (("whole", 1000.0), ("pieces", 0.0)):
        model, dm = make(tiny_bert, sentiment_files, stream_from_mb=threshold)
        runs[name] = Trainer(max_epochs=4, lr=2e-3, run_name=name).fit(model, dm)
    assert type(dm.train_dataset).__name__ == "StoredDataset"
    whole, pieces = runs["whole"], runs["pieces"]
    assert whole.metrics["validation"]["accuracy"] > 0.9  # it learned
    for key in ("accuracy", "macro_f1", "roc_auc"):
        assert pieces.metrics["validation"][key] == pytest.approx(whole.metrics["validation"][key], abs=1e-6), key
    assert pieces.metrics["train"]["optimizer_steps"] == whole.metrics["train"]["optimizer_steps"]
    a, b = (load_file(str(r.run_dir / "last" / "model.safetensors")) for r in (whole, pieces))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_accelerate_launch_runs_the_cli_on_two_cpu_processes(tiny_bert, sentiment_files, tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2 -m workbench train` (accelerate's multi-process launcher; on a
    CPU it starts torchrun's gloo processes) gives one run trained by both."""
    import subprocess
    import sys
    from pathlib import Path

    config = tmp_path / "run.json"
    config.write_text(
        json.dumps(
            {
                "data": {"train_file": str(sentiment_files["train"]), "val_file": str(sentiment_files["val"])},
                "model": {"backbone": tiny_bert},
                "train": {"epochs": 1},
                "run": {"name": "launched", "root": str(tmp_path / "runs")},
            }
        )
    )
    accelerate = Path(sys.executable).parent / "accelerate"
    done = subprocess.run(
        [
            str(accelerate),
            "launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--main_process_port",
            "0",
            "-m",
            "workbench",
            "train",
            "--config",
            str(config),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("run directory:") == 1  # one process reports
    runs = list((tmp_path / "runs" / "launched").iterdir())
    assert [p.name for p in runs] == ["version_0"]
    assert json.loads((runs[0] / "metrics.json").read_text())["processes"] == 2


KILL_SCRIPT = """
import os, signal, sys
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import TrainerState

import workbench.models
from workbench import load_config, train

config, point, where = sys.argv[1], sys.argv[2], sys.argv[3]


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def cut_short(path):  # the file as a crash in the middle of writing it leaves it: its first half
    path = Path(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    die()


def dying(write):
    def wrapper(obj, path, *args, **kwargs):
        write(obj, path, *args, **kwargs)
        if point in ("weights", "best", "optimizer") and where in str(path):
            cut_short(path)
    return wrapper


workbench.models.save_file = dying(workbench.models.save_file)
torch.save = dying(torch.save)
save_state = TrainerState.save_to_json


def save_to_json(self, json_path):
    save_state(self, json_path)
    if point == "state" and where in str(json_path):
        cut_short(json_path)


TrainerState.save_to_json = save_to_json


class KillAtStep(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if point == "step" and state.global_step == int(where):
            die()


train(load_config(config), callbacks=[KillAtStep()])
"""


@pytest.mark.parametrize(
    "point, where",
    [
        ("step", "7"),  # between checkpoints (6 and 9)
        ("weights", "checkpoint-9/model.safetensors"),  # in the middle of writing a checkpoint's weights
        ("optimizer", "checkpoint-6/optimizer.pt"),  # ... its optimizer state
        ("state", "checkpoint-12/trainer_state.json"),  # ... its last file
        ("best", ".best.partial/model.safetensors"),  # in the middle of writing best/ at the end
    ],
)
def test_a_run_killed_at_any_moment_resumes_to_the_same_result(
    tiny_bert, sentiment_files, tmp_path, caplog, point, where
):
    """SIGKILL (no cleanup runs) at several points of a real training process, including inside saves; the
    run then resumes with --resume and ends with the weights and metrics of a run that was never stopped."""
    import subprocess
    import sys

    from safetensors.torch import load_file

    from workbench import load_config, train
    from workbench.runs import RunDir

    def config(name):
        path = tmp_path / f"{name}.json"
        path.write_text(
            json.dumps(
                {
                    "data": {
                        "train_file": str(sentiment_files["train"]),
                        "val_file": str(sentiment_files["val"]),
                        "batch_size": 8,
                    },
                    "model": {"backbone": tiny_bert, "freeze_embeddings": False},
                    "train": {"epochs": 2, "lr": 1e-3, "eval_every": 3, "keep_top_k": 1, "log_every": 1},
                    "run": {"name": name, "root": str(tmp_path / "runs")},
                }
            )
        )
        return load_config(path), path

    straight = train(config("straight")[0])
    cut, path = config("cut")
    (tmp_path / "kill.py").write_text(KILL_SCRIPT)
    killed = subprocess.run(
        [sys.executable, "kill.py", str(path), point, where], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert killed.returncode == -9, killed.stderr[-2000:]  # SIGKILL: nothing of the process ran after it
    run = RunDir(tmp_path / "runs" / "cut" / "version_0")
    if point != "step":
        assert list((run.path).rglob(Path(where).name)), "the kill did not happen inside the save"
    assert not (run.path / RunDir.METRICS).exists() and not run.best.exists()  # nothing claims the run finished
    assert RunDir.latest(tmp_path / "runs", "cut").path == run.path  # a whole checkpoint to resume from
    resumed = train(cut, resume=True)
    assert resumed.run_dir == run.path and sorted(p.name for p in run.path.parent.iterdir()) == ["version_0"]
    if point in ("weights", "optimizer", "state"):  # the half-written checkpoint was passed over, and said so
        assert "Skipping" in caplog.text and "incomplete" in caplog.text
    a, b = (load_file(str(r / "last" / "model.safetensors")) for r in (straight.run_dir, resumed.run_dir))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    for key in ("accuracy", "macro_f1", "roc_auc"):
        assert resumed.metrics["validation"][key] == pytest.approx(straight.metrics["validation"][key], abs=1e-6)
    assert resumed.metrics["train"]["optimizer_steps"] == straight.metrics["train"]["optimizer_steps"] == 16
    assert TextClassificationModel.from_pretrained(run.path).num_labels == 2  # best/ is whole
    logged = [json.loads(line) for line in (run.path / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in logged if "loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 16  # each step logged once, after the kill too
    assert not list(run.path.glob(".best*")) and not list(run.path.rglob("*.tmp"))


def test_resume_refuses_checkpoint_files_that_are_not_plain_tensors(tiny_bert, sentiment_files, tmp_path):
    """Optimizer, scheduler and RNG states load with weights_only=True: a pickle that would run code is refused
    before training starts (and never runs), and so is a garbled file, each naming the file."""
    from workbench.errors import ModelLoadError
    from workbench.runs import RunDir, mark_complete

    first = Trainer(max_epochs=1, lr=1e-3, run_name="r").fit(*make(tiny_bert, sentiment_files))
    checkpoint = RunDir(first.run_dir).latest_checkpoint()
    marker = tmp_path / "the-pickle-ran"
    torch.save({"state": Payload(marker)}, checkpoint / "optimizer.pt")
    mark_complete(checkpoint)  # a tampered checkpoint that claims to be whole
    with pytest.raises(ModelLoadError, match=r"optimizer.pt holds more than tensors.*refused"):
        Trainer(max_epochs=2, lr=1e-3, run_name="r").fit(*make(tiny_bert, sentiment_files), resume=True)
    assert not marker.exists()
    (checkpoint / "optimizer.pt").write_bytes(b"not a torch file")
    mark_complete(checkpoint)
    with pytest.raises(ModelLoadError, match=r"optimizer.pt is corrupt or truncated"):
        Trainer(max_epochs=2, lr=1e-3, run_name="r").fit(*make(tiny_bert, sentiment_files), resume=True)


@pytest.mark.parametrize("pooling", ["mean", "max", "attention"])
def test_windows_read_the_label_word_that_head_truncation_cuts_off(tiny_bert, tmp_path, pooling):
    files = long_text_files(tmp_path)
    options = {"max_epochs": 6, "lr": 3e-3, "checkpoint_dir": None}
    head = Trainer(**options).fit(*make(tiny_bert, files, max_length=16))
    windows = Trainer(**options).fit(
        *make(tiny_bert, files, max_length=16, truncation="windows", stride=4, window_pooling=pooling, max_windows=0)
    )
    assert head.metrics["validation"]["accuracy"] <= 0.75  # the head never sees the label word
    assert windows.metrics["validation"]["accuracy"] == 1.0
    texts = pd.read_csv(files["val"])
    assert windows.model.predict(list(texts["text"])) == list(texts["label"])  # predict() windows and pools too
    fitted = windows.metrics["train"].get("window_attention")
    if pooling == "attention":  # its scorer learned on the 16 validation texts (all of several windows), once
        assert fitted["texts"] == 16 and fitted["windows"] > 32
        assert fitted["loss_attention"] < fitted["loss_mean_pooling"]
        saved = TextClassificationModel.from_pretrained(windows.run_dir)  # best/ keeps the scorer
        assert torch.equal(saved.window_attention.weight, windows.model.window_attention.weight)
        assert saved.window_attention.weight.abs().sum() > 0
    else:
        assert fitted is None and windows.model.window_attention is None


def test_resume_mid_epoch_with_windows_gives_the_same_weights(tiny_bert, tmp_path):
    from safetensors.torch import load_file

    files = long_text_files(tmp_path)
    data = {"max_length": 16, "truncation": "windows", "stride": 4, "max_windows": 2}
    options = {"max_epochs": 2, "lr": 1e-3, "eval_every": 4, "keep_top_k": 10}
    straight = Trainer(run_name="straight", **options).fit(*make(tiny_bert, files, **data))
    with pytest.raises(KeyboardInterrupt, match="resume with"):
        Trainer(run_name="cut", callbacks=[Interrupt(7)], **options).fit(*make(tiny_bert, files, **data))
    resumed = Trainer(run_name="cut", **options).fit(*make(tiny_bert, files, **data), resume=True)
    final_a = load_file(str(straight.run_dir / "last" / "model.safetensors"))
    final_b = load_file(str(resumed.run_dir / "last" / "model.safetensors"))
    for name, tensor in final_a.items():
        assert torch.allclose(tensor, final_b[name], atol=1e-6), name
