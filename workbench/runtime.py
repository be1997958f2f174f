"""Running an exported model: texts in, probabilities and labels out, with no torch on the ONNX path.

An export folder (written by :func:`workbench.export.export_model`) holds one model file, the tokenizer
(``tokenizer.json``) and ``export.json`` (labels, thresholds, temperature, text processing, the parity report).
:func:`load_export` turns it into a :class:`Predictor`, which encodes texts with the ``tokenizers`` library
and the model's own :class:`~workbench.text.TextProcessor` settings, runs length-sorted batches on the
engine, and applies the temperature and decision rule of the trained model::

    predictor = load_export("runs/sst2/version_0/exports/onnx-int8")
    predictor.predict(["a gripping film", "dull and long"])      # ['positive', 'negative']
    predictor.predict_proba(["a gripping film"])                 # (1, 2) array

An ONNX export needs only onnxruntime, tokenizers and numpy: this module imports torch only inside the
loaders of torch's own formats (TorchScript, ``torch.export``), so a service on an ONNX export never loads it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from workbench.config import ENGINES, PER_EXAMPLE_ENGINES
from workbench.errors import ModelLoadError
from workbench.metrics import labels_from_proba, pool_windows, proba_from_logits
from workbench.text import TextProcessing, TextProcessor, check_model_inputs, window_items

EXPORT_FILE = "export.json"
EXPORT_FORMAT = "workbench-export/1"  # bumped when an export folder's layout or meaning changes
TOKENIZER_FILE = "tokenizer.json"
_REQUIRED_META = ("engine", "model_format", "file", "labels", "multi_label", "thresholds", "inputs")
MODEL_FILES = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt", "pt2": "model.pt2"}

# a padded batch of int64 arrays -> logits (batch, labels), or (batch, labels + 1) with attention pooling's window
# scores (TextClassificationModel.engine_output)
Engine = Callable[[dict[str, np.ndarray]], np.ndarray]


class _TokenizerCalls:
    """The calls :class:`TextProcessor` makes on a transformers tokenizer, answered by a ``tokenizers.Tokenizer``.

    transformers' fast tokenizers are this same Rust tokenizer underneath; going to it directly keeps
    transformers (and with it torch) out of an ONNX service.
    """

    def __init__(self, tokenizer: Tokenizer, input_names: Sequence[str]):
        self.tokenizer = tokenizer
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.model_input_names = list(input_names)
        self._truncating: dict[int, Tokenizer] = {}  # max_length -> a copy that truncates (pairs), never toggled

    def _truncating_copy(self, max_length: int) -> Tokenizer:
        # a copy per length, set once: switching truncation on the shared tokenizer would race between threads
        if max_length not in self._truncating:
            copy = Tokenizer.from_str(self.tokenizer.to_str())
            copy.enable_truncation(max_length, strategy="longest_first")
            self._truncating[max_length] = copy
        return self._truncating[max_length]

    def __call__(
        self, text, pair=None, add_special_tokens: bool = True, truncation=False, max_length=None, verbose=True
    ) -> dict:
        texts = [text] if isinstance(text, str) else list(text)
        batch = texts if pair is None else list(zip(texts, [pair] if isinstance(pair, str) else pair, strict=True))
        tokenizer = self._truncating_copy(max_length) if truncation and max_length else self.tokenizer
        encodings = tokenizer.encode_batch(batch, add_special_tokens=add_special_tokens)
        ids, types = [e.ids for e in encodings], [e.type_ids for e in encodings]
        if isinstance(text, str):
            ids, types = ids[0], types[0]
        return {"input_ids": ids, "token_type_ids": types}


class Predictor:
    """A trained classifier behind any engine: the same encoding, batching and decision rule for all of them.

    Args:
        meta: the model's description (``export.json``, or :meth:`TextClassificationModel.metadata` plus
            ``inputs`` and ``pad_token_id``): labels, multi_label, thresholds, temperature, processing.
        tokenizer: the model's ``tokenizers.Tokenizer``.
        run: the engine, a padded batch of int64 arrays to logits ``(batch, labels)``.
        engine: the engine's name (a key of :data:`workbench.config.ENGINES`).
        batch_size: rows per engine call; texts are sorted by length first, so a batch pads little. An int8
            export's engine runs each row of a call alone (:func:`one_example_per_call`, from :func:`load_export`).
    """

    def __init__(self, meta: dict, tokenizer: Tokenizer, run: Engine, engine: str, batch_size: int = 32):
        self.meta, self.run, self.engine, self.batch_size = meta, run, engine, batch_size
        self.label_names = [str(label) for label in meta["labels"]]
        self.multi_label = bool(meta["multi_label"])
        self.thresholds = np.asarray(meta["thresholds"], dtype=np.float32)
        self.temperature = float(meta.get("temperature", 1.0))
        self.inputs = list(meta["inputs"])
        self.pad_token_id = int(meta.get("pad_token_id") or 0)
        processing = TextProcessing(**meta.get("processing", {}))
        self.pairs = bool(processing.text_pair_column)
        self.window_pooling = processing.window_pooling
        # attention pooling: the engine gives each window's score as a last column (model.engine_output)
        self.window_scores = processing.pools_windows_by_attention
        self.processor = TextProcessor.from_config(processing.data_config(), _TokenizerCalls(tokenizer, self.inputs))

    def check(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> None:
        """Raise a :class:`~workbench.errors.DataError` naming the first text this model cannot take."""
        check_model_inputs(texts, pairs, pair_model=self.pairs)

    def encode(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> list[dict]:
        """Token ids of each text (and its second text for a sentence-pair model), as the model was trained."""
        self.check(texts, pairs)
        return self.processor.encode(list(texts), list(pairs) if pairs is not None else None)

    def pad(self, features: Sequence[dict]) -> dict[str, np.ndarray]:
        """A batch of encoded examples as right-padded int64 arrays ``(batch, longest)`` for the engine."""
        longest = max(len(f["input_ids"]) for f in features)
        batch = {
            "input_ids": np.full((len(features), longest), self.pad_token_id, dtype=np.int64),
            "attention_mask": np.zeros((len(features), longest), dtype=np.int64),
        }
        if "token_type_ids" in self.inputs:
            batch["token_type_ids"] = np.zeros((len(features), longest), dtype=np.int64)
        for row, f in enumerate(features):
            n = len(f["input_ids"])
            batch["input_ids"][row, :n] = f["input_ids"]
            batch["attention_mask"][row, :n] = 1
            if "token_type_ids" in batch and "token_type_ids" in f:
                batch["token_type_ids"][row, :n] = f["token_type_ids"]
        return {name: batch[name] for name in self.inputs}

    def logits(self, features: Sequence[dict]) -> np.ndarray:
        """Logits ``(N, K)`` of encoded examples in their given order, run in length-sorted batches. A windowed
        text (``data.truncation=windows``) runs as its windows, whose logits are pooled as the trained model pools
        them (:func:`workbench.metrics.pool_windows`)."""
        windowed = window_items(features)
        rows = self._rows(windowed[0] if windowed is not None else features)
        logits, scores = (rows[:, :-1], rows[:, -1]) if self.window_scores else (rows, None)
        if windowed is None:
            return logits
        return pool_windows(logits, windowed[1], self.window_pooling, scores)

    def _rows(self, features: Sequence[dict]) -> np.ndarray:
        """The engine's rows for encoded examples, in their given order: logits, and a window score column for a
        model that pools windows by attention."""
        out = np.empty((len(features), len(self.label_names) + self.window_scores), dtype=np.float32)
        order = np.argsort([len(f["input_ids"]) for f in features], kind="stable")
        for start in range(0, len(order), self.batch_size):
            chosen = order[start : start + self.batch_size]
            out[chosen] = self.run(self.pad([features[i] for i in chosen]))
        return out

    def proba_from_logits(self, logits: np.ndarray) -> np.ndarray:
        """Probabilities ``(N, K)``: softmax (or one sigmoid per class) of the logits over the temperature."""
        return proba_from_logits(logits, self.temperature, multi_label=self.multi_label)

    def predict_proba(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> np.ndarray:
        """Class probabilities ``(N, K)`` of a list of texts."""
        return self.proba_from_logits(self.logits(self.encode(texts, pairs)))

    def labels_from_proba(self, proba: np.ndarray) -> list:
        """Label names from probabilities: argmax, or every class at or over its threshold (multi-label)."""
        return labels_from_proba(proba, self.label_names, multi_label=self.multi_label, thresholds=self.thresholds)

    def predict(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> list:
        """Label names, one per text (a list per text for a multi-label model)."""
        return self.labels_from_proba(self.predict_proba(texts, pairs))


# --------------------------------------------------------------------------------------------------
# Engines of the export formats


def onnx_engine(path: str | Path, threads: int | None = None, spin_wait: bool = True) -> Engine:
    """ONNX Runtime on the CPU (graph optimizations on; ``threads`` intra-op threads, default: the cores).

    ``spin_wait=False`` makes idle intra-op threads sleep rather than spin: in ``workbench serve`` on 2 cores
    that raised throughput by 10-20% with and without micro-batching (bench/README.md, "Serving").
    """
    options = ort.SessionOptions()
    if not spin_wait:  # idle threads sleep instead of spinning: a service shares its cores with the HTTP server
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph / InvalidProtobuf
        raise ModelLoadError(
            f"{path} is not a loadable ONNX model ({str(exc).splitlines()[0][:300]}). "
            "Export it again with: workbench export RUN_DIR --format onnx"
        ) from None
    names = [i.name for i in session.get_inputs()]

    def run(batch: dict[str, np.ndarray]) -> np.ndarray:
        return session.run(None, {name: batch[name] for name in names})[0]

    return run


def torch_file_engine(path: str | Path, model_format: str, threads: int | None = None) -> Engine:
    """A TorchScript or ``torch.export`` (.pt2) file on torch's CPU kernels."""
    import torch  # deferred: only torch's own formats need it (see the module docstring)

    if threads:
        torch.set_num_threads(threads)
    try:
        module = torch.jit.load(str(path)) if model_format == "torchscript" else torch.export.load(str(path)).module()
    except Exception as exc:  # a truncated zip, a file of another format, a newer torch's program
        raise ModelLoadError(
            f"{path} is not a loadable {model_format} model ({str(exc).splitlines()[0][:300]}). "
            f"Export it again with: workbench export RUN_DIR --format {model_format}"
        ) from None

    @torch.inference_mode()
    def run(batch: dict[str, np.ndarray]) -> np.ndarray:
        return module(*[torch.from_numpy(v) for v in batch.values()]).float().numpy()  # inputs in export order

    return run


