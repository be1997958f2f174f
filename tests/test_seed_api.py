"""The API from the original design runs as written, with the real backbone on real AG News text.

Only the model name ("bert-base-uncased" cannot load offline, so "minilm"), the file paths (a 4-class
AG News subset written to data/) and the epoch count differ from the design document.
"""

import warnings

import pytest
import torch

from workbench.catalog import load_split


@pytest.fixture
def ag_news_files(tmp_path, data_folder):
    from sklearn.model_selection import train_test_split

    frame = load_split("ag_news", "test", data_folder)[["text", "label"]]
    train, rest = train_test_split(frame, train_size=400, stratify=frame["label"], random_state=0)
    val, _ = train_test_split(rest, train_size=200, stratify=rest["label"], random_state=0)
    (tmp_path / "data").mkdir()
    train.to_csv(tmp_path / "data" / "train.csv", index=False)
    val.to_csv(tmp_path / "data" / "val.csv", index=False)
    return val


@pytest.mark.slow
def test_design_document_api(ag_news_files):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # ---- the design document's code, model name and epochs replaced ----
        from workbench import TextClassificationModel, TextDataModule, TextProcessor, Trainer

        data_module = TextDataModule(
            train_file="data/train.csv",
            val_file="data/val.csv",
            text_column="text",
            label_column="label",
            model_name="minilm",
            batch_size=16,
        )
        model = TextClassificationModel(model_name="minilm", num_classes=4, dropout=0.1)
        trainer = Trainer(max_epochs=3, gpus=1, precision=16, log_every_n_steps=50)
        trainer.fit(model, data_module)
        model = TextClassificationModel.load_from_checkpoint("checkpoints/best-model.ckpt")
        model.eval()
        processor = TextProcessor(model_name="minilm")
        inputs = processor.process_text("This movie was absolutely fantastic, I enjoyed every minute of it!")
        prediction = model.predict(inputs)
        # ---------------------------------------------------------------------
    ours = ("A GPU was requested", "needs a GPU", "no bf16 support")  # the Trainer's device and precision warnings
    messages = [str(w.message) for w in caught if any(phrase in str(w.message) for phrase in ours)]
    if torch.cuda.is_available():  # the GPU at 16-bit mixed precision, as asked, without a word
        assert (trainer.device, trainer.precision) == ("cuda", "16") and messages == []
    else:  # said, then trained on the CPU in 32-bit
        assert (trainer.device, trainer.precision) == ("cpu", "32")
        assert any("A GPU was requested" in m for m in messages)
        assert any("precision=16 needs a GPU" in m for m in messages)
    assert len(prediction) == 1 and prediction[0] in {"World", "Sports", "Business", "Sci/Tech"}
    assert model.predict("The team won the championship game in overtime") == "Sports"
    predicted = model.predict(ag_news_files["text"].tolist())
    accuracy = sum(p == t for p, t in zip(predicted, ag_news_files["label"], strict=True)) / len(ag_news_files)
    assert accuracy >= 0.75  # chance is 0.25; 400 training examples are plenty for MiniLM
