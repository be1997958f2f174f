"""Training: the run layout, shortcuts, early stopping, exact resume, optimizers, schedules, multi-label."""

import json
import math

import pytest
import torch
from transformers import TrainerCallback

from workbench import TextClassificationModel, TextDataModule, Trainer
from workbench.errors import ConfigError


def make(tiny_bert, files, **data_options):
    dm = TextDataModule(train_file=str(files["train"]), val_file=str(files["val"]), model_name=tiny_bert,
                        batch_size=8, **data_options)
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
    second = Trainer(max_epochs=1, run_name="sent").fit(*make(tiny_bert, sentiment_files))
    assert second.run_dir.name == "version_1"


def test_gpu_and_precision_requests_warn_on_cpu(tiny_bert, sentiment_files):
    with pytest.warns(UserWarning) as caught:
        trainer = Trainer(max_epochs=1, gpus=1, precision=16, log_every_n_steps=50)
    messages = " ".join(str(w.message) for w in caught)
    if not torch.cuda.is_available():
        assert "A GPU was requested" in messages and "32-bit" in messages
        assert trainer.device == "cpu" and trainer.precision == "32"


def test_early_stopping_stops(tiny_bert, sentiment_files):
    model, dm = make(tiny_bert, sentiment_files)
    result = Trainer(max_epochs=20, lr=1e-9, early_stopping_patience=2, eval_every=2).fit(model, dm)
    assert result.metrics["train"]["optimizer_steps"] < 20 * 8  # stopped long before 20 epochs


class Interrupt(TrainerCallback):
    def __init__(self, at_step):
        self.at_step = at_step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at_step:
            raise KeyboardInterrupt


@pytest.mark.parametrize("interrupt_at", [9, 14])  # 8 steps per epoch: after an epoch boundary and mid-epoch
def test_interrupted_training_resumes_exactly(tiny_bert, sentiment_files, interrupt_at):
    from safetensors.torch import load_file

    options = dict(max_epochs=2, lr=1e-3, eval_every=3, keep_top_k=10, log_every=1)
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


@pytest.mark.parametrize("optimizer, schedule", [("adafactor", "cosine"), ("lamb", "one_cycle"), ("adamw", "constant")])
def test_optimizers_and_schedules(tiny_bert, sentiment_files, optimizer, schedule):
    model, dm = make(tiny_bert, sentiment_files)
    result = Trainer(max_epochs=1, lr=1e-3, optimizer=optimizer, schedule=schedule, warmup=0.25, log_every=1,
                     grad_accum=2).fit(model, dm)
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


def test_losses_and_class_weights_in_training(tiny_bert, sentiment_files):
    model, dm = make(tiny_bert, sentiment_files)
    result = Trainer(max_epochs=1, loss="focal", class_weights="balanced", label_smoothing=0.1).fit(model, dm)
    reloaded = TextClassificationModel.from_pretrained(result.run_dir)  # the loss is not part of the saved model
    assert reloaded.predict("a good film") in ("pos", "neg")


def test_monitor_must_fit_the_data(tiny_bert, sentiment_files):
    with pytest.raises(ConfigError, match="train.monitor='micro_f1x' is not a validation metric"):
        Trainer(max_epochs=1, monitor="micro_f1x").fit(*make(tiny_bert, sentiment_files))
    with pytest.raises(ConfigError, match="'subset_accuracy' is not a validation metric of single-label"):
        Trainer(max_epochs=1, monitor="subset_accuracy").fit(*make(tiny_bert, sentiment_files))


def test_resume_from_an_incomplete_checkpoint_is_an_error(tiny_bert, sentiment_files, tmp_path):
    from workbench.errors import ModelLoadError

    broken = tmp_path / "runs" / "x" / "version_0" / "checkpoints" / "checkpoint-3"
    broken.mkdir(parents=True)
    with pytest.raises(ModelLoadError, match="not a complete checkpoint"):
        Trainer(max_epochs=1).fit(*make(tiny_bert, sentiment_files), resume=broken)


def test_multi_label_training_tunes_thresholds(tiny_bert, multilabel_file):
    dm = TextDataModule(train_file=str(multilabel_file), model_name=tiny_bert, multi_label=True, label_column="labels",
                        batch_size=8, val_fraction=0.25)
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


def test_the_seed_reaches_transformers_trainer(tiny_bert, sentiment_files, tmp_path):
    # transformers.Trainer re-seeds torch at train() from its own args: they must carry train.seed
    model, dm = make(tiny_bert, sentiment_files)
    dm.setup()
    args = Trainer(max_epochs=1, seed=7)._arguments(tmp_path, dm)
    assert (args.seed, args.data_seed) == (7, 7)


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
    result = Trainer(max_epochs=1, lr=1e-3, warmup=0, layer_lr_decay=0.5, optimizer=optimizer,
                     callbacks=[Capture()]).fit(model, dm)
    assert seen["head.1.weight"] == pytest.approx(1e-3)
    assert seen["backbone.encoder.layer.1.attention.self.query.weight"] == pytest.approx(5e-4)  # top of 2 layers
    assert seen["backbone.encoder.layer.0.output.dense.bias"] == pytest.approx(2.5e-4)
    assert seen["backbone.embeddings.word_embeddings.weight"] == pytest.approx(1.25e-4)
    assert math.isfinite(result.metrics["train"]["final_train_loss"])


def test_layer_lr_decay_must_be_a_fraction():
    from workbench.config import TrainConfig

    with pytest.raises(ConfigError, match=r"train.layer_lr_decay=1.5 must be in \(0, 1\]"):
        TrainConfig(layer_lr_decay=1.5)