def one_example_per_call(run: Engine) -> Engine:
    """``run`` on each row of a padded batch alone, cut to the row's own length: logits ``(batch, labels)``
    exactly equal to each example's alone, whatever it is batched with (:data:`workbench.config.PER_EXAMPLE_ENGINES`).
    """

    def run_each(batch: dict[str, np.ndarray]) -> np.ndarray:
        lengths = batch["attention_mask"].sum(axis=1)  # rows are right-padded (Predictor.pad)
        return np.concatenate(
            [
                run({name: values[row : row + 1, :length] for name, values in batch.items()})
                for row, length in enumerate(lengths)
            ]
        )

    return run_each


def read_export_meta(folder: str | Path) -> dict:
    """``export.json`` of an export folder, checked for this version's format; errors name the file and the fix."""
    path = Path(folder) / EXPORT_FILE
    if not path.is_file():
        raise ModelLoadError(
            f"{folder} has no {EXPORT_FILE}, so it is not an export folder. Export a run with: "
            "workbench export RUN_DIR --format onnx --out DIR"
        )
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path} is corrupt ({exc}). Export the run again.") from None
    if not isinstance(meta, dict) or meta.get("format") != EXPORT_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ModelLoadError(
            f"{path} is of format {found!r}; this workbench reads {EXPORT_FORMAT!r}. "
            "Export the run again with this version: workbench export RUN_DIR"
        )
    missing = [key for key in _REQUIRED_META if key not in meta]
    if missing:
        raise ModelLoadError(f"{path} lacks {', '.join(missing)}, so it is incomplete. Export the run again.")
    return meta


def load_export(
    folder: str | Path,
    engine: str | None = None,
    *,
    threads: int | None = None,
    batch_size: int = 32,
    spin_wait: bool = True,
) -> Predictor:
    """A :class:`Predictor` on an export folder.

    Args:
        folder: a folder written by :func:`workbench.export.export_model`.
        engine: the engine expected (an error if the folder holds another); default: the folder's.
        threads: intra-op threads of the engine (default: the engine's choice).
        batch_size: rows per engine call.
        spin_wait: let ONNX Runtime's idle threads spin (fastest alone; a service turns it off).

    Example:
        >>> load_export("exports/sst2-int8").predict(["a gripping film"])  # doctest: +SKIP
        ['positive']
    """
    folder = Path(folder)
    meta = read_export_meta(folder)
    if engine is not None and engine != meta["engine"]:
        raise ModelLoadError(
            f"{folder} holds the {meta['engine']} engine, not {engine}. Leave --engine out, or "
            f"export the run for it: workbench export RUN_DIR --engine {engine}"
        )
    model_file = folder / meta["file"]
    for needed in (model_file, folder / TOKENIZER_FILE):
        if not needed.is_file():
            raise ModelLoadError(f"{folder} lacks {needed.name}, so the export is incomplete. Export the run again.")
    if meta["model_format"] == "onnx":
        run = onnx_engine(model_file, threads, spin_wait)
    else:
        run = torch_file_engine(model_file, meta["model_format"], threads)
    if meta["engine"] in PER_EXAMPLE_ENGINES:  # their activation scales are per call: see the config's note
        run = one_example_per_call(run)
    try:
        tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
    except Exception as exc:
        raise ModelLoadError(f"{folder / TOKENIZER_FILE} is corrupt ({exc}). Export the run again.") from None
    if meta.get("engine") not in ENGINES:
        raise ModelLoadError(
            f"{folder / EXPORT_FILE} names engine {meta.get('engine')!r}, not one of "
            f"{', '.join(ENGINES)}. Export the run again with this version."
        )
    return Predictor(meta, tokenizer, run, meta["engine"], batch_size)
